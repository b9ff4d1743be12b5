//! [`CallStats`]: one method's call counters and latency histogram, striped per thread
//! so that recording a call touches no cache line another worker writes.
//!
//! Measured: one shared set of atomics, written by both tokio workers at add c=256,
//! cost more than the rest of the recording together (cache-line ping-pong on every
//! call); striped, recording is a handful of uncontended `fetch_add`s.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::status::Code;

/// Upper bounds of the latency buckets, in seconds: 25 µs to 10 s (Prometheus'
/// defaults start at 5 ms, above most RPCs on one machine). One more bucket, `+Inf`,
/// holds the rest.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The bucket bounds in nanoseconds (same order as [`LATENCY_BUCKETS`]).
const BOUNDS_NS: [u64; 18] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets including `+Inf`.
pub(crate) const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;
const CODES: usize = Code::ALL.len();

/// One thread's share of a method's numbers, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    started: AtomicU64,
    by_code: [AtomicU64; CODES],
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
}

/// The number of stripes: a power of two ≥ the CPUs (at most 16), so that each tokio
/// worker usually writes a stripe of its own.
fn stripe_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism().map_or(4, |n| n.get()).next_power_of_two().clamp(2, 16)
    })
}

/// This thread's stripe (threads take stripes round-robin as they first record).
fn my_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed);
    }
    MINE.with(|m| *m) & (stripe_count() - 1)
}

/// A method's counters: calls started, finished per status code, a latency histogram,
/// and payload bytes each way.
pub struct CallStats {
    stripes: Box<[Stripe]>,
}

impl std::fmt::Debug for CallStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("CallStats").field("started", &s.started).field("finished", &s.finished()).finish()
    }
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats::new()
    }
}

impl CallStats {
    /// Zeroed counters.
    pub fn new() -> CallStats {
        CallStats { stripes: (0..stripe_count()).map(|_| Stripe::default()).collect() }
    }

    fn stripe(&self) -> &Stripe {
        &self.stripes[my_stripe() & (self.stripes.len() - 1)]
    }

    /// Counts a call that started, with `bytes` of request payload.
    pub(crate) fn start(&self, bytes: usize) {
        let s = self.stripe();
        s.started.fetch_add(1, Relaxed);
        s.request_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Adds `bytes` of request payload (for callers that learn the size after `start`).
    pub(crate) fn add_request_bytes(&self, bytes: usize) {
        self.stripe().request_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a finished call: its status, how long it took, and `bytes` of reply.
    pub(crate) fn finish(&self, code: Code, elapsed: Duration, bytes: usize) {
        let s = self.stripe();
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(BOUNDS_NS.len());
        s.by_code[code as usize].fetch_add(1, Relaxed);
        s.buckets[bucket].fetch_add(1, Relaxed);
        s.sum_ns.fetch_add(ns, Relaxed);
        if bytes > 0 {
            s.response_bytes.fetch_add(bytes as u64, Relaxed);
        }
    }

    /// Counts a call refused before it ran (started and finished at once, outside the
    /// latency histogram).
    pub(crate) fn refuse(&self, code: Code) {
        let s = self.stripe();
        s.started.fetch_add(1, Relaxed);
        s.by_code[code as usize].fetch_add(1, Relaxed);
    }

    /// The totals over all stripes (each counter read once; a scrape during traffic
    /// may see a call started but not yet finished, as with any live counter).
    pub fn snapshot(&self) -> CallSnapshot {
        let mut out = CallSnapshot::default();
        for s in self.stripes.iter() {
            out.started += s.started.load(Relaxed);
            for (o, c) in out.by_code.iter_mut().zip(&s.by_code) {
                *o += c.load(Relaxed);
            }
            for (o, b) in out.buckets.iter_mut().zip(&s.buckets) {
                *o += b.load(Relaxed);
            }
            out.sum_ns += s.sum_ns.load(Relaxed);
            out.request_bytes += s.request_bytes.load(Relaxed);
            out.response_bytes += s.response_bytes.load(Relaxed);
        }
        out
    }
}

/// A method's counters at one moment (see [`CallStats::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSnapshot {
    /// Calls started (admitted or refused).
    pub started: u64,
    /// Finished calls per status code, indexed by `Code as usize`.
    pub by_code: [u64; CODES],
    /// Latency histogram of finished calls (not cumulative; the last is `+Inf`).
    pub buckets: [u64; BUCKETS],
    /// Sum of the latencies in the histogram, in nanoseconds.
    pub sum_ns: u64,
    /// Request payload bytes.
    pub request_bytes: u64,
    /// Reply bytes.
    pub response_bytes: u64,
}

impl CallSnapshot {
    /// Finished calls, any status.
    pub fn finished(&self) -> u64 {
        self.by_code.iter().sum()
    }

    /// Finished calls whose status was not OK.
    pub fn errors(&self) -> u64 {
        self.finished() - self.by_code[Code::Ok as usize]
    }

    /// Calls started and not finished yet.
    pub fn in_flight(&self) -> u64 {
        self.started.saturating_sub(self.finished())
    }

    /// Calls in the latency histogram.
    pub fn observed(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_lands_in_the_bucket_of_its_latency_and_is_counted_by_status() {
        let s = CallStats::new();
        s.start(10);
        s.finish(Code::Ok, Duration::from_micros(20), 5);
        s.start(10);
        s.finish(Code::NotFound, Duration::from_micros(30), 0);
        s.start(10);
        s.finish(Code::Ok, Duration::from_secs(60), 7);
        s.refuse(Code::ResourceExhausted);
        s.start(1); // still running
        let snap = s.snapshot();
        assert_eq!(snap.started, 5);
        assert_eq!(snap.finished(), 4);
        assert_eq!(snap.in_flight(), 1);
        assert_eq!(snap.errors(), 2);
        assert_eq!(snap.by_code[Code::Ok as usize], 2);
        assert_eq!(snap.buckets[0], 1, "20 µs ≤ 25 µs");
        assert_eq!(snap.buckets[1], 1, "30 µs in (25, 50] µs");
        assert_eq!(snap.buckets[BUCKETS - 1], 1, "60 s is past the last bound");
        assert_eq!(snap.observed(), 3, "refusals are not in the histogram");
        assert_eq!(snap.request_bytes, 31);
        assert_eq!(snap.response_bytes, 12);
        assert_eq!(snap.sum_ns, 20_000 + 30_000 + 60_000_000_000);
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let s = std::sync::Arc::new(CallStats::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.start(1);
                        s.finish(Code::Ok, Duration::from_micros(100), 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a recording thread panicked");
        }
        let snap = s.snapshot();
        assert_eq!((snap.started, snap.finished(), snap.buckets[2]), (8000, 8000, 8000));
    }

    #[test]
    fn bounds_in_seconds_and_nanoseconds_agree() {
        for (s, ns) in LATENCY_BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }
}
