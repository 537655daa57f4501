//! How late the request runtime runs: a probe task sleeps a fixed tick and measures how much
//! later than asked it wakes. On a runtime whose workers are all busy that delay grows with the
//! queue of ready tasks, so it is the direct measure of "requests wait for a CPU" (the writer
//! queue only sees the database, and fan-out lag only the subscribers, who already run at a
//! lower priority on their own runtime).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The probe's tick.
const TICK: Duration = Duration::from_millis(25);

/// The smoothed delay of the runtime the probe runs on.
#[derive(Clone, Default)]
pub struct Saturation {
    /// Smoothed delay, in microseconds.
    lag_us: Arc<AtomicU64>,
}

impl Saturation {
    /// The smoothed delay now.
    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    /// Measures the current runtime until `shutdown`; spawn it on the request runtime.
    pub async fn probe(self, shutdown: CancellationToken) {
        let mut smoothed = 0.0f64;
        loop {
            let asked = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
            let late = asked.elapsed().saturating_sub(TICK).as_micros() as f64;
            // A time constant of about ten ticks (250 ms): one slow tick is not saturation,
            // and shedding outlasts a burst long enough to let the queue drain.
            smoothed = 0.9 * smoothed + 0.1 * late;
            self.lag_us.store(smoothed as u64, Ordering::Relaxed);
            metrics::gauge!("stockroom_runtime_lag_seconds").set(smoothed / 1e6);
        }
    }
}
