//! Redis Streams: one entry per event, its ID derived from the event's position, so a
//! republish after a crash is refused as already there.

use super::*;

/// Redis Streams: `XADD key [MAXLEN ~ n] <position>-0 field value …`, read with `XREAD BLOCK`.
pub struct RedisBroker {
    client: redis::Client,
    publisher: tokio::sync::Mutex<Option<ConnectionManager>>,
    reader: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    pub(super) stream: String,
    /// `<stream>:relay-term`: the latest relay term that published to the stream.
    fence_key: String,
    max_len: usize,
    up: std::sync::atomic::AtomicBool,
    append: redis::Script,
}

/// Arguments per stream entry in the fenced append: the entry ID and nine field/value pairs.
const ENTRY_ARGUMENTS: usize = 19;

impl RedisBroker {
    /// A broker for `url` and `stream`; connects lazily so the server starts while Redis is down.
    pub fn new(url: &str, stream: String, max_len: usize) -> RedisResult<Self> {
        Ok(RedisBroker {
            client: redis::Client::open(url)?,
            publisher: tokio::sync::Mutex::new(None),
            reader: tokio::sync::Mutex::new(None),
            fence_key: format!("{stream}:relay-term"),
            stream,
            max_len,
            up: std::sync::atomic::AtomicBool::new(false),
            append: redis::Script::new(include_str!("fenced_append.lua")),
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

    pub(super) fn down(&self, error: redis::RedisError) -> BrokerDown {
        self.up.store(false, Ordering::Relaxed);
        BrokerDown(error.to_string())
    }

    /// Adds one entry's arguments (its ID and fields) to the fenced append.
    fn entry(invocation: &mut redis::ScriptInvocation<'_>, e: &Outgoing, published_at: &str) {
        invocation
            .arg(entry_id(e.position))
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
            .arg(e.occurred_at.to_rfc3339())
            .arg("published_at")
            .arg(published_at);
    }
}

/// True for Redis's refusal of an entry ID at or below the stream's top: already published.
fn is_already_published(error: &str) -> bool {
    error.contains("equal or smaller than the target stream top item")
}

impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish<'a>(
        &'a self,
        events: &'a [Outgoing],
        term: i64,
        published_at: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BrokerDown>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let mut invocation = self.append.prepare_invoke();
            invocation
                .key(&self.stream)
                .key(&self.fence_key)
                .arg(term)
                .arg(self.max_len)
                .arg(ENTRY_ARGUMENTS);
            let published_at = published_at.to_rfc3339();
            for e in events {
                Self::entry(&mut invocation, e, &published_at);
            }
            let replies: Vec<String> = match invocation.invoke_async(&mut conn).await {
                Ok(replies) => replies,
                Err(err) if err.code() == Some("FENCED") => {
                    self.up.store(true, Ordering::Relaxed);
                    let reason = err.detail().unwrap_or("fenced").to_owned();
                    return Ok(vec![Delivery::Fenced(reason); events.len()]);
                }
                Err(err) => return Err(self.down(err)),
            };
            let mut deliveries = Vec::with_capacity(replies.len());
            let (mut added, mut refused) = (Vec::new(), Vec::new());
            for (index, reply) in replies.into_iter().enumerate() {
                deliveries.push(match reply.strip_prefix('!') {
                    None => {
                        added.push(index);
                        Delivery::Published
                    }
                    Some(error) if is_already_published(error) => {
                        refused.push(index);
                        Delivery::Published
                    }
                    Some(error) => Delivery::Rejected(error.to_owned()),
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

    fn fence(&self) -> BoxFuture<'_, Result<i64, BrokerDown>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let fence: Option<i64> = conn
                .get(&self.fence_key)
                .await
                .map_err(|err| self.down(err))?;
            Ok(fence.unwrap_or(0))
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
        // Entries written before the field existed carry no time: the reading time stands in.
        published_at: Some(
            text("published_at")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map_or_else(crate::clock::now, |t| t.with_timezone(&chrono::Utc)),
        ),
        attempts: 0,
        last_error: None,
        dead_at: None,
    }))
}
