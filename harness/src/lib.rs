//! What the integration tests (`tests/api`) and the load generator (`bench`) share to drive a
//! `stockroom` server from outside: finding the address it prints, reading `/metrics`, opening
//! a GraphQL WebSocket, and holding a slow connection. Dev-only: the service does not depend on it.

pub mod seed;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket connection.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The base URL in the server's `listening on http://…` line, if `line` is that line.
pub fn listening_url(line: &str) -> Option<String> {
    let at = line.find("listening on http://")?;
    let rest = &line[at + "listening on ".len()..];
    let url = rest.split_whitespace().next().unwrap_or(rest);
    Some(url.trim_end_matches('/').to_owned())
}

/// The sum of the samples of `series` in a Prometheus text exposition: a bare name covers
/// every label set, a name with labels (`name{a="b"}`) that series only; 0 when absent.
pub fn metric_sum(text: &str, series: &str) -> f64 {
    let labelled = format!("{series}{{");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series || key.starts_with(&labelled)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A connection from 127.0.0.2 (a slow client's own address) that starts a request head and
/// never finishes it; `None` when it cannot be opened.
pub async fn slow_connection(server: std::net::SocketAddr) -> Option<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind("127.0.0.2:0".parse().ok()?).ok()?;
    let mut stream = socket.connect(server).await.ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .ok()?;
    Some(stream)
}

/// `ws://…/graphql/ws` for a server's `http://…` base URL.
pub fn ws_url(base: &str) -> String {
    format!("{}/graphql/ws", base.replacen("http://", "ws://", 1))
}

/// Opens a WebSocket to `url` (Nagle off) offering `protocol`, with a fixed socket receive
/// buffer of `receive_buffer` bytes when given (a client that stops reading then makes the
/// server wait after a few kilobytes). Returns the socket and the protocol the server chose.
pub async fn ws_connect(
    url: &str,
    protocol: Option<&'static str>,
    receive_buffer: Option<u32>,
) -> Result<(Socket, Option<String>), String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    }
    let (socket, response) = match receive_buffer {
        None => tokio_tungstenite::connect_async_with_config(request, None, true).await,
        Some(bytes) => {
            let host = url
                .trim_start_matches("ws://")
                .split('/')
                .next()
                .unwrap_or_default();
            let address = tokio::net::lookup_host(host)
                .await
                .map_err(|e| format!("{host}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host}: no address"))?;
            let tcp = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            tcp.set_recv_buffer_size(bytes).map_err(|e| e.to_string())?;
            let stream = tcp.connect(address).await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await
        }
    }
    .map_err(|e| format!("{url}: {e}"))?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((socket, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_the_banner() {
        assert_eq!(
            listening_url("listening on http://127.0.0.1:8000/ (playground)"),
            Some("http://127.0.0.1:8000".to_owned())
        );
        assert_eq!(listening_url("migrations applied"), None);
    }

    #[test]
    fn sums_series_with_and_without_labels() {
        let text = "# TYPE a counter\na 1\na_total 7\nb{stage=\"x\"} 2\nb{stage=\"y\"} 3\n";
        assert_eq!(metric_sum(text, "a"), 1.0);
        assert_eq!(metric_sum(text, "b"), 5.0);
        assert_eq!(metric_sum(text, "b{stage=\"y\"}"), 3.0);
        assert_eq!(metric_sum(text, "c"), 0.0);
    }
}
