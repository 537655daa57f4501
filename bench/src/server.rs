//! The system under test: a `stockroom` process the bench starts (or a URL it is given), and a
//! small GraphQL-over-HTTP client.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Admin key given to servers the bench starts.
pub const ADMIN_KEY: &str = "bench-admin-key";
/// Read key given to servers the bench starts (the abuser's, in `abuse`).
pub const READ_KEY: &str = "bench-read-key";

/// Write key given to servers the bench starts.
pub const WRITE_KEY: &str = "bench-write-key";

/// Any error of the harness, as text.
pub type BenchResult<T> = Result<T, String>;

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Path of the release binary.
    pub binary: PathBuf,
    /// SQLite file the server uses.
    pub db_path: PathBuf,
    /// A database URL to use instead of the SQLite file (PostgreSQL).
    pub database_url: Option<String>,
    /// `REDIS_URL`, if any.
    pub redis_url: Option<String>,
    /// Redis stream key.
    pub stream: Option<String>,
    /// Extra environment (e.g. SQL logging).
    pub env: Vec<(String, String)>,
    /// Keep the server's stderr lines (for counting SQL statements).
    pub capture_stderr: bool,
    /// Run the server with this open-files limit (soft and hard), through `prlimit`.
    pub open_files: Option<u64>,
}

impl Launch {
    /// A plain launch on `db_path`.
    pub fn new(binary: &Path, db_path: &Path) -> Self {
        Launch {
            binary: binary.to_path_buf(),
            db_path: db_path.to_path_buf(),
            database_url: None,
            redis_url: None,
            stream: None,
            env: Vec::new(),
            capture_stderr: false,
            open_files: None,
        }
    }
}

/// `sqlite://PATH?mode=rwc` for a file.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A running server: a child process the bench owns (killed on drop), or an external URL.
pub struct Server {
    child: Option<Child>,
    /// Base URL, `http://HOST:PORT`.
    pub base: String,
    /// Key with the admin role.
    pub key: String,
    /// Stderr lines, when captured.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// When the process was spawned.
    pub spawned_at: Instant,
}

impl Server {
    /// Starts the server and waits (at most 30 s) for its `listening on http://ADDR` line.
    pub async fn start(launch: &Launch) -> BenchResult<Server> {
        let mut command = match launch.open_files {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(&launch.binary);
                command
            }
            None => Command::new(&launch.binary),
        };
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database-url")
            .arg(
                launch
                    .database_url
                    .clone()
                    .unwrap_or_else(|| sqlite_url(&launch.db_path)),
            )
            .env(
                "STOCKROOM_API_KEYS",
                format!("admin:{ADMIN_KEY},write:{WRITE_KEY},read:{READ_KEY}"),
            )
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if launch.capture_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        if !launch.env.iter().any(|(k, _)| k == "RUST_LOG") {
            command.env("RUST_LOG", "warn");
        }
        if let Some(url) = &launch.redis_url {
            command.arg("--redis-url").arg(url);
        }
        if let Some(stream) = &launch.stream {
            command.arg("--stream").arg(stream);
        }
        for (k, v) in &launch.env {
            command.env(k, v);
        }
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", launch.binary.display()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut v) = sink.lock() {
                        v.push(line);
                    }
                }
            });
        }
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = stockroom_harness::listening_url(&line) {
                    return Some(url);
                }
            }
            None
        })
        .await
        .map_err(|_| "server did not print its address within 30 s".to_owned())?
        .ok_or("server exited before listening")?;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child: Some(child),
            base,
            key: ADMIN_KEY.to_owned(),
            stderr,
            spawned_at,
        })
    }

    /// An external server at `url` with `key`.
    pub fn external(url: &str, key: &str) -> Server {
        Server {
            child: None,
            base: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            stderr: Arc::new(Mutex::new(Vec::new())),
            spawned_at: Instant::now(),
        }
    }

    /// Stops the server (SIGKILL; the bench never needs its shutdown path).
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The process id of a server the bench started (none for an external one).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// A client for this server.
    pub fn client(&self, pool: usize) -> BenchResult<Gql> {
        Gql::new(&self.base, &self.key, pool)
    }
}

/// A GraphQL-over-HTTP client with a connection pool.
#[derive(Clone)]
pub struct Gql {
    http: reqwest::Client,
    url: String,
    auth: String,
}

impl Gql {
    /// A client for `base`/graphql with `key`, keeping up to `pool` idle connections.
    pub fn new(base: &str, key: &str, pool: usize) -> BenchResult<Gql> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool.max(1))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Gql {
            http,
            url: format!("{base}/graphql"),
            auth: format!("Bearer {key}"),
        })
    }

    /// Posts one operation; `Ok(data)` when the response has no errors.
    pub async fn run(&self, query: &str, variables: Value) -> BenchResult<Value> {
        let body = self.run_raw(query, variables).await?;
        let mut body: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if let Some(errors) = body.get("errors") {
            return Err(format!("graphql errors: {errors}"));
        }
        Ok(body.get_mut("data").map(Value::take).unwrap_or(Value::Null))
    }

    /// Posts one operation and returns the raw body (checked for HTTP success and for the
    /// absence of an `"errors"` key without a full parse, to keep the client cheap).
    pub async fn run_raw(&self, query: &str, variables: Value) -> BenchResult<Vec<u8>> {
        let response = self
            .http
            .post(&self.url)
            .header("authorization", &self.auth)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body.to_vec())
    }
}

/// True when a raw GraphQL response body reports errors.
pub fn has_errors(body: &[u8]) -> bool {
    body.windows(9).any(|w| w == b"\"errors\":")
}
