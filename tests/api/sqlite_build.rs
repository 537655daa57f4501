//! The bundled SQLite is built as `.cargo/config.toml` asks: without allocation statistics and
//! without the page cache shared by all connections, whose process-wide mutexes the pool's
//! worker threads would contend on.

use sea_orm::{ConnectionTrait, Database, Statement};

#[tokio::test]
async fn sqlite_is_built_without_process_wide_allocation_locks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    let db = Database::connect(url).await.expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT compile_options FROM pragma_compile_options",
        ))
        .await
        .expect("compile options");
    let options: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("", "compile_options").expect("option text"))
        .collect();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "memory statistics are on: {options:?}"
    );
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "connections share one page cache: {options:?}"
    );
}
