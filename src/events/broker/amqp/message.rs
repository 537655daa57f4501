//! The message of one event on RabbitMQ: its JSON body, properties and headers, and the
//! reverse for the live feed.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::super::*;

/// A message body: the event as consumers read it.
#[derive(Serialize)]
struct Body<'a> {
    id: Uuid,
    cursor: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    store_id: Option<&'a str>,
    product_id: Option<Uuid>,
    payload: &'a RawValue,
    occurred_at: String,
}

/// A message body as the live feed reads it back.
#[derive(Deserialize)]
struct Received {
    id: Uuid,
    cursor: String,
    #[serde(rename = "type")]
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    store_id: Option<String>,
    product_id: Option<Uuid>,
    payload: serde_json::Value,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

/// The message of one event: its JSON body and properties (`None` when the stored payload is
/// not JSON).
pub(super) fn message(
    e: &Outgoing,
    published_at: chrono::DateTime<chrono::Utc>,
) -> Option<(Vec<u8>, BasicProperties)> {
    let payload: &RawValue = serde_json::from_str(&e.payload).ok()?;
    let cursor = entry_id(e.position);
    let body = serde_json::to_vec(&Body {
        id: e.id,
        cursor: cursor.clone(),
        event_type: &e.event_type,
        aggregate_type: &e.aggregate_type,
        aggregate_id: &e.aggregate_id,
        store_id: e.store_id.as_deref(),
        product_id: e.product_id,
        payload,
        occurred_at: e.occurred_at.to_rfc3339(),
    })
    .ok()?;
    let mut headers = FieldTable::default();
    headers.insert("position".into(), AMQPValue::LongLongInt(e.position));
    headers.insert("cursor".into(), AMQPValue::LongString(cursor.into()));
    headers.insert(
        "published_at".into(),
        AMQPValue::LongString(published_at.to_rfc3339().into()),
    );
    let properties = BasicProperties::default()
        .with_message_id(e.id.to_string().into())
        .with_type(e.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(e.occurred_at.timestamp().max(0) as u64)
        .with_headers(headers);
    Some((body, properties))
}

/// Rebuilds an event from a message written by `message`.
pub(super) fn decode(data: &[u8], properties: &BasicProperties) -> Option<Envelope> {
    let received: Received = serde_json::from_slice(data).ok()?;
    let header = |name: &str| properties.headers().as_ref()?.inner().get(name).cloned();
    let published_at = match header("published_at") {
        Some(AMQPValue::LongString(text)) => {
            chrono::DateTime::parse_from_rfc3339(&String::from_utf8_lossy(text.as_bytes()))
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
        }
        _ => None,
    };
    Some(Arc::new(event::Model {
        seq: 0,
        id: received.id,
        event_type: received.event_type,
        aggregate_type: received.aggregate_type,
        aggregate_id: received.aggregate_id,
        store_id: received.store_id,
        product_id: received.product_id,
        payload: received.payload,
        occurred_at: received.occurred_at,
        position: Some(parse_entry_id(&received.cursor)?),
        published_at: Some(published_at.unwrap_or_else(crate::clock::now)),
        attempts: 0,
        last_error: None,
        dead_at: None,
    }))
}

/// The top marker: where the latest batch ended.
#[derive(Serialize, Deserialize)]
struct TopMarker {
    position: i64,
    id: Uuid,
}

/// The top marker's body for `last`, the last event of a batch.
pub(super) fn top_marker(last: &Outgoing) -> Vec<u8> {
    let marker = TopMarker {
        position: last.position,
        id: last.id,
    };
    serde_json::to_vec(&marker).unwrap_or_default()
}

/// The place and id a top marker names (`None` for a body that is not one).
pub(super) fn read_top_marker(data: &[u8]) -> Option<(i64, Uuid)> {
    let marker: TopMarker = serde_json::from_slice(data).ok()?;
    Some((marker.position, marker.id))
}
