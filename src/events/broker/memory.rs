//! The in-process broker, for a single instance, and the ring of recent events it keeps (the
//! RabbitMQ broker keeps one too, filled from its own queue).

use super::*;

/// A bounded ring of recent events, in ascending positions, plus a wake-up for readers.
pub(super) struct Ring {
    top: AtomicI64,
    recent: tokio::sync::RwLock<std::collections::VecDeque<Envelope>>,
    wake: broadcast::Sender<()>,
    capacity: usize,
}

impl Ring {
    /// A ring that keeps the newest `capacity` events.
    pub(super) fn new(capacity: usize) -> Self {
        let (wake, _) = broadcast::channel(16);
        Ring {
            top: AtomicI64::new(0),
            recent: tokio::sync::RwLock::new(std::collections::VecDeque::with_capacity(capacity)),
            wake,
            capacity: capacity.max(1),
        }
    }

    /// The highest position the ring took.
    pub(super) fn top(&self) -> i64 {
        self.top.load(Ordering::Acquire)
    }

    /// Appends events above the top (a repeat or an older event is dropped), then wakes readers.
    pub(super) async fn push(&self, events: impl IntoIterator<Item = Envelope>) {
        let mut recent = self.recent.write().await;
        for envelope in events {
            let position = envelope.position.unwrap_or_default();
            if position <= self.top() {
                continue;
            }
            if recent.len() == self.capacity {
                recent.pop_front();
            }
            recent.push_back(envelope);
            self.top.store(position, Ordering::Release);
        }
        drop(recent);
        let _ = self.wake.send(());
    }

    /// Events after `after_position`, waiting up to `block_ms` when there are none yet.
    pub(super) async fn read_after(&self, after_position: i64, block_ms: u64) -> Vec<Envelope> {
        let mut wake = self.wake.subscribe();
        if self.top() <= after_position {
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(block_ms), wake.recv()).await;
        }
        let recent = self.recent.read().await;
        let first_new =
            recent.partition_point(|e| e.position.unwrap_or_default() <= after_position);
        recent.range(first_new..).cloned().collect()
    }
}

/// The in-process broker: a bounded ring of recent events plus a wake-up channel.
pub struct MemoryBroker {
    ring: Ring,
}

impl MemoryBroker {
    /// A broker that keeps the newest `capacity` events for readers.
    pub fn new(capacity: usize) -> Self {
        MemoryBroker {
            ring: Ring::new(capacity),
        }
    }
}

impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn publish<'a>(
        &'a self,
        events: &'a [Outgoing],
        _term: i64,
        published_at: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BrokerDown>> {
        Box::pin(async move {
            let mut deliveries = Vec::with_capacity(events.len());
            let mut accepted = Vec::with_capacity(events.len());
            for e in events {
                match e.to_envelope(published_at) {
                    Ok(envelope) => accepted.push(envelope),
                    Err(error) => {
                        deliveries.push(Delivery::Rejected(format!("payload: {error}")));
                        break;
                    }
                }
            }
            deliveries.splice(0..0, accepted.iter().map(|_| Delivery::Published));
            self.ring.push(accepted).await;
            Ok(deliveries)
        })
    }

    fn read_after(
        &self,
        after_position: i64,
        block_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, BrokerDown>> {
        Box::pin(async move { Ok(self.ring.read_after(after_position, block_ms).await) })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn is_up(&self) -> bool {
        true
    }
}
