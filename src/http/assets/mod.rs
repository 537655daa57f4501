//! The GraphiQL playground and the live dashboard, embedded in the binary.
//!
//! The playground is built from npm packages by `npm ci && npm run build` in `playground/` into
//! `playground/dist/`, which is committed, so building the binary needs no Node. The dashboard is
//! plain HTML, CSS and JavaScript in `playground/`. Nothing is loaded from a CDN: every file a page
//! needs is in [`ASSETS`] and served under `/playground/`.
//!
//! Each file has a strong `ETag` (a hash of its bytes): browsers revalidate (`no-cache`) and get
//! `304 Not Modified` with no body while the binary is the same, so a second visit downloads
//! nothing. Each is also compressed once per process (brotli and gzip, in the background, from
//! its first request on) and served in the encoding the client accepts.

mod encoded;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file: its path under `/playground/`, content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Path below `/playground/`, e.g. `assets/index.js`.
    pub path: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The file's bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The GraphiQL page (`GET /`, and `GET /graphql` from a browser).
static PLAYGROUND_HTML: &[u8] = include_bytes!("../../../playground/dist/index.html");

/// The dashboard page (`GET /dashboard`).
static DASHBOARD_HTML: &[u8] = include_bytes!("../../../playground/dashboard.html");

/// Every file the pages load, served as `/playground/{path}`.
pub static ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: HTML,
        body: PLAYGROUND_HTML,
    },
    Asset {
        path: "assets/index.js",
        content_type: JS,
        body: include_bytes!("../../../playground/dist/assets/index.js"),
    },
    Asset {
        path: "assets/index.css",
        content_type: CSS,
        body: include_bytes!("../../../playground/dist/assets/index.css"),
    },
    Asset {
        path: "dashboard.html",
        content_type: HTML,
        body: DASHBOARD_HTML,
    },
    Asset {
        path: "dashboard.js",
        content_type: JS,
        body: include_bytes!("../../../playground/dashboard.js"),
    },
    Asset {
        path: "dashboard.css",
        content_type: CSS,
        body: include_bytes!("../../../playground/dashboard.css"),
    },
];

/// Security headers for the pages: everything comes from this origin (GraphiQL's editor needs
/// inline styles and fonts in `data:` URLs).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     font-src 'self' data:; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'";

fn serve(request: &HeaderMap, content_type: &'static str, body: &'static [u8]) -> Response {
    let etag = encoded::etag(body);
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let encoding = encoded::choose(request, body);
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match encoding {
            Some((name, bytes)) => {
                let mut response = bytes.clone().into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
                response
            }
            None => body.into_response(),
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Names are not content-hashed: let the browser revalidate (a 304 while unchanged) so a new
    // binary's files are used.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::ETAG, HeaderValue::from_static(etag));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type == HTML {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

/// `GET /`: the GraphiQL playground.
pub async fn playground(headers: HeaderMap) -> Response {
    serve(&headers, HTML, PLAYGROUND_HTML)
}

/// `GET /dashboard`: the live inventory dashboard.
pub async fn dashboard(headers: HeaderMap) -> Response {
    serve(&headers, HTML, DASHBOARD_HTML)
}

/// `GET /playground/{*path}`: the scripts and stylesheets of both pages.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.path == path) {
        Some(asset) => serve(&headers, asset.content_type, asset.body),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::ASSETS;
    use std::path::{Path, PathBuf};

    fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read playground/dist") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                files_under(&path, out);
            } else {
                out.push(path);
            }
        }
    }

    /// A rebuilt playground with a new file must be embedded too, or the page would miss it.
    #[test]
    fn every_built_file_is_embedded() {
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("playground/dist");
        let mut files = Vec::new();
        files_under(&dist, &mut files);
        assert!(
            !files.is_empty(),
            "playground/dist is empty: run `npm ci && npm run build` in playground/"
        );
        for file in files {
            let relative = file
                .strip_prefix(&dist)
                .expect("under dist")
                .to_string_lossy()
                .replace('\\', "/");
            assert!(
                ASSETS.iter().any(|asset| asset.path == relative),
                "playground/dist/{relative} is not listed in src/http/assets.rs"
            );
        }
    }

    /// The pages load nothing from another origin.
    #[test]
    fn pages_reference_no_cdn() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".html")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8 page");
            for attribute in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
                assert!(
                    !text.contains(attribute),
                    "{} loads from another origin: {attribute}",
                    asset.path
                );
            }
        }
    }
}
