//! Redis Streams: one entry per event, its ID derived from the event's position, so a
//! republish after a crash is refused as already there.

use super::*;

/// Redis Streams: `XADD key [MAXLEN ~ n] <position>-0 field value …`, read with `XREAD BLOCK`.
pub struct RedisBroker {
    client: redis::Client,
    publisher: tokio::sync::Mutex<Option<ConnectionManager>>,
    reader: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    stream: String,
    max_len: usize,
    up: std::sync::atomic::AtomicBool,
}

impl RedisBroker {
    /// A broker for `url` and `stream`; connects lazily so the server starts while Redis is down.
    pub fn new(url: &str, stream: String, max_len: usize) -> RedisResult<Self> {
        Ok(RedisBroker {
            client: redis::Client::open(url)?,
            publisher: tokio::sync::Mutex::new(None),
            reader: tokio::sync::Mutex::new(None),
            stream,
            max_len,
            up: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, BrokerDown> {
        let mut slot = self.publisher.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(10)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| self.down(e))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn down(&self, error: redis::RedisError) -> BrokerDown {
        self.up.store(false, Ordering::Relaxed);
        BrokerDown(error.to_string())
    }

    fn xadd(&self, pipe: &mut redis::Pipeline, e: &Outgoing) {
        let cmd = pipe.cmd("XADD").arg(&self.stream);
        if self.max_len > 0 {
            cmd.arg("MAXLEN").arg("~").arg(self.max_len);
        }
        cmd.arg(entry_id(e.position))
            .arg("id")
            .arg(e.id.to_string())
            .arg("type")
            .arg(&e.event_type)
            .arg("aggregate_type")
            .arg(&e.aggregate_type)
            .arg("aggregate_id")
            .arg(&e.aggregate_id)
            .arg("store_id")
            .arg(e.store_id.clone().unwrap_or_default())
            .arg("product_id")
            .arg(e.product_id.map(|p| p.to_string()).unwrap_or_default())
            .arg("payload")
            .arg(&e.payload)
            .arg("occurred_at")
            .arg(e.occurred_at.to_rfc3339());
    }
}

impl RedisBroker {
    /// Redis refused the entries of `refused` (indices into `events`) as at or below the
    /// stream's top. One `XRANGE` over their positions says what is there: the same event (a
    /// republish after a crash: published), another event (another history: conflict), or
    /// nothing. A missing entry of an event rejected before (a redriven one) was overtaken by
    /// later events: rejected. A missing entry below the stream's first one was trimmed: it was
    /// there. Any other missing entry is a conflict (the top is above a place that is empty).
    async fn check_refused(
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
    async fn withdraw(
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

/// True for Redis's refusal of an entry ID at or below the stream's top: already published.
fn is_already_published(error: &redis::RedisError) -> bool {
    error
        .to_string()
        .contains("equal or smaller than the target stream top item")
}

fn is_connection_error(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
}

impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish<'a>(
        &'a self,
        events: &'a [Outgoing],
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BrokerDown>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for e in events {
                self.xadd(&mut pipe, e);
            }
            let replies: Vec<RedisResult<String>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.down(e))?;
            let mut deliveries = Vec::with_capacity(replies.len());
            let (mut added, mut refused) = (Vec::new(), Vec::new());
            for (index, reply) in replies.into_iter().enumerate() {
                deliveries.push(match reply {
                    Ok(_) => {
                        added.push(index);
                        Delivery::Published
                    }
                    Err(err) if is_already_published(&err) => {
                        refused.push(index);
                        Delivery::Published
                    }
                    Err(err) if is_connection_error(&err) => return Err(self.down(err)),
                    Err(err) => Delivery::Rejected(err.to_string()),
                });
            }
            self.check_refused(&mut conn, events, &refused, &mut deliveries)
                .await?;
            if let Some(conflict) = deliveries.iter().find_map(|d| match d {
                Delivery::Conflict(reason) => Some(reason.clone()),
                _ => None,
            }) {
                self.withdraw(&mut conn, events, &added).await?;
                deliveries.fill(Delivery::Conflict(conflict));
            }
            self.up.store(true, Ordering::Relaxed);
            Ok(deliveries)
        })
    }

    fn read_after(
        &self,
        after_position: i64,
        block_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, BrokerDown>> {
        Box::pin(async move {
            let mut slot = self.reader.lock().await;
            let mut conn = match slot.as_ref() {
                Some(conn) => conn.clone(),
                None => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
                        .set_response_timeout(Some(std::time::Duration::from_millis(
                            block_ms + 5_000,
                        )));
                    let conn = self
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| self.down(e))?;
                    slot.insert(conn).clone()
                }
            };
            let options = StreamReadOptions::default()
                .block(block_ms as usize)
                .count(1000);
            let reply: Option<StreamReadReply> = conn
                .xread_options(&[&self.stream], &[entry_id(after_position)], &options)
                .await
                .map_err(|e| {
                    *slot = None;
                    self.down(e)
                })?;
            self.up.store(true, Ordering::Relaxed);
            let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
            Ok(entries
                .filter_map(|entry| decode_entry(&entry.id, &entry.map))
                .collect())
        })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let Ok(mut conn) = self.connection().await else {
                return false;
            };
            let answer: RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            self.up.store(answer.is_ok(), Ordering::Relaxed);
            answer.is_ok()
        })
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn top(&self) -> BoxFuture<'_, Result<Option<(i64, Uuid)>, BrokerDown>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let last: redis::streams::StreamRangeReply = conn
                .xrevrange_count(&self.stream, "+", "-", 1)
                .await
                .map_err(|err| self.down(err))?;
            Ok(last.ids.first().and_then(|entry| {
                let position = parse_entry_id(&entry.id)?;
                let id = entry
                    .map
                    .get("id")
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                    .and_then(|id| id.parse().ok())
                    .unwrap_or(Uuid::nil());
                Some((position, id))
            }))
        })
    }

    fn destination(&self) -> String {
        format!("stream {:?}", self.stream)
    }
}

/// Rebuilds an event from a stream entry written by `RedisBroker::xadd`.
fn decode_entry(id: &str, fields: &HashMap<String, redis::Value>) -> Option<Envelope> {
    let text = |name: &str| -> Option<String> {
        fields
            .get(name)
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
    };
    let optional = |name: &str| text(name).filter(|s| !s.is_empty());
    Some(Arc::new(event::Model {
        seq: 0,
        id: text("id")?.parse().ok()?,
        event_type: text("type")?,
        aggregate_type: text("aggregate_type")?,
        aggregate_id: text("aggregate_id")?,
        store_id: optional("store_id"),
        product_id: optional("product_id").and_then(|p| p.parse().ok()),
        payload: serde_json::from_str(&text("payload")?).ok()?,
        occurred_at: chrono::DateTime::parse_from_rfc3339(&text("occurred_at")?)
            .ok()?
            .with_timezone(&chrono::Utc),
        position: Some(parse_entry_id(id)?),
        published_at: Some(chrono::Utc::now()),
        attempts: 0,
        last_error: None,
        dead_at: None,
    }))
}
