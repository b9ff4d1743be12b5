//! [`RetryBudget`]: retries may add at most a fraction of the calls made, plus a small
//! floor per second (Finagle's and Linkerd's definition), so that retries cannot turn
//! an outage into a retry storm.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Seconds of history the budget looks at.
const WINDOW_SECS: usize = 10;

#[derive(Debug)]
struct Window {
    /// Per-second buckets of (calls, retries), indexed by second % WINDOW_SECS.
    buckets: [(u64, u64); WINDOW_SECS],
    /// The second each bucket holds (to clear stale ones).
    stamps: [u64; WINDOW_SECS],
    start: Instant,
    /// The running total last seen by [`RetryBudget::record_total`], and when.
    last_total: (u64, Instant),
}

/// A retry budget: a retry is allowed while retries over the last 10 s stay within
/// `ratio` × calls + `per_second` × 10. Default: 20 % of calls plus 10 per second.
///
/// Calls are counted by [`RetryBudget::record_total`] (the client sums its per-instance
/// call counters when a retry is considered, so the fast path pays nothing); retries by
/// [`RetryBudget::try_retry`], which says whether this one fits.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    per_second: f64,
    window: Mutex<Window>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(0.2, 10.0)
    }
}

impl RetryBudget {
    /// Retries ≤ `ratio` × calls + `per_second` per second, over a 10 s window.
    pub fn new(ratio: f64, per_second: f64) -> RetryBudget {
        RetryBudget {
            ratio: ratio.max(0.0),
            per_second: per_second.max(0.0),
            window: Mutex::new(Window {
                buckets: [(0, 0); WINDOW_SECS],
                stamps: [0; WINDOW_SECS],
                start: Instant::now(),
                last_total: (0, Instant::now()),
            }),
        }
    }

    fn bucket(w: &mut Window, now: Instant) -> usize {
        let sec = now.saturating_duration_since(w.start).as_secs();
        let i = (sec % WINDOW_SECS as u64) as usize;
        if w.stamps[i] != sec {
            w.stamps[i] = sec;
            w.buckets[i] = (0, 0);
        }
        i
    }

    /// Counts calls from a running total (e.g. summed from per-instance counters, so
    /// the call path pays nothing): the calls since the last total were spread over the
    /// time since then, so only the share that falls inside the window is counted. A
    /// lump of an hour's calls never buys a burst of retries.
    pub fn record_total(&self, total: u64) {
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (last, at) = w.last_total;
        w.last_total = (total, now);
        let delta = total.saturating_sub(last);
        if delta == 0 {
            return;
        }
        let span = now.saturating_duration_since(at).as_secs_f64();
        let share = if span > WINDOW_SECS as f64 { WINDOW_SECS as f64 / span } else { 1.0 };
        let i = Self::bucket(&mut w, now);
        w.buckets[i].0 += (delta as f64 * share) as u64;
    }

    /// Takes one retry from the budget if it fits; false means: do not retry.
    pub fn try_retry(&self) -> bool {
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let i = Self::bucket(&mut w, now);
        let sec = now.saturating_duration_since(w.start).as_secs();
        let live = |k: usize| sec.saturating_sub(w.stamps[k]) < WINDOW_SECS as u64;
        let (calls, retries) = (0..WINDOW_SECS)
            .filter(|&k| live(k))
            .fold((0u64, 0u64), |(c, r), k| (c + w.buckets[k].0, r + w.buckets[k].1));
        // The floor covers the seconds elapsed so far, up to the whole window.
        let secs = (now.saturating_duration_since(w.start).as_secs_f64() + 1.0).min(WINDOW_SECS as f64);
        let allowed = self.ratio * calls as f64 + self.per_second * secs;
        if (retries as f64) < allowed {
            w.buckets[i].1 += 1;
            true
        } else {
            false
        }
    }

    /// Retries and calls counted over the window (for stats and tests).
    pub fn counts(&self) -> (u64, u64) {
        let now = Instant::now();
        let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let sec = now.saturating_duration_since(w.start).as_secs();
        (0..WINDOW_SECS)
            .filter(|&k| sec.saturating_sub(w.stamps[k]) < WINDOW_SECS as u64)
            .fold((0, 0), |(c, r), k| (c + w.buckets[k].0, r + w.buckets[k].1))
    }
}

/// How long to wait before retrying on the same instance (none other being left).
pub(crate) const SAME_INSTANCE_BACKOFF: Duration = Duration::from_millis(25);
