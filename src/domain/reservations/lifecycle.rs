//! The moves out of PENDING: confirm (sells the units), cancel and expire (release them), each
//! guarded so that only a reservation still PENDING moves, with its event and its counters.

use super::*;

/// Moves a PENDING reservation to `to`, only if it is still PENDING. False when it was not.
pub(super) async fn leave_pending(
    conn: &impl ConnectionTrait,
    id: Uuid,
    to: Status,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let result = reservation::Entity::update_many()
        .col_expr(Column::Status, Expr::value(to.as_str()))
        .col_expr(Column::Reason, Expr::value(reason))
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(Status::Pending.as_str()))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

pub(super) fn refuse_move(current: &reservation::Model, to: Status, at: DateTime<Utc>) -> AppError {
    let state = match Status::parse(&current.status) {
        Some(Status::Pending) if current.expires_at <= at => "EXPIRED".to_owned(),
        _ => current.status.clone(),
    };
    AppError::invalid_state(format!(
        "reservation {} is {state}; only a PENDING reservation can become {}",
        current.id,
        to.as_str()
    ))
}

/// Ends a PENDING reservation with `to`, applying `delta` to its stock level and appending
/// `event_type`. The caller records the move in the counters (after its other writes).
pub(super) async fn finish(
    conn: &impl ConnectionTrait,
    id: Uuid,
    to: Status,
    reason: Option<String>,
    event_type: &'static str,
) -> AppResult<reservation::Model> {
    let current = require(conn, id).await?;
    let at = now();
    let overdue = to != Status::Expired && current.expires_at <= at;
    if overdue || !leave_pending(conn, id, to, reason.clone(), at).await? {
        return Err(refuse_move(&current, to, at));
    }
    let units = current.quantity;
    let delta = match to {
        Status::Confirmed => Delta {
            quantity: -units,
            reserved: -units,
        },
        _ => Delta {
            quantity: 0,
            reserved: -units,
        },
    };
    let key = LevelKey {
        product_id: current.product_id,
        store_id: current.store_id.clone(),
    };
    let Change { before, after } = stock::change_level(conn, &key, None, |_| Ok(delta)).await?;
    let done = reservation::Model {
        status: to.as_str().to_owned(),
        reason,
        updated_at: at,
        ..current
    };
    let mut events = vec![types::reservation_event(event_type, &done, &after)];
    events.extend(types::threshold_events(&before, &after));
    events::append(conn, events).await?;
    Ok(done)
}

/// The counter move of a reservation that left PENDING.
fn left_pending(done: &reservation::Model, to: Status) -> counts::Move<'_> {
    counts::Move {
        store_id: &done.store_id,
        from: Some(Status::Pending),
        to,
        quantity: done.quantity,
    }
}

/// [`finish`], then the counters.
async fn finish_counted(
    conn: &impl ConnectionTrait,
    id: Uuid,
    to: Status,
    reason: Option<String>,
    event_type: &'static str,
) -> AppResult<reservation::Model> {
    let done = finish(conn, id, to, reason, event_type).await?;
    counts::record(conn, &[left_pending(&done, to)]).await?;
    Ok(done)
}

/// PENDING → CONFIRMED: the held units are sold.
pub async fn confirm(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<reservation::Model> {
    finish_counted(
        conn,
        id,
        Status::Confirmed,
        None,
        types::RESERVATION_CONFIRMED,
    )
    .await
}

/// PENDING → CANCELLED: the held units are released.
pub async fn cancel(
    conn: &impl ConnectionTrait,
    id: Uuid,
    reason: Option<String>,
) -> AppResult<reservation::Model> {
    let reason = optional_text("reason", reason, 500)?;
    finish_counted(
        conn,
        id,
        Status::Cancelled,
        reason,
        types::RESERVATION_CANCELLED,
    )
    .await
}

/// Expires up to `limit` overdue PENDING reservations; returns how many. Safe when several
/// processes sweep at once: each release is conditional on the reservation still being PENDING.
pub async fn expire_due(conn: &impl ConnectionTrait, limit: u64) -> AppResult<usize> {
    let due: Vec<Uuid> = reservation::Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::Status.eq(Status::Pending.as_str()))
        .filter(Column::ExpiresAt.lte(now()))
        .order_by_asc(Column::ExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?;
    let mut expired = Vec::with_capacity(due.len());
    for id in due {
        match finish(
            conn,
            id,
            Status::Expired,
            Some("ttl".into()),
            types::RESERVATION_EXPIRED,
        )
        .await
        {
            Ok(done) => expired.push(done),
            Err(AppError::InvalidState(_)) => {}
            Err(error) => return Err(error),
        }
    }
    let moves: Vec<_> = expired
        .iter()
        .map(|done| left_pending(done, Status::Expired))
        .collect();
    counts::record(conn, &moves).await?;
    Ok(expired.len())
}
