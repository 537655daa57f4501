//! The accept loop: HTTP/1.1 connections served by hyper with a header-read timeout (which in
//! hyper also bounds a keep-alive connection's idle wait for its next request), WebSocket
//! upgrades, caps on open connections per process and per client address, and a graceful stop.
//! A connection over a cap is answered `503` and closed at once, so the process never runs out
//! of file descriptors and `accept` never fails in a loop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits on connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Most connections open at once (an upgraded WebSocket keeps its slot).
    pub max_connections: usize,
    /// Most connections open at once from one client address; 0: no per-address cap.
    pub max_per_address: usize,
    /// Longest wait for a complete request head, on a new connection or between requests.
    pub header_read_timeout: Duration,
}

/// A connection's place under the caps; freed when the connection (and any WebSocket it was
/// upgraded to: the handler keeps a clone) is gone.
pub struct ConnectionSlot {
    address: IpAddr,
    counts: Arc<Counts>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts.release(self.address);
    }
}

#[derive(Default)]
struct Counts {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Counts {
    /// Takes a slot for `address`, or says which cap refused it.
    fn take(
        self: &Arc<Self>,
        address: IpAddr,
        limits: &ConnectionLimits,
    ) -> Result<ConnectionSlot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_address) = &mut *open;
        if *total >= limits.max_connections {
            return Err("process");
        }
        let mine = per_address.entry(address).or_default();
        if limits.max_per_address > 0 && *mine >= limits.max_per_address {
            return Err("address");
        }
        *mine += 1;
        *total += 1;
        metrics::gauge!("stockroom_http_connections").set(*total as f64);
        Ok(ConnectionSlot {
            address,
            counts: self.clone(),
        })
    }

    fn release(&self, address: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_address) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_address.get_mut(&address) {
            *mine -= 1;
            if *mine == 0 {
                per_address.remove(&address);
            }
        }
        metrics::gauge!("stockroom_http_connections").set(*total as f64);
    }
}

/// The answer to a connection over a cap, written without waiting, then the socket closes.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
connection: close\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\ntoo many connections";

/// Serves `router` on `listener` until `shutdown`; then stops accepting and lets open
/// connections finish, for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let counts = Arc::new(Counts::default());
    let connections = TaskTracker::new();
    let mut accept_error_logged = None;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error, &mut accept_error_logged).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let slot = match counts.take(peer.ip(), &limits) {
            Ok(slot) => Arc::new(slot),
            Err(cap) => {
                refuse(stream, peer, cap);
                continue;
            }
        };
        // Small writes (GraphQL answers, subscription events) go out at once: no Nagle delay.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        let service = tower::service_fn(move |mut request: axum::extract::Request<_>| {
            request.extensions_mut().insert(slot.clone());
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Finish the request in flight, then close (an upgraded socket is not ours).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
}

/// Answers a connection over a cap with a 503 (best effort, never waiting) and closes it.
fn refuse(stream: TcpStream, peer: SocketAddr, cap: &'static str) {
    metrics::counter!("stockroom_http_connections_refused_total", "cap" => cap).increment(1);
    tracing::debug!(%peer, cap, "connection refused: cap reached");
    let _ = stream.try_write(OVER_CAP);
}

/// `accept` failed (e.g. out of file descriptors despite the cap): log it at most once a
/// second (`last_logged` is the loop's own), and pause briefly instead of spinning.
async fn accept_failed(error: std::io::Error, last_logged: &mut Option<Instant>) {
    metrics::counter!("stockroom_http_accept_errors_total").increment(1);
    if last_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
        tracing::error!(%error, "accept failed");
        *last_logged = Some(Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// File descriptors kept back from the connection cap: the database pool, Redis, the SQLite
/// files, logs.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft open-files limit to the hard limit and returns the connection cap it
/// allows: `requested`, but never more than the limit less [`RESERVED_DESCRIPTORS`].
pub fn connection_cap(requested: usize) -> usize {
    let limit = raise_open_files_limit();
    let allowed = limit.saturating_sub(RESERVED_DESCRIPTORS).max(16) as usize;
    let cap = requested.min(allowed);
    tracing::info!(
        open_files = limit,
        max_connections = cap,
        "open-files limit and connection cap"
    );
    cap
}

/// Raises the soft open-files limit to the hard limit; returns the soft limit now in force.
#[cfg(unix)]
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Raises the soft open-files limit to the hard limit; returns the soft limit now in force.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> u64 {
    1024
}
