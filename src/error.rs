//! One application error type; each variant maps to an `extensions.code` of `docs/API.md`.

use sea_orm::DbErr;

/// Every error a domain function or resolver can return.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Invalid argument.
    #[error("{0}")]
    BadUserInput(String),
    /// No key, or a key nobody knows.
    #[error("a valid API key is required")]
    Unauthenticated,
    /// The key's role may not do this.
    #[error("this operation needs the {0} role")]
    Forbidden(&'static str),
    /// The thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique thing exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Not enough available stock; nothing changed.
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock {
        /// Units asked for.
        requested: i32,
        /// Units available at the time.
        available: i32,
    },
    /// `expectedVersion` was not the current version; nothing changed.
    #[error("version conflict: expected {expected}, current {current}")]
    VersionConflict {
        /// What the client expected.
        expected: i32,
        /// What the row has.
        current: i32,
    },
    /// The move is not allowed from the current state.
    #[error("{0}")]
    InvalidState(String),
    /// The caller's cost bucket cannot pay for the operation, a fair-use cap is reached, or the
    /// server sheds load; nothing changed. Try again after `retry_after_ms`.
    #[error("{message}")]
    Throttled {
        /// What was refused and which setting decides it.
        message: String,
        /// When trying again may succeed, in milliseconds.
        retry_after_ms: u64,
    },
    /// The database cannot store anything now (disk full, I/O error, read-only file or server):
    /// nothing was written, and the same request may succeed once the operator fixes the cause.
    /// Masked for clients like any database failure, but with its own code so they can retry.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(DbErr),
    /// A database failure; masked for clients.
    #[error("database error: {0}")]
    Database(DbErr),
    /// Any other unexpected failure; masked for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias used across the crate.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// The `extensions.code` for this error.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadUserInput(_) => "BAD_USER_INPUT",
            AppError::Unauthenticated => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::AlreadyExists(_) => "ALREADY_EXISTS",
            AppError::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            AppError::VersionConflict { .. } => "VERSION_CONFLICT",
            AppError::InvalidState(_) => "INVALID_STATE",
            AppError::StorageUnavailable(_) => "STORAGE_UNAVAILABLE",
            AppError::Throttled { .. } => "THROTTLED",
            AppError::Database(_) | AppError::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Shorthand for a bad-input error.
    pub fn bad_input(message: impl Into<String>) -> Self {
        AppError::BadUserInput(message.into())
    }

    /// Shorthand for a not-found error.
    pub fn not_found(message: impl Into<String>) -> Self {
        AppError::NotFound(message.into())
    }

    /// Shorthand for an invalid-state error.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        AppError::InvalidState(message.into())
    }

    fn is_internal(&self) -> bool {
        matches!(
            self,
            AppError::Database(_) | AppError::StorageUnavailable(_) | AppError::Internal(_)
        )
    }

    /// The database error behind this one, if the database refused or failed.
    pub fn database_error(&self) -> Option<&DbErr> {
        match self {
            AppError::Database(error) | AppError::StorageUnavailable(error) => Some(error),
            _ => None,
        }
    }
}

impl From<DbErr> for AppError {
    /// Storage failures get their own variant; every other database error is internal.
    fn from(error: DbErr) -> Self {
        if is_storage_failure(&error) {
            AppError::StorageUnavailable(error)
        } else {
            AppError::Database(error)
        }
    }
}

impl AppError {
    /// The message a client may see: internal errors are masked (and logged here, once).
    pub fn public_message(&self) -> String {
        if let AppError::StorageUnavailable(_) = self {
            tracing::error!(error = %self, "write refused: storage unavailable");
            return "storage unavailable: nothing was written; retry later".to_owned();
        }
        if self.is_internal() {
            tracing::error!(error = %self, "internal error");
            return "internal server error".to_owned();
        }
        self.to_string()
    }

    /// Extra `extensions` fields that help a client react (available stock, current version).
    pub fn details(&self) -> Vec<(&'static str, i32)> {
        match self {
            AppError::InsufficientStock {
                requested,
                available,
            } => {
                vec![("requested", *requested), ("available", *available)]
            }
            AppError::VersionConflict { expected, current } => {
                vec![("expectedVersion", *expected), ("currentVersion", *current)]
            }
            AppError::Throttled { retry_after_ms, .. } => {
                vec![(
                    "retryAfterMs",
                    (*retry_after_ms).min(i32::MAX as u64) as i32,
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// True when a database error is a unique-constraint violation.
pub fn is_unique_violation(error: &DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// The database's own code for an error it raised: SQLite's extended result code, PostgreSQL's
/// SQLSTATE.
fn database_code(error: &DbErr) -> Option<String> {
    use sea_orm::RuntimeErr;
    let (DbErr::Exec(RuntimeErr::SqlxError(error))
    | DbErr::Query(RuntimeErr::SqlxError(error))
    | DbErr::Conn(RuntimeErr::SqlxError(error))) = error
    else {
        return None;
    };
    match error.as_ref() {
        sea_orm::sqlx::Error::Database(error) => error.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// True when the database could not store anything: SQLite's `SQLITE_FULL` (13), `SQLITE_IOERR`
/// (10) and `SQLITE_READONLY` (8) with any extended code; PostgreSQL's `disk_full` (53100),
/// `io_error` (58030) and `read_only_sql_transaction` (25006, a standby).
pub fn is_storage_failure(error: &DbErr) -> bool {
    let Some(code) = database_code(error) else {
        return false;
    };
    if matches!(code.as_str(), "53100" | "58030" | "25006") {
        return true;
    }
    // SQLite's codes are small integers; no SQLSTATE above matches these masks.
    code.parse::<i32>()
        .is_ok_and(|extended| code.len() < 5 && matches!(extended & 0xff, 8 | 10 | 13))
}
