//! Token buckets of cost points, one per key: a bucket holds at most `burst` points and
//! refills at `rate` points a second; an operation is run only if the bucket can pay its
//! requested cost, and what it did not use is refunded afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::refusal;
use crate::auth::{KeyId, Principal};
use crate::error::AppError;

/// Bucket settings of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRate {
    /// Points added per second; 0: no cost limit for this role.
    pub rate: u64,
    /// Most points a bucket holds (a full bucket allows this burst).
    pub burst: u64,
}

impl RoleRate {
    /// `rate` points a second into a bucket of `burst`.
    pub const fn new(rate: u64, burst: u64) -> Self {
        RoleRate { rate, burst }
    }
}

/// What a charge or refund left: the figures of `extensions.cost.throttleStatus`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// Points in the bucket now.
    pub available: u64,
    /// The bucket's size.
    pub maximum: u64,
    /// Points added per second.
    pub restore_rate: u64,
}

struct Bucket {
    level: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: RoleRate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * rate.rate as f64).min(rate.burst as f64);
        self.updated = now;
    }
}

/// Every key's bucket (a key's bucket exists from its first charge).
#[derive(Clone, Default)]
pub(super) struct Buckets {
    buckets: Arc<Mutex<HashMap<KeyId, Bucket>>>,
}

impl Buckets {
    /// Takes `cost` points from the bucket of `principal`'s key.
    pub(super) fn charge(
        &self,
        principal: Principal,
        rate: RoleRate,
        cost: u64,
    ) -> Result<Charge, AppError> {
        if rate.rate == 0 {
            return Ok(unlimited());
        }
        if cost > rate.burst {
            return Err(refusal(
                "cost",
                format!(
                    "this operation costs {cost} points, more than a {} key's bucket holds \
                     ({}; --cost-burst-{}): ask for fewer items or fields",
                    principal.role.name(),
                    rate.burst,
                    principal.role.name()
                ),
                Duration::from_secs(60),
            ));
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = refilled(&mut buckets, principal, rate);
        let cost_points = cost as f64;
        if bucket.level < cost_points {
            let missing = cost_points - bucket.level;
            let wait = Duration::from_secs_f64(missing / rate.rate as f64);
            let available = bucket.level as u64;
            drop(buckets);
            return Err(refusal(
                "cost",
                format!(
                    "rate limited: this operation costs {cost} points and this key's bucket \
                     holds {available} (it refills {} a second; --cost-rate-{})",
                    rate.rate,
                    principal.role.name()
                ),
                wait,
            ));
        }
        bucket.level -= cost_points;
        Ok(status(bucket, rate))
    }

    /// Gives `amount` points back to the bucket of `principal`'s key.
    pub(super) fn refund(&self, principal: Principal, rate: RoleRate, amount: u64) -> Charge {
        if rate.rate == 0 {
            return unlimited();
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = refilled(&mut buckets, principal, rate);
        bucket.level = (bucket.level + amount as f64).min(rate.burst as f64);
        status(bucket, rate)
    }
}

/// `principal`'s bucket (full when new), refilled up to now.
fn refilled(
    buckets: &mut HashMap<KeyId, Bucket>,
    principal: Principal,
    rate: RoleRate,
) -> &mut Bucket {
    let now = Instant::now();
    let bucket = buckets.entry(principal.key).or_insert(Bucket {
        level: rate.burst as f64,
        updated: now,
    });
    bucket.refill(rate, now);
    bucket
}

fn status(bucket: &Bucket, rate: RoleRate) -> Charge {
    Charge {
        available: bucket.level.max(0.0) as u64,
        maximum: rate.burst,
        restore_rate: rate.rate,
    }
}

/// The status reported when a role has no cost limit.
fn unlimited() -> Charge {
    Charge {
        available: u64::MAX,
        maximum: u64::MAX,
        restore_rate: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    const READER: Principal = Principal {
        role: Role::Read,
        key: KeyId(7),
    };

    #[test]
    fn pays_until_empty_then_refuses_with_the_wait_then_refills() {
        let buckets = Buckets::default();
        let rate = RoleRate::new(1_000, 100);
        assert_eq!(
            buckets.charge(READER, rate, 60).expect("paid").available,
            40
        );
        match buckets.charge(READER, rate, 60) {
            Err(AppError::Throttled { retry_after_ms, .. }) => {
                assert!((15..=21).contains(&retry_after_ms), "{retry_after_ms}")
            }
            other => panic!("expected THROTTLED, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(30));
        buckets.charge(READER, rate, 60).expect("refilled");
    }

    #[test]
    fn refunds_what_was_not_used_up_to_the_size() {
        let buckets = Buckets::default();
        let rate = RoleRate::new(1, 100);
        buckets.charge(READER, rate, 90).expect("paid");
        assert_eq!(buckets.refund(READER, rate, 50).available, 60);
        assert_eq!(buckets.refund(READER, rate, 500).available, 100);
    }

    #[test]
    fn an_operation_larger_than_the_bucket_is_refused_outright() {
        let buckets = Buckets::default();
        let refused = buckets.charge(READER, RoleRate::new(10, 100), 101);
        assert!(matches!(refused, Err(AppError::Throttled { .. })));
    }
}
