//! What a web page in someone's browser can make the server do. A page on another origin can
//! POST a "simple" request (`text/plain`, form-encoded) without a CORS preflight, open a
//! WebSocket to any address, and, through DNS rebinding, reach a loopback server under a name
//! of its own. So: GraphQL bodies must be JSON (a preflighted content type), the WebSocket
//! upgrade checks `Origin`, and in open mode (no keys) the `Host` must be a loopback name.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::HttpState;

/// True when a request body's content type is one GraphQL over HTTP accepts:
/// `application/json` or `application/graphql-response+json` (parameters such as `charset`
/// allowed).
pub fn is_json_body(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/graphql-response+json")
}

/// The host part of a `Host` header or an origin's authority, without port or brackets.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// A loopback name: `localhost` (and its subdomains), `127.0.0.0/8`, `::1`.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser page at `origin` may open a WebSocket here: same origin as the `Host` it
/// asked for, a loopback page, or an origin listed in `allowed` (`*` allows any). A request
/// without `Origin` is not from a browser page and is allowed (keys still apply).
pub fn websocket_origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let same_origin = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(authority));
    same_origin || is_loopback_name(host_name(authority))
}

/// In open mode (no keys, loopback only), refuses a request whose `Host` is not a loopback
/// name: a page that rebinds its own domain to 127.0.0.1 still sends its own name.
pub async fn loopback_host_in_open_mode(
    State(state): State<HttpState>,
    request: Request,
    next: Next,
) -> Response {
    if state.app.keys.is_open() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !is_loopback_name(host_name(host)) {
            tracing::warn!(host, "refused: open mode serves loopback host names only");
            return (
                StatusCode::FORBIDDEN,
                "without API keys this server answers only to loopback host names (localhost, 127.0.0.1, [::1])\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn json_bodies_only() {
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/graphql-response+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
        ] {
            assert_eq!(
                is_json_body(&headers(&[(header::CONTENT_TYPE, value)])),
                ok,
                "{value}"
            );
        }
        assert!(!is_json_body(&HeaderMap::new()), "no content type");
    }

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "127.0.0.1",
            "::1",
            "app.localhost",
            "127.1.2.3",
        ] {
            assert!(is_loopback_name(host), "{host}");
        }
        for host in ["evil.example", "10.0.0.1", "localhost.evil.example", ""] {
            assert!(!is_loopback_name(host), "{host}");
        }
        assert_eq!(host_name("[::1]:8000"), "::1");
        assert_eq!(host_name("localhost:8000"), "localhost");
    }

    #[test]
    fn websocket_origins() {
        let allowed = vec!["https://dash.example.com".to_owned()];
        let check = |origin: Option<&str>, host: &str| {
            let mut pairs = vec![(header::HOST, host)];
            if let Some(origin) = origin {
                pairs.push((header::ORIGIN, origin));
            }
            websocket_origin_allowed(&headers(&pairs), &allowed)
        };
        assert!(check(None, "api.example.com"), "not a browser page");
        assert!(
            check(Some("https://api.example.com"), "api.example.com"),
            "same origin"
        );
        assert!(
            check(Some("http://localhost:5173"), "127.0.0.1:8000"),
            "loopback page"
        );
        assert!(
            check(Some("https://dash.example.com"), "api.example.com"),
            "allowed"
        );
        assert!(
            !check(Some("https://evil.example"), "127.0.0.1:8000"),
            "foreign page"
        );
        assert!(!check(Some("null"), "127.0.0.1:8000"), "opaque origin");
    }
}
