//! The WebSocket clients both sides share: open, subscribe, receive and time frames.

use super::*;

/// Opens `n` connections concurrently with `open(i)`; the first failure fails them all.
pub(super) async fn open_all<F, Fut>(n: usize, open: F) -> BenchResult<Vec<Socket>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = BenchResult<Socket>> + Send + 'static,
{
    let tasks: Vec<JoinHandle<BenchResult<Socket>>> =
        (0..n).map(|i| tokio::spawn(open(i))).collect();
    let mut sockets = Vec::with_capacity(n);
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(socket)) => sockets.push(socket),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
            }
        }
    }
    match failure {
        Some(e) => Err(format!(
            "opening {n} WebSocket connections: {} failed, first: {e}",
            n - sockets.len()
        )),
        None => Ok(sockets),
    }
}

/// A WebSocket connection with Nagle off, offering `protocol` when given.
pub(super) async fn connect(url: String, protocol: Option<&'static str>) -> BenchResult<Socket> {
    let (socket, _) = stockroom_harness::ws_connect(&url, protocol, None).await?;
    Ok(socket)
}

pub(super) async fn send_text(socket: &mut Socket, text: String) -> BenchResult<()> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| format!("WebSocket send: {e}"))
}

/// A `graphql-transport-ws` connection with `key`, acknowledged, with the subscription sent.
pub(super) async fn subscribe(url: String, key: String) -> BenchResult<Socket> {
    subscribe_to(url, key, SUBSCRIPTION).await
}

/// Like [`subscribe`], to `query`.
pub(super) async fn subscribe_to(url: String, key: String, query: &str) -> BenchResult<Socket> {
    let mut socket = connect(url, Some("graphql-transport-ws")).await?;
    let init = json!({ "type": "connection_init", "payload": { "apiKey": key } });
    send_text(&mut socket, init.to_string()).await?;
    let acked = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = socket.next().await {
            match frame.map_err(|e| format!("before connection_ack: {e}"))? {
                Message::Text(text) if text.contains("\"connection_ack\"") => return Ok(()),
                Message::Text(text) if text.contains("\"ping\"") => {
                    send_text(&mut socket, r#"{"type":"pong"}"#.to_owned()).await?;
                }
                Message::Close(close) => {
                    return Err(format!("closed before connection_ack: {close:?}"));
                }
                _ => {}
            }
        }
        Err("connection ended before connection_ack".to_owned())
    })
    .await;
    acked.map_err(|_| "no connection_ack within 30 s".to_owned())??;
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
    send_text(&mut socket, subscribe.to_string()).await?;
    Ok(socket)
}

/// Reads frames until told to stop (or the connection ends), timing each event of this run
/// (position above `after`) and counting it in `count`.
pub(super) async fn receive(
    mut socket: Socket,
    after: u64,
    mut stop: watch::Receiver<bool>,
    count: Arc<AtomicU64>,
) -> Received {
    let mut seen = Received::default();
    let mut last = after;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = socket.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                seen.error = Some(e.to_string());
                break;
            }
        };
        let now = Utc::now();
        if !text.contains("\"type\":\"next\"") {
            if text.contains("\"type\":\"ping\"") {
                if let Err(e) = send_text(&mut socket, r#"{"type":"pong"}"#.to_owned()).await {
                    seen.error = Some(e);
                    break;
                }
                continue;
            }
            if text.contains("\"type\":\"error\"") || text.contains("\"type\":\"complete\"") {
                seen.error = Some(text.to_string());
                break;
            }
            continue;
        }
        let Some(position) = number_after(&text, "\"position\":") else {
            continue;
        };
        if position <= after {
            continue;
        }
        if position <= last {
            seen.repeated += 1;
            continue;
        }
        last = position;
        seen.events += 1;
        count.fetch_add(1, Ordering::Relaxed);
        seen.last_at = Some(Instant::now());
        if seen.frame_bytes == 0 {
            seen.frame_bytes = text.len();
        }
        if let Some(at) = text_after(&text, "\"occurredAt\":\"")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            let micros = (now - at.with_timezone(&Utc))
                .num_microseconds()
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX));
            seen.latencies.push(micros as u32);
        }
    }
    let _ = socket.close(None).await;
    seen
}

/// The unsigned integer right after `key`, without parsing the whole JSON.
pub(super) fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(&text[start..], |end| &text[start..start + end]);
    digits.parse().ok()
}

/// The string value right after `key` (which ends with the opening quote).
pub(super) fn text_after<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let start = text.find(key)? + key.len();
    let end = text[start..].find('"')? + start;
    Some(&text[start..end])
}
