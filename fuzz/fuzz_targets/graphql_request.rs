//! Fuzzes the whole request path in-process: arbitrary bytes as the body of `POST /graphql`
//! (with an admin key, so mutations run too) through the real router, schema, domain and a
//! SQLite database. A 5xx answer or a panic is a finding.
#![no_main]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use stockroom::config::Cli;
use tower::ServiceExt;

struct Target {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("fuzz.db").display());
        let cli = Cli::parse_from(["stockroom", "--database-url", &url, "--api-keys", "admin:fuzz-admin-key"]);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let service = runtime.block_on(stockroom::app::build(&cli.settings)).expect("service");
        Target { runtime, router: service.router, _dir: dir }
    })
}

fuzz_target!(|body: &[u8]| {
    let target = target();
    target.runtime.block_on(async {
        let request = Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", "Bearer fuzz-admin-key")
            .body(Body::from(body.to_vec()))
            .expect("request");
        let response = target.router.clone().oneshot(request).await.expect("infallible");
        assert!(response.status().as_u16() < 500, "server error {} for {:?}", response.status(), String::from_utf8_lossy(body));
    });
});
