//! One application error type; each variant maps to an `extensions.code` of `API.md`.

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
    /// A database failure; masked for clients.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
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
        matches!(self, AppError::Database(_) | AppError::Internal(_))
    }
}

impl AppError {
    /// The message a client may see: internal errors are masked (and logged here, once).
    pub fn public_message(&self) -> String {
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
