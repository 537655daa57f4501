//! Caps on what is held open: WebSocket connections, subscriptions and distinct live
//! selections, per key and per process. A [`Permit`] holds one place and gives it back when
//! dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{FairUseLimits, refusal};
use crate::auth::KeyId;
use crate::error::AppError;

/// What a permit holds a place for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// An open WebSocket connection.
    Connection,
    /// A running subscription.
    Subscription,
    /// A distinct live selection (a cohort of shared subscriptions), held by the key that
    /// created it for as long as it lives.
    Selection,
}

impl Resource {
    fn index(self) -> usize {
        self as usize
    }

    /// (process cap, per-key cap, the flags that set them, the metric label, plural noun).
    fn caps(self, limits: &FairUseLimits) -> (usize, usize, [&'static str; 4]) {
        match self {
            Resource::Connection => (
                limits.connections.0,
                limits.connections.1,
                [
                    "--ws-max-connections",
                    "--ws-max-connections-per-key",
                    "connections",
                    "WebSocket connections",
                ],
            ),
            Resource::Subscription => (
                limits.subscriptions.0,
                limits.subscriptions.1,
                [
                    "--max-subscriptions",
                    "--max-subscriptions-per-key",
                    "subscriptions",
                    "subscriptions",
                ],
            ),
            Resource::Selection => (
                limits.selections.0,
                limits.selections.1,
                [
                    "--max-live-selections",
                    "--max-live-selections-per-key",
                    "selections",
                    "distinct subscription selections",
                ],
            ),
        }
    }
}

/// Places held, per process and per key, for each resource.
#[derive(Default)]
struct Held {
    process: [usize; 3],
    per_key: HashMap<KeyId, [usize; 3]>,
}

/// The counts behind every permit.
#[derive(Clone, Default)]
pub(super) struct Caps {
    held: Arc<Mutex<Held>>,
}

impl Caps {
    /// One more `resource` for `key`, or `THROTTLED` naming the cap.
    pub(super) fn admit(
        &self,
        limits: &FairUseLimits,
        key: KeyId,
        resource: Resource,
    ) -> Result<Permit, AppError> {
        let (process_cap, key_cap, [process_flag, key_flag, label, noun]) = resource.caps(limits);
        let index = resource.index();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if process_cap > 0 && held.process[index] >= process_cap {
            drop(held);
            return Err(refusal(
                label_of(label, "process"),
                format!("too many {noun} on this server (at most {process_cap}; {process_flag})"),
                Duration::from_secs(1),
            ));
        }
        let mine = held.per_key.entry(key).or_default();
        if key_cap > 0 && mine[index] >= key_cap {
            drop(held);
            return Err(refusal(
                label_of(label, "key"),
                format!(
                    "too many {noun} for this API key (at most {key_cap}; {key_flag}); close \
                     some first"
                ),
                Duration::from_secs(1),
            ));
        }
        mine[index] += 1;
        held.process[index] += 1;
        Ok(Permit {
            held: self.held.clone(),
            key,
            resource,
        })
    }
}

impl Caps {
    /// True when the process holds as many `resource` as its cap allows.
    pub(super) fn full(&self, limits: &FairUseLimits, resource: Resource) -> bool {
        let (process_cap, _, _) = resource.caps(limits);
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        process_cap > 0 && held.process[resource.index()] >= process_cap
    }
}

/// The metric label of a cap: `connections_per_key`, `subscriptions_per_process`, …
fn label_of(resource: &'static str, scope: &'static str) -> &'static str {
    match (resource, scope) {
        ("connections", "key") => "connections_per_key",
        ("connections", _) => "connections_per_process",
        ("subscriptions", "key") => "subscriptions_per_key",
        ("subscriptions", _) => "subscriptions_per_process",
        ("selections", "key") => "selections_per_key",
        _ => "selections_per_process",
    }
}

/// One place under a cap, given back on drop.
pub struct Permit {
    held: Arc<Mutex<Held>>,
    key: KeyId,
    resource: Resource,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permit({:?}, {:?})", self.key, self.resource)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let index = self.resource.index();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.process[index] = held.process[index].saturating_sub(1);
        if let Some(mine) = held.per_key.get_mut(&self.key) {
            mine[index] = mine[index].saturating_sub(1);
            if mine.iter().all(|&n| n == 0) {
                held.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FairUseLimits {
        FairUseLimits {
            connections: (3, 2),
            ..FairUseLimits::default()
        }
    }

    #[test]
    fn caps_per_key_then_per_process_and_gives_places_back() {
        let caps = Caps::default();
        let limits = limits();
        let a1 = caps
            .admit(&limits, KeyId(1), Resource::Connection)
            .expect("a1");
        let _a2 = caps
            .admit(&limits, KeyId(1), Resource::Connection)
            .expect("a2");
        let refused = caps.admit(&limits, KeyId(1), Resource::Connection);
        assert!(
            matches!(refused, Err(AppError::Throttled { ref message, .. }) if message.contains("per-key"))
        );
        let _b1 = caps
            .admit(&limits, KeyId(2), Resource::Connection)
            .expect("b1");
        let refused = caps.admit(&limits, KeyId(2), Resource::Connection);
        assert!(
            matches!(refused, Err(AppError::Throttled { ref message, .. }) if message.contains("on this server"))
        );
        drop(a1);
        caps.admit(&limits, KeyId(2), Resource::Connection)
            .expect("a place came back");
        // Other resources are counted apart.
        caps.admit(&limits, KeyId(1), Resource::Subscription)
            .expect("subscription");
    }
}
