//! Deciding concurrent single-line reservations together, in one transaction: the levels are
//! read once, every request is decided in arrival order against the running state, then one
//! guarded `UPDATE` per level, one `INSERT` of the reservations, one of the events and one of
//! the counters. Each request keeps its own outcome (a refusal records `reservation.failed`);
//! the guard in SQL still makes overselling impossible, and a level another process changed
//! meanwhile fails the batch (the batcher, `crate::batcher`, then runs its requests one by
//! one).

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::now;
use super::reservations::{Reserve, Status, counts, created, validate};
use super::stock::{self, LevelKey};
use crate::entity::{reservation, stock_level};
use crate::error::{AppError, AppResult};
use crate::events::{self, NewEvent, types};

/// A level as read, and as it stands after the requests granted so far.
struct Running {
    read: stock_level::Model,
    now: stock_level::Model,
    granted: i32,
}

/// Decides every request against the running state of its level and writes the result.
pub async fn reserve_each(
    conn: &impl ConnectionTrait,
    inputs: &[Reserve],
) -> AppResult<Vec<AppResult<reservation::Model>>> {
    let mut levels: HashMap<LevelKey, Running> = HashMap::new();
    for input in inputs {
        let key = &input.lines[0].key;
        if !levels.contains_key(key)
            && let Some(level) = stock::find(conn, key).await?
        {
            levels.insert(
                key.clone(),
                Running {
                    read: level.clone(),
                    now: level,
                    granted: 0,
                },
            );
        }
    }
    let at = now();
    let mut outcomes = Vec::with_capacity(inputs.len());
    let mut rows = Vec::new();
    let mut events = Vec::new();
    for input in inputs {
        outcomes.push(decide(input, &mut levels, at, &mut rows, &mut events));
    }
    for running in levels.values().filter(|r| r.granted > 0) {
        write_level(conn, running).await?;
    }
    if !rows.is_empty() {
        let active = rows
            .iter()
            .cloned()
            .map(sea_orm::IntoActiveModel::into_active_model);
        reservation::Entity::insert_many(active)
            .exec_without_returning(conn)
            .await?;
    }
    events::append(conn, events).await?;
    counts::record(conn, &created(&rows)).await?;
    Ok(outcomes)
}

/// Grants or refuses one request against the running state; collects rows and events.
fn decide(
    input: &Reserve,
    levels: &mut HashMap<LevelKey, Running>,
    at: chrono::DateTime<chrono::Utc>,
    rows: &mut Vec<reservation::Model>,
    events: &mut Vec<NewEvent>,
) -> AppResult<reservation::Model> {
    let lifetime = validate(input)?;
    let line = &input.lines[0];
    let Some(running) = levels.get_mut(&line.key) else {
        return Err(AppError::not_found(format!(
            "no stock level for product {} in store {:?}",
            line.key.product_id, line.key.store_id
        )));
    };
    let available = running.now.available();
    if available < line.quantity {
        events.push(types::reservation_failed(
            &running.now,
            line.quantity,
            &input.customer_id,
        ));
        return Err(AppError::InsufficientStock {
            requested: line.quantity,
            available,
        });
    }
    let before = running.now.clone();
    running.now.reserved += line.quantity;
    running.now.version += 1;
    running.now.updated_at = at;
    running.granted += line.quantity;
    let row = reservation::Model {
        id: Uuid::now_v7(),
        batch_id: None,
        product_id: line.key.product_id,
        store_id: line.key.store_id.clone(),
        quantity: line.quantity,
        status: Status::Pending.as_str().to_owned(),
        customer_id: input.customer_id.clone(),
        reason: None,
        expires_at: at + lifetime,
        created_at: at,
        updated_at: at,
    };
    events.push(types::reservation_event(
        types::RESERVATION_CREATED,
        &row,
        &running.now,
    ));
    events.extend(types::threshold_events(&before, &running.now));
    rows.push(row.clone());
    Ok(row)
}

/// One guarded update for all the units granted on a level: refused (and the batch abandoned)
/// when anyone else changed the level since it was read.
async fn write_level(conn: &impl ConnectionTrait, running: &Running) -> AppResult<()> {
    use stock_level::Column;
    let changes = running.now.version - running.read.version;
    let updated = stock_level::Entity::update_many()
        .col_expr(
            Column::Reserved,
            Expr::col(Column::Reserved).add(running.granted),
        )
        .col_expr(Column::Version, Expr::col(Column::Version).add(changes))
        .col_expr(Column::UpdatedAt, Expr::value(running.now.updated_at))
        .filter(Column::Id.eq(running.read.id))
        .filter(Column::Version.eq(running.read.version))
        .filter(
            Expr::col(Column::Quantity)
                .sub(Expr::col(Column::Reserved))
                .gte(running.granted),
        )
        .exec(conn)
        .await?;
    if updated.rows_affected != 1 {
        return Err(AppError::Internal(
            "a batched level changed underneath; retrying alone".into(),
        ));
    }
    Ok(())
}
