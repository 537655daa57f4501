//! Test harness: runs the real `stockroom` binary on a random port with a SQLite file in a temp
//! dir, and talks to it over HTTP like any client.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use redis_server::RedisServer;

mod fixtures;
mod outbox;
pub mod postgres;
pub mod proxy;
pub mod rabbitmq;
pub mod redis_server;
pub mod small_disk;
pub mod ws;

pub use fixtures::*;
pub use outbox::*;

/// Keys every test server is started with.
pub const ADMIN_KEY: &str = "admin-key-0001";
/// A `write` key.
pub const WRITE_KEY: &str = "write-key-0001";
/// A `read` key.
pub const READ_KEY: &str = "read-key-00001";

/// How a test server is started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Use this database file instead of a fresh one (for restarts and shared databases).
    pub database: Option<PathBuf>,
    /// Use this database URL (e.g. PostgreSQL) instead of a SQLite file.
    pub database_url: Option<String>,
    /// Environment variables the harness would set, left unset instead (e.g. the API keys,
    /// for the open mode).
    pub unset: Vec<String>,
    /// Run the server with this open-files limit (soft and hard), through `prlimit`.
    pub open_files: Option<u64>,
}

impl Options {
    /// Adds environment variables (settings) to the server's.
    pub fn env(mut self, pairs: &[(&str, &str)]) -> Self {
        self.env
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Publishes to `redis`, with short relay backoffs.
    pub fn redis(self, redis: &RedisServer) -> Self {
        let url = redis.url();
        self.env(&[
            ("REDIS_URL", url.as_str()),
            ("STOCKROOM_RELAY_BACKOFF_BASE_MS", "20"),
            ("STOCKROOM_RELAY_BACKOFF_CAP_MS", "300"),
        ])
    }

    /// Runs on the database at `url` (PostgreSQL) instead of a SQLite file.
    pub fn postgres(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    /// Runs on this SQLite file (restarts, several servers on one database).
    pub fn sqlite_file(mut self, path: &std::path::Path) -> Self {
        self.database = Some(path.to_owned());
        self
    }
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The SQLite file.
    pub database: PathBuf,
    /// Where the server's logs go.
    pub log: PathBuf,
    /// What the server printed on stdout up to its `listening on` line.
    pub banner: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A fresh server with a fresh database.
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// A server started with `options`.
    pub fn start_with(options: Options) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = options
            .database
            .clone()
            .unwrap_or_else(|| dir.path().join("stockroom.db"));
        let log = dir.path().join("server.log");
        let mut command = match options.open_files {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_stockroom"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_stockroom")),
        };
        command
            .arg("serve")
            .env("STOCKROOM_LISTEN", "127.0.0.1:0")
            .env(
                "DATABASE_URL",
                options
                    .database_url
                    .clone()
                    .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", database.display())),
            )
            .env(
                "STOCKROOM_API_KEYS",
                format!("admin:{ADMIN_KEY},write:{WRITE_KEY},read:{READ_KEY}"),
            )
            .env("STOCKROOM_SWEEP_INTERVAL_MS", "100")
            .env("RUST_LOG", "info")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (name, value) in &options.env {
            command.env(name, value);
        }
        for name in &options.unset {
            command.env_remove(name);
        }
        let mut child = command.spawn().expect("start stockroom");
        let (url, banner) = wait_for_listening(&mut child, &log);
        Server {
            child,
            url,
            database,
            log,
            banner,
            _dir: Some(dir),
        }
    }

    /// A client with the admin key.
    pub fn admin(&self) -> Client {
        self.client(Some(ADMIN_KEY))
    }

    /// A client with `key` (or none).
    pub fn client(&self, key: Option<&str>) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
            key: key.map(str::to_owned),
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes (its sockets stay open), as in a long pause.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a paused process runs again.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for server")
    }

    /// The server's logs so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Keeps the temp dir alive past this server (for a restart on the same database).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for_listening(child: &mut Child, log: &std::path::Path) -> (String, Vec<String>) {
    let stdout = child.stdout.take().expect("stdout");
    let (found, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && let Some(url) = stockroom_harness::listening_url(&line) {
                let _ = found.send((url, std::mem::take(&mut banner)));
                sent = true;
            } else if !sent {
                banner.push(line);
            }
        }
    });
    match receive.recv_timeout(Duration::from_secs(60)) {
        Ok(found) => found,
        Err(_) => panic!(
            "server did not print its address; logs:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// A GraphQL client over HTTP.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL.
    pub url: String,
    key: Option<String>,
}

impl Client {
    /// Posts a GraphQL request; returns the whole response body.
    pub async fn request(&self, query: &str, variables: Value) -> Value {
        let body = self.request_text(query, variables).await;
        serde_json::from_str(&body).expect("JSON response")
    }

    /// Posts a GraphQL request; returns the response body as sent (key order included).
    pub async fn request_text(&self, query: &str, variables: Value) -> String {
        let response = self
            .post(json!({ "query": query, "variables": variables }))
            .await;
        assert!(
            response.status().as_u16() < 500,
            "server error {}",
            response.status()
        );
        response.text().await.expect("response body")
    }

    /// Like `request_text`, without the response's `extensions` (its cost differs between two
    /// queries that answer alike): `{"data":…}` or `{"data":…,"errors":…}` as sent.
    pub async fn result_text(&self, query: &str, variables: Value) -> String {
        let text = self.request_text(query, variables).await;
        let Some(from) = text.find(r#","extensions":{"#) else {
            return text;
        };
        // The extensions object ends where its braces balance (no braces in its strings).
        let mut depth = 0;
        let body = &text[from + r#","extensions":"#.len()..];
        let length = body
            .char_indices()
            .find_map(|(at, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(at + 1)
            })
            .expect("balanced extensions");
        let end = from + r#","extensions":"#.len() + length;
        format!("{}{}", &text[..from], &text[end..])
    }

    /// Posts `query` with an `operationName`; returns the whole response body.
    pub async fn http_post_with_operation(&self, query: &str, operation: &str) -> Value {
        let response = self
            .post(json!({ "query": query, "operationName": operation }))
            .await;
        response.json().await.expect("JSON response")
    }

    /// Posts a GraphQL request body with this client's key.
    async fn post(&self, body: Value) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/graphql", self.url)).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("request sent")
    }

    /// `data` of a request that must succeed.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.request(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// The `extensions.code` of a request that must fail.
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        let body = self.request(query, variables).await;
        let code = body["errors"][0]["extensions"]["code"].as_str();
        code.unwrap_or_else(|| panic!("expected an error with a code, got {body}"))
            .to_owned()
    }

    /// `GET /readyz`: the status code and the JSON body.
    pub async fn readyz(&self) -> (u16, Value) {
        let response = self.get("/readyz").await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("readyz JSON"))
    }

    /// Raw GET.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET")
    }
}

/// Polls `check` every 50 ms until it answers `Ok`, for at most `within`; then fails the test
/// with `what` and the last thing `check` saw.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() > deadline => {
                panic!("{what} did not happen within {within:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits (up to 20 s) until the outbox shows `expected` (a selection of `outbox`, e.g.
/// `{ "pending": 0, "dead": 0 }`).
pub async fn wait_for_outbox(admin: &Client, expected: Value) {
    let fields: Vec<&str> = expected
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let query = format!("{{ outbox {{ {} }} }}", fields.join(" "));
    eventually(Duration::from_secs(20), "the outbox state", || async {
        let outbox = admin.data(&query, json!({})).await["outbox"].clone();
        if outbox == expected {
            Ok(())
        } else {
            Err(outbox.to_string())
        }
    })
    .await
}

/// A metric from `/metrics`: the sum of the series named `series` (a name alone covers every
/// label set; a name with labels, that series), 0 when absent.
pub async fn metric(client: &Client, series: &str) -> f64 {
    let text = client
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap_or_default();
    stockroom_harness::metric_sum(&text, series)
}
