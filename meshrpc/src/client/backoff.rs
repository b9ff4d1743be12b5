//! [`Backoff`]: how long to wait between reconnect attempts (exponential, with jitter).

use std::time::Duration;

/// The shortest wait after a failed attempt, whatever the settings.
const MIN_DELAY: Duration = Duration::from_millis(10);

/// Reconnect backoff: the n-th consecutive failure waits
/// `min(initial × multiplier^(n-1), max)`, spread by ±`jitter` (a fraction) so that many
/// clients do not reconnect in lockstep, and never under 10 ms. The first attempt after a
/// connection drops is immediate.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Backoff {
    /// Wait after the first failed attempt. Default 50 ms.
    pub initial: Duration,
    /// Growth per further failure. Default 2.
    pub multiplier: f64,
    /// Longest wait. Default 5 s.
    pub max: Duration,
    /// Random spread as a fraction of the wait (0.2 = ±20 %). Default 0.2.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_secs(5),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// A backoff with the given first and longest waits, doubling, ±20 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, ..Backoff::default() }
    }

    /// The wait after `failures` consecutive failed attempts (`failures ≥ 1`).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = self.multiplier.max(1.0).powi(failures.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = 1.0 + jitter * (2.0 * rand::random::<f64>() - 1.0);
        // Never zero (an `initial` of 0 or a jitter of 1): a loop that redials after
        // each failure must still pause.
        Duration::from_secs_f64((base * spread).max(0.0)).max(MIN_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_max_within_the_jitter() {
        let b = Backoff::default();
        for (failures, base_ms) in [(1, 50.0), (2, 100.0), (3, 200.0), (7, 3200.0), (8, 5000.0), (40, 5000.0)]
        {
            for _ in 0..50 {
                let d = b.delay(failures).as_secs_f64() * 1000.0;
                assert!(d >= base_ms * 0.8 - 1e-6 && d <= base_ms * 1.2 + 1e-6, "failure {failures}: {d} ms");
            }
        }
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let b = Backoff::default();
        let waits: std::collections::HashSet<u128> = (0..20).map(|_| b.delay(3).as_micros()).collect();
        assert!(waits.len() > 10, "waits are randomised, not identical");
    }

    #[test]
    fn a_zero_backoff_still_pauses() {
        let b = Backoff::new(Duration::ZERO, Duration::ZERO);
        for failures in [1, 2, 10] {
            assert!(
                b.delay(failures) >= Duration::from_millis(10),
                "failure {failures}: {:?}",
                b.delay(failures)
            );
        }
    }
}
