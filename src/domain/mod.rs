//! Business rules, one file per aggregate. Functions take `&impl ConnectionTrait` (a connection
//! or a transaction) and know nothing of GraphQL.

pub mod batching;
pub mod idempotency;
pub mod paging;
pub mod products;
pub mod reservations;
pub mod stock;
pub mod stores;

pub use crate::clock::now;

/// Trims `value` and checks it is non-empty and at most `max` characters.
pub(crate) fn required_text(
    field: &str,
    value: &str,
    max: usize,
) -> crate::error::AppResult<String> {
    let trimmed = value.trim();
    reject_control_characters(field, trimmed)?;
    if trimmed.is_empty() {
        return Err(crate::error::AppError::bad_input(format!(
            "{field} must not be empty"
        )));
    }
    if trimmed.chars().count() > max {
        return Err(crate::error::AppError::bad_input(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Like [`required_text`] for optional fields; `None` stays `None`.
pub(crate) fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> crate::error::AppResult<Option<String>> {
    if let Some(v) = &value {
        reject_control_characters(field, v)?;
    }
    match value {
        Some(v) if v.chars().count() > max => Err(crate::error::AppError::bad_input(format!(
            "{field} must be at most {max} characters"
        ))),
        other => Ok(other),
    }
}

/// Refuses NUL and other control characters (except tab and newlines) in text fields: they have
/// no business in names and some databases cannot store NUL.
fn reject_control_characters(field: &str, value: &str) -> crate::error::AppResult<()> {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(crate::error::AppError::bad_input(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}
