//! The clock every stored timestamp comes from, at the precision every backend keeps.

use chrono::{DateTime, SubsecRound, Utc};

/// The current time at the precision every backend stores (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
