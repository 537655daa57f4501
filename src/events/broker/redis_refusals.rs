//! What a refused stream entry means: Redis refuses an entry ID at or below the stream's top,
//! and what is at that place tells a republish (published) from another history (conflict).

use super::redis_streams::RedisBroker;
use super::*;

impl RedisBroker {
    /// Redis refused the entries of `refused` (indices into `events`) as at or below the
    /// stream's top. One `XRANGE` over their positions says what is there: the same event (a
    /// republish after a crash: published), another event (another history: conflict), or
    /// nothing. A missing entry of an event rejected before (a redriven one) was overtaken by
    /// later events: rejected. A missing entry below the stream's first one was trimmed: it was
    /// there. Any other missing entry is a conflict (the top is above a place that is empty).
    pub(super) async fn check_refused(
        &self,
        conn: &mut ConnectionManager,
        events: &[Outgoing],
        refused: &[usize],
        deliveries: &mut [Delivery],
    ) -> Result<(), BrokerDown> {
        let (Some(&first), Some(&last)) = (refused.first(), refused.last()) else {
            return Ok(());
        };
        let range: redis::streams::StreamRangeReply = conn
            .xrange(
                &self.stream,
                entry_id(events[first].position),
                entry_id(events[last].position),
            )
            .await
            .map_err(|err| self.down(err))?;
        let found: HashMap<i64, Option<String>> = range
            .ids
            .iter()
            .filter_map(|entry| {
                let id = entry
                    .map
                    .get("id")
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
                Some((parse_entry_id(&entry.id)?, id))
            })
            .collect();
        let mut stream_start = None;
        for &index in refused {
            let e = &events[index];
            deliveries[index] = match found.get(&e.position) {
                Some(Some(id)) if *id == e.id.to_string() => Delivery::Published,
                Some(other) => Delivery::Conflict(format!(
                    "stream {:?} holds event {} at position {}, this database has event {} there",
                    self.stream,
                    other.as_deref().unwrap_or("(no id)"),
                    e.position,
                    e.id
                )),
                None if e.rejected_before => Delivery::Rejected(
                    "later events are already in the stream; it cannot be placed".into(),
                ),
                None => {
                    if stream_start.is_none() {
                        stream_start = Some(self.first_position(conn).await?);
                    }
                    match stream_start.flatten() {
                        Some(start) if start > e.position => Delivery::Published,
                        _ => Delivery::Conflict(format!(
                            "stream {:?} has no entry at position {} but its top is above it",
                            self.stream, e.position
                        )),
                    }
                }
            };
        }
        Ok(())
    }

    /// The position of the stream's first entry.
    async fn first_position(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<Option<i64>, BrokerDown> {
        let first: redis::streams::StreamRangeReply = conn
            .xrange_count(&self.stream, "-", "+", 1)
            .await
            .map_err(|err| self.down(err))?;
        Ok(first
            .ids
            .first()
            .and_then(|entry| parse_entry_id(&entry.id)))
    }

    /// Removes entries this call added to a stream that turned out to hold another history, so
    /// that nothing of this database stays in it.
    pub(super) async fn withdraw(
        &self,
        conn: &mut ConnectionManager,
        events: &[Outgoing],
        added: &[usize],
    ) -> Result<(), BrokerDown> {
        if added.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = added
            .iter()
            .map(|&i| entry_id(events[i].position))
            .collect();
        let _: i64 = conn
            .xdel(&self.stream, &ids)
            .await
            .map_err(|err| self.down(err))?;
        Ok(())
    }
}
