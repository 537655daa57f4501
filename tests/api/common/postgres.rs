//! A fresh PostgreSQL database per test, on the server at 127.0.0.1:5432 (trust auth).

use sea_orm::{ConnectionTrait, Database};

use super::Options;

/// The maintenance database, for creating and dropping test databases.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Drops a test database (the server must be stopped).
pub async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap_or_default();
    let admin = Database::connect(ADMIN_URL).await.expect("PostgreSQL");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop database");
}

/// Creates an empty database and returns its URL. Fails loudly when PostgreSQL is not running.
pub async fn fresh_database() -> String {
    let name = format!("stockroom_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(ADMIN_URL)
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432 (trust auth)");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// Options for a server on the database at `url`.
pub fn on_postgres(url: String) -> Options {
    Options::default().postgres(&url)
}
