//! A throwaway `redis-server` on a free port, stream length polling, and the raw pipelined XADD
//! baseline.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::baseline::EventRow;
use crate::server::BenchResult;

/// A `redis-server` the bench started (no persistence); killed on drop.
pub struct RedisServer {
    _child: Child,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

fn free_port() -> BenchResult<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl RedisServer {
    /// Starts `redis-server --port P --save '' --appendonly no` and waits for PING.
    pub async fn start(binary: &str) -> BenchResult<RedisServer> {
        let port = free_port()?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let server = RedisServer { _child: child, url };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = server.connect().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new multiplexed connection, with a response timeout long enough for a large pipelined
    /// batch on a busy machine (the client's default is 500 ms).
    pub async fn connect(&self) -> BenchResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())
    }
}

/// `XLEN key`.
pub async fn xlen(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> BenchResult<u64> {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())
}

/// `DEL key`.
pub async fn del(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> BenchResult<()> {
    redis::cmd("DEL")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The baseline: the same entries (fields and payloads as the relay writes them), pipelined
/// `XADD key MAXLEN ~ max_len <n>-0 …` in batches of `batch`, one connection, one batch in flight.
/// Returns the elapsed time.
pub async fn raw_xadd(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    events: &[EventRow],
    batch: usize,
    max_len: usize,
) -> BenchResult<Duration> {
    let start = Instant::now();
    for (chunk_index, chunk) in events.chunks(batch.max(1)).enumerate() {
        let mut pipe = redis::pipe();
        for (i, e) in chunk.iter().enumerate() {
            let position = chunk_index * batch + i + 1;
            pipe.cmd("XADD")
                .arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg(format!("{position}-0"))
                .arg("id")
                .arg(e.id.to_string())
                .arg("type")
                .arg("reservation.created")
                .arg("aggregate_type")
                .arg("reservation")
                .arg("aggregate_id")
                .arg(&e.aggregate_id)
                .arg("store_id")
                .arg(&e.store_id)
                .arg("product_id")
                .arg(e.product_id.to_string())
                .arg("payload")
                .arg(&e.payload)
                .arg("occurred_at")
                .arg(&e.occurred_at);
        }
        let _: Vec<String> = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
    }
    Ok(start.elapsed())
}
