//! [`CallStats`]: one method's call counters and latency histogram, striped per thread
//! so that recording a call touches no cache line another worker writes.
//!
//! Measured: one shared set of atomics, written by both tokio workers at add c=256,
//! cost more than the rest of the recording together (cache-line ping-pong on every
//! call); striped, recording is a handful of uncontended `fetch_add`s.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicI64, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
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
///
/// A finished OK call costs two `fetch_add`s (its bucket and the latency sum): its
/// status count is derived (histogram count minus the other statuses), and payload
/// bytes are counted per socket read and write instead of per call.
#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    /// Calls entered and not exited (may go negative in one stripe: a call can end on
    /// another thread than it started on; the total is what counts).
    in_flight: AtomicI64,
    /// Calls started (the client's way to count in-flight calls with one atomic: every
    /// call it starts is finished through the histogram, so started − finished).
    started: AtomicU64,
    /// Finished (observed) calls per status, OK excepted.
    failed: [AtomicU64; CODES],
    /// Calls refused before they ran, per status (not in the histogram).
    refused: [AtomicU64; CODES],
}

/// Stripes per method: each tokio worker usually writes a stripe of its own (threads
/// take stripes round-robin; more threads than stripes share, still exactly counted).
const STRIPES: usize = 8;

/// This thread's stripe.
fn my_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|m| {
        let mut v = m.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Relaxed) % STRIPES;
            m.set(v);
        }
        v
    })
}

/// A method's counters: calls finished per status code, a latency histogram, calls in
/// flight, and calls refused before they ran.
pub struct CallStats {
    stripes: Box<[Stripe; STRIPES]>,
    /// The largest OK count reported so far: the count is derived (histogram count −
    /// failures), and a scrape racing a failing call must never see it go down.
    ok_reported: AtomicU64,
}

impl std::fmt::Debug for CallStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("CallStats").field("finished", &s.finished()).field("in_flight", &s.in_flight).finish()
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
        CallStats { stripes: Box::default(), ok_reported: AtomicU64::new(0) }
    }

    fn stripe(&self) -> &Stripe {
        &self.stripes[my_stripe()]
    }

    /// Counts a call that starts and will be [`CallStats::finish`]ed (clients: in flight
    /// is then started − finished, one atomic per call instead of two).
    pub(crate) fn start(&self) {
        self.stripe().started.fetch_add(1, Relaxed);
    }

    /// Counts a call as in flight until [`CallStats::exit`] (servers: only the calls
    /// that outlive their first poll, the rest are never seen in flight).
    pub(crate) fn enter(&self) {
        self.stripe().in_flight.fetch_add(1, Relaxed);
    }

    /// Counts a call as no longer in flight.
    pub(crate) fn exit(&self) {
        self.stripe().in_flight.fetch_sub(1, Relaxed);
    }

    /// Counts a finished call: its status and how long it took.
    pub(crate) fn finish(&self, code: Code, elapsed: Duration) {
        let s = self.stripe();
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(BOUNDS_NS.len());
        // The failure first, then (Release) the bucket: a snapshot that sees the bucket
        // (Acquire) sees the failure too, so it never counts a failed call as OK.
        if code != Code::Ok {
            s.failed[code as usize].fetch_add(1, Relaxed);
        }
        s.sum_ns.fetch_add(ns, Relaxed);
        s.buckets[bucket].fetch_add(1, Release);
    }

    /// Counts a call refused before it ran (outside the latency histogram).
    pub(crate) fn refuse(&self, code: Code) {
        self.stripe().refused[code as usize].fetch_add(1, Relaxed);
    }

    /// The totals over all stripes (each counter read once; a scrape during traffic
    /// may see a call in the histogram before its failure status, as with any live
    /// counter set).
    pub fn snapshot(&self) -> CallSnapshot {
        let mut out = CallSnapshot::default();
        let mut failed = [0u64; CODES];
        let mut in_flight: i64 = 0;
        let mut started: u64 = 0;
        for s in self.stripes.iter() {
            for (o, b) in out.buckets.iter_mut().zip(&s.buckets) {
                *o += b.load(Acquire);
            }
            out.sum_ns += s.sum_ns.load(Relaxed);
            in_flight += s.in_flight.load(Relaxed);
            started += s.started.load(Relaxed);
            for ((f, r), (sf, sr)) in
                failed.iter_mut().zip(out.by_code.iter_mut()).zip(s.failed.iter().zip(&s.refused))
            {
                *f += sf.load(Relaxed);
                *r += sr.load(Relaxed);
            }
        }
        let failed_total: u64 = failed.iter().sum();
        for (o, f) in out.by_code.iter_mut().zip(failed) {
            *o += f;
        }
        let ok = out.observed().saturating_sub(failed_total);
        out.by_code[Code::Ok as usize] += self.ok_reported.fetch_max(ok, Relaxed).max(ok);
        if started > 0 {
            in_flight += i64::try_from(started.saturating_sub(out.observed())).unwrap_or(i64::MAX);
        }
        out.in_flight = u64::try_from(in_flight).unwrap_or(0);
        out
    }
}

/// A method's counters at one moment (see [`CallStats::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSnapshot {
    /// Finished calls per status code (refused ones included), indexed by `Code as usize`.
    pub by_code: [u64; CODES],
    /// Latency histogram of the calls that ran (not cumulative; the last is `+Inf`).
    pub buckets: [u64; BUCKETS],
    /// Sum of the latencies in the histogram, in nanoseconds.
    pub sum_ns: u64,
    /// Calls in flight now.
    pub in_flight: u64,
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
        s.finish(Code::Ok, Duration::from_micros(20));
        s.finish(Code::NotFound, Duration::from_micros(30));
        s.finish(Code::Ok, Duration::from_secs(60));
        s.refuse(Code::ResourceExhausted);
        s.enter(); // still running
        let snap = s.snapshot();
        let client = CallStats::new();
        client.start();
        client.start();
        client.finish(Code::Ok, Duration::from_micros(1));
        assert_eq!(client.snapshot().in_flight, 1, "started − finished");
        assert_eq!(snap.finished(), 4);
        assert_eq!(snap.in_flight, 1);
        assert_eq!(snap.errors(), 2);
        assert_eq!(snap.by_code[Code::Ok as usize], 2);
        assert_eq!(snap.by_code[Code::NotFound as usize], 1);
        assert_eq!(snap.by_code[Code::ResourceExhausted as usize], 1);
        assert_eq!(snap.buckets[0], 1, "20 µs ≤ 25 µs");
        assert_eq!(snap.buckets[1], 1, "30 µs in (25, 50] µs");
        assert_eq!(snap.buckets[BUCKETS - 1], 1, "60 s is past the last bound");
        assert_eq!(snap.observed(), 3, "refusals are not in the histogram");
        assert_eq!(snap.sum_ns, 20_000 + 30_000 + 60_000_000_000);
        s.exit();
        assert_eq!(s.snapshot().in_flight, 0);
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let s = std::sync::Arc::new(CallStats::new());
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.enter();
                        s.finish(if i == 0 { Code::Internal } else { Code::Ok }, Duration::from_micros(100));
                        s.exit();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a recording thread panicked");
        }
        let snap = s.snapshot();
        assert_eq!(
            (snap.finished(), snap.errors(), snap.buckets[2], snap.in_flight),
            (12_000, 1000, 12_000, 0)
        );
    }

    #[test]
    fn bounds_in_seconds_and_nanoseconds_agree() {
        for (s, ns) in LATENCY_BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }
}
