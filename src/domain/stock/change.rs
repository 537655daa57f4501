//! The one guarded write every stock command goes through: read the level, plan a delta,
//! `UPDATE … WHERE version = ? AND <guard>`, retry (bounded) when another writer won.

use super::*;

/// How often a stock write is retried after losing an optimistic race.
const MAX_ATTEMPTS: usize = 16;

/// A change to apply to a level: added to `quantity` and to `reserved`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delta {
    /// Added to quantity.
    pub quantity: i32,
    /// Added to reserved.
    pub reserved: i32,
}

/// A level before and after one write.
#[derive(Debug, Clone)]
pub struct Change {
    /// State read before the write.
    pub before: stock_level::Model,
    /// State written.
    pub after: stock_level::Model,
}

/// Applies `delta` to `level` if nobody changed it since it was read. False when someone did.
pub(super) async fn write_if_unchanged(
    conn: &impl ConnectionTrait,
    level: &stock_level::Model,
    delta: Delta,
    at: chrono::DateTime<chrono::Utc>,
) -> AppResult<bool> {
    let quantity_after = Expr::col(Column::Quantity).add(delta.quantity);
    let reserved_after = Expr::col(Column::Reserved).add(delta.reserved);
    let result = stock_level::Entity::update_many()
        .col_expr(Column::Quantity, quantity_after.clone())
        .col_expr(Column::Reserved, reserved_after.clone())
        .col_expr(Column::Version, Expr::col(Column::Version).add(1))
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .filter(Column::Id.eq(level.id))
        .filter(Column::Version.eq(level.version))
        .filter(reserved_after.clone().gte(0))
        .filter(quantity_after.gte(reserved_after))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Applies a change planned from the current state, retrying when another writer wins the race.
/// `plan` sees the state just read and refuses or returns the delta.
pub async fn change_level(
    conn: &impl ConnectionTrait,
    key: &LevelKey,
    expected_version: Option<i32>,
    plan: impl Fn(&stock_level::Model) -> AppResult<Delta>,
) -> AppResult<Change> {
    for _ in 0..MAX_ATTEMPTS {
        let before = require(conn, key).await?;
        if let Some(expected) = expected_version.filter(|v| *v != before.version) {
            return Err(AppError::VersionConflict {
                expected,
                current: before.version,
            });
        }
        let delta = plan(&before)?;
        let after = stock_level::Model {
            quantity: checked("quantity", before.quantity, delta.quantity)?,
            reserved: checked("reserved", before.reserved, delta.reserved)?,
            version: before.version + 1,
            updated_at: now(),
            ..before.clone()
        };
        if write_if_unchanged(conn, &before, delta, after.updated_at).await? {
            return Ok(Change { before, after });
        }
    }
    Err(AppError::Internal(format!(
        "stock level {}:{} stayed contended after {MAX_ATTEMPTS} attempts",
        key.product_id, key.store_id
    )))
}

pub(super) fn checked(field: &str, value: i32, delta: i32) -> AppResult<i32> {
    value
        .checked_add(delta)
        .ok_or_else(|| AppError::bad_input(format!("{field} would overflow")))
}

/// Plan for removing `units` from available stock.
pub fn take_available(units: i32) -> impl Fn(&stock_level::Model) -> AppResult<Delta> {
    needs_available(
        units,
        Delta {
            quantity: -units,
            reserved: 0,
        },
    )
}

/// Plan for `delta`, refused with `INSUFFICIENT_STOCK` unless `units` are available.
pub fn needs_available(
    units: i32,
    delta: Delta,
) -> impl Fn(&stock_level::Model) -> AppResult<Delta> {
    move |level| {
        if level.available() < units {
            return Err(AppError::InsufficientStock {
                requested: units,
                available: level.available(),
            });
        }
        Ok(delta)
    }
}
