//! The in-process broker, for a single instance: a bounded ring of recent events and a wake-up
//! channel.

use super::*;

/// The in-process broker: a bounded ring of recent events plus a wake-up channel.
pub struct MemoryBroker {
    top: AtomicI64,
    recent: tokio::sync::RwLock<std::collections::VecDeque<Envelope>>,
    wake: broadcast::Sender<()>,
    capacity: usize,
}

impl MemoryBroker {
    /// A broker that keeps the newest `capacity` events for readers.
    pub fn new(capacity: usize) -> Self {
        let (wake, _) = broadcast::channel(16);
        MemoryBroker {
            top: AtomicI64::new(0),
            recent: tokio::sync::RwLock::new(std::collections::VecDeque::with_capacity(capacity)),
            wake,
            capacity: capacity.max(1),
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
            let mut recent = self.recent.write().await;
            let mut deliveries = Vec::with_capacity(events.len());
            for e in events {
                if e.position <= self.top.load(Ordering::Acquire) {
                    deliveries.push(Delivery::Published);
                    continue;
                }
                let envelope = match e.to_envelope(published_at) {
                    Ok(envelope) => envelope,
                    Err(error) => {
                        deliveries.push(Delivery::Rejected(format!("payload: {error}")));
                        break;
                    }
                };
                if recent.len() == self.capacity {
                    recent.pop_front();
                }
                recent.push_back(envelope);
                self.top.store(e.position, Ordering::Release);
                deliveries.push(Delivery::Published);
            }
            drop(recent);
            let _ = self.wake.send(());
            Ok(deliveries)
        })
    }

    fn read_after(
        &self,
        after_position: i64,
        block_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, BrokerDown>> {
        Box::pin(async move {
            let mut wake = self.wake.subscribe();
            if self.top.load(Ordering::Acquire) <= after_position {
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(block_ms), wake.recv())
                        .await;
            }
            let recent = self.recent.read().await;
            let first_new =
                recent.partition_point(|e| e.position.unwrap_or_default() <= after_position);
            Ok(recent.range(first_new..).cloned().collect())
        })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn is_up(&self) -> bool {
        true
    }
}
