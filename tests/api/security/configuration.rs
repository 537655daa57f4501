//! Configuration that must fail closed, key files, the metrics key, and secrets kept out of
//! `--help`.

use super::*;

/// Starts the binary with `args` and the keys unset; returns (exit code, stderr) once it
/// stops, or `None` if it was still running after 3 s (it started).
fn start_with_args(args: &[&str]) -> Option<(i32, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .arg("serve")
        .args(args)
        .env("STOCKROOM_LISTEN", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display()),
        )
        .env_remove("STOCKROOM_API_KEYS")
        .env_remove("STOCKROOM_API_KEYS_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stockroom");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr)
                .expect("read stderr");
            return Some((status.code().unwrap_or(-1), stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn key_configuration_fails_closed_and_names_the_line() {
    for keys in ["", " , "] {
        let (code, stderr) = start_with_args(&["--api-keys", keys]).expect("refuses to start");
        assert_ne!(code, 0);
        assert!(stderr.contains("holds no key"), "{stderr}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("key file");
        path.display().to_string()
    };
    let empty = file("empty", "# nothing here\n\n");
    let (_, stderr) = start_with_args(&["--api-keys-file", &empty]).expect("refuses");
    assert!(stderr.contains("holds no key"), "{stderr}");

    let twice = file(
        "twice",
        "admin:key-one-123\n# a comment\nread:key-one-123\n",
    );
    let (_, stderr) = start_with_args(&["--api-keys-file", &twice]).expect("refuses");
    assert!(stderr.contains("twice line 3"), "names the line: {stderr}");
    assert!(stderr.contains("another role"), "{stderr}");

    let spaced = file("spaced", "admin:key with space\n");
    let (_, stderr) = start_with_args(&["--api-keys-file", &spaced]).expect("refuses");
    assert!(stderr.contains("spaced line 1"), "{stderr}");
    assert!(stderr.contains("whitespace"), "{stderr}");

    let across = file("across", "read:admin-key-0001\n");
    let (_, stderr) = start_with_args(&[
        "--api-keys",
        "admin:admin-key-0001",
        "--api-keys-file",
        &across,
    ])
    .expect("refuses a key given two roles across flag and file");
    assert!(stderr.contains("another role"), "{stderr}");

    let commented = file(
        "commented",
        "# operations\nadmin:admin-key-0001 # the ops team\n\nread:read-key-0001\n",
    );
    assert!(
        start_with_args(&["--api-keys-file", &commented]).is_none(),
        "comments and blank lines are allowed"
    );
}

#[tokio::test]
async fn a_key_file_with_comments_authenticates_its_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys");
    std::fs::write(
        &path,
        "# ops\nadmin:file-admin-01 # the ops team\nread:file-read-001\n",
    )
    .expect("key file");
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_API_KEYS_FILE".into(), path.display().to_string())],
        unset: vec!["STOCKROOM_API_KEYS".into()],
        ..Default::default()
    });
    server
        .client(Some("file-admin-01"))
        .data(
            r#"mutation { createStore(input: {id: "s", name: "s"}) { id } }"#,
            json!({}),
        )
        .await;
    let reader = server.client(Some("file-read-001"));
    assert_eq!(
        reader
            .error_code(
                r#"mutation { createStore(input: {id: "t", name: "t"}) { id } }"#,
                json!({})
            )
            .await,
        "FORBIDDEN"
    );
    assert_eq!(
        server
            .client(Some("file-admin-01 # the ops team"))
            .error_code("{ stores { id } }", json!({}))
            .await,
        "UNAUTHENTICATED",
        "the comment is not part of the key"
    );
}

#[tokio::test]
async fn metrics_can_require_a_key_and_only_name_operations_that_exist() {
    let server = Server::start_with(Options {
        env: vec![("STOCKROOM_METRICS_KEY".into(), "scrape-key-0001".into())],
        ..Default::default()
    });
    let reader = server.client(Some(READ_KEY));
    let body = reader
        .http_post_with_operation("query Real { stores { id } }", "NotInTheDocument")
        .await;
    assert!(body["errors"].is_array(), "{body}");
    reader
        .http_post_with_operation("query Real { stores { id } }", "Real")
        .await;
    assert_eq!(metrics_text(&server, None).await.0, 401);
    assert_eq!(metrics_text(&server, Some(READ_KEY)).await.0, 401);
    assert_eq!(metrics_text(&server, Some(ADMIN_KEY)).await.0, 200);
    let (status, text) = metrics_text(&server, Some("scrape-key-0001")).await;
    assert_eq!(status, 200);
    assert!(text.contains(r#"operation="Real""#), "{text}");
    assert!(
        !text.contains("NotInTheDocument"),
        "an absent operation name became a label"
    );
}

#[test]
fn help_does_not_print_secrets_from_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .arg("--help")
        .env(
            "DATABASE_URL",
            "postgres://app:db-secret-pw@db.example/inventory",
        )
        .env("REDIS_URL", "redis://:redis-secret-pw@cache.example:6379")
        .env("STOCKROOM_METRICS_KEY", "metrics-secret")
        .output()
        .expect("stockroom --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--database-url"), "{help}");
    for secret in ["db-secret-pw", "redis-secret-pw", "metrics-secret"] {
        assert!(!help.contains(secret), "--help prints {secret}");
    }
}
