//! Event type names and payload builders (post-change state).

use serde_json::{Value, json};

use crate::entity::{reservation, stock_level};

use super::NewEvent;

/// `initializeStock`.
pub const STOCK_CREATED: &str = "stock.created";
/// `setStock`, `adjustStock`.
pub const STOCK_UPDATED: &str = "stock.updated";
/// `transferStock`.
pub const STOCK_TRANSFERRED: &str = "stock.transferred";
/// Available stock reached zero.
pub const STOCK_DEPLETED: &str = "stock.depleted";
/// Available stock crossed down to or below the reorder point.
pub const STOCK_LOW: &str = "stock.low";
/// A reservation was made.
pub const RESERVATION_CREATED: &str = "reservation.created";
/// A reservation was confirmed (units sold).
pub const RESERVATION_CONFIRMED: &str = "reservation.confirmed";
/// A reservation was cancelled (units released).
pub const RESERVATION_CANCELLED: &str = "reservation.cancelled";
/// A reservation passed its TTL (units released).
pub const RESERVATION_EXPIRED: &str = "reservation.expired";
/// A reservation was refused for insufficient stock.
pub const RESERVATION_FAILED: &str = "reservation.failed";

/// Aggregate type of stock-level events.
pub const AGGREGATE_STOCK: &str = "stock_level";
/// Aggregate type of reservation events.
pub const AGGREGATE_RESERVATION: &str = "reservation";

/// Every event type, for validation of filters.
pub const ALL_TYPES: [&str; 10] = [
    STOCK_CREATED,
    STOCK_UPDATED,
    STOCK_TRANSFERRED,
    STOCK_DEPLETED,
    STOCK_LOW,
    RESERVATION_CREATED,
    RESERVATION_CONFIRMED,
    RESERVATION_CANCELLED,
    RESERVATION_EXPIRED,
    RESERVATION_FAILED,
];

/// The aggregate id of a stock level: `PRODUCT_ID:STORE_ID`.
pub fn stock_aggregate_id(level: &stock_level::Model) -> String {
    format!("{}:{}", level.product_id, level.store_id)
}

/// Post-change state of a stock level, embedded in every event that changes one.
pub fn level_state(level: &stock_level::Model) -> Value {
    json!({
        "product_id": level.product_id,
        "store_id": level.store_id,
        "quantity": level.quantity,
        "reserved": level.reserved,
        "available": level.available(),
        "reorder_point": level.reorder_point,
        "version": level.version,
        "updated_at": level.updated_at,
    })
}

/// An event about one stock level; `fields` are merged with the level's post-change state
/// under `levels`.
pub fn stock_event(
    event_type: &'static str,
    level: &stock_level::Model,
    fields: Value,
) -> NewEvent {
    let mut payload = fields;
    payload["levels"] = json!([level_state(level)]);
    NewEvent {
        event_type,
        aggregate_type: AGGREGATE_STOCK,
        aggregate_id: stock_aggregate_id(level),
        store_id: Some(level.store_id.clone()),
        product_id: Some(level.product_id),
        payload,
    }
}

/// `stock.depleted` and `stock.low` when a change crosses those lines.
pub fn threshold_events(before: &stock_level::Model, after: &stock_level::Model) -> Vec<NewEvent> {
    let mut events = Vec::new();
    if before.available() > 0 && after.available() == 0 {
        events.push(stock_event(
            STOCK_DEPLETED,
            after,
            json!({
                "product_id": after.product_id,
                "store_id": after.store_id,
                "last_quantity": before.available(),
            }),
        ));
    }
    if before.available() > before.reorder_point && after.is_low() {
        events.push(stock_event(
            STOCK_LOW,
            after,
            json!({
                "product_id": after.product_id,
                "store_id": after.store_id,
                "available": after.available(),
                "reorder_point": after.reorder_point,
            }),
        ));
    }
    events
}

/// A reservation lifecycle event with the stock level after the change.
pub fn reservation_event(
    event_type: &'static str,
    reservation: &reservation::Model,
    level: &stock_level::Model,
) -> NewEvent {
    NewEvent {
        event_type,
        aggregate_type: AGGREGATE_RESERVATION,
        aggregate_id: reservation.id.to_string(),
        store_id: Some(reservation.store_id.clone()),
        product_id: Some(reservation.product_id),
        payload: json!({
            "reservation_id": reservation.id,
            "batch_id": reservation.batch_id,
            "product_id": reservation.product_id,
            "store_id": reservation.store_id,
            "quantity": reservation.quantity,
            "status": reservation.status,
            "customer_id": reservation.customer_id,
            "expires_at": reservation.expires_at,
            "reason": reservation.reason,
            "levels": [level_state(level)],
        }),
    }
}

/// True for an event that changed the levels it carries; `stock.low` and `stock.depleted`
/// repeat the level of the change they come with.
pub fn changes_levels(event: &crate::entity::event::Model) -> bool {
    !matches!(event.event_type.as_str(), STOCK_LOW | STOCK_DEPLETED)
}

/// The post-change stock levels carried by an event (see [`level_state`]).
pub fn levels_in(event: &crate::entity::event::Model) -> Vec<stock_level::Model> {
    let Some(levels) = event.payload.get("levels").and_then(Value::as_array) else {
        return Vec::new();
    };
    levels.iter().filter_map(level_from_state).collect()
}

fn level_from_state(state: &Value) -> Option<stock_level::Model> {
    let int = |name: &str| {
        state
            .get(name)?
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
    };
    let updated_at = serde_json::from_value(state.get("updated_at")?.clone()).ok()?;
    Some(stock_level::Model {
        id: 0,
        product_id: state.get("product_id")?.as_str()?.parse().ok()?,
        store_id: state.get("store_id")?.as_str()?.to_owned(),
        quantity: int("quantity")?,
        reserved: int("reserved")?,
        reorder_point: int("reorder_point")?,
        version: int("version")?,
        created_at: updated_at,
        updated_at,
    })
}

/// `reservation.failed`: `requested` units refused on `level` (state at the refusal).
pub fn reservation_failed(
    level: &stock_level::Model,
    requested: i32,
    customer_id: &Option<String>,
) -> NewEvent {
    NewEvent {
        event_type: RESERVATION_FAILED,
        aggregate_type: AGGREGATE_STOCK,
        aggregate_id: stock_aggregate_id(level),
        store_id: Some(level.store_id.clone()),
        product_id: Some(level.product_id),
        payload: json!({
            "product_id": level.product_id,
            "store_id": level.store_id,
            "requested": requested,
            "available": level.available(),
            "customer_id": customer_id,
        }),
    }
}
