//! [`Endpoint`]: one discovered instance as the balancer sees it: its connections, its
//! load (calls in flight, peak-EWMA latency) and its passive-health state.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::ClientConfig;
use crate::client::Pool;
use crate::discovery::Instance;
use crate::status::{Code, Status};

/// Consecutive failures that eject an instance.
pub(crate) const EJECT_AFTER: u32 = 5;
/// The first ejection's length; each further one in a row doubles it, up to [`MAX_EJECTION`].
pub(crate) const BASE_EJECTION: Duration = Duration::from_secs(1);
/// The longest ejection.
pub(crate) const MAX_EJECTION: Duration = Duration::from_secs(30);
/// The latency an instance is assumed to have before its first answer.
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// How fast the latency average forgets (time constant).
const DECAY: Duration = Duration::from_secs(2);

/// One instance of a discovered service.
pub struct Endpoint {
    /// What the registry said about it.
    pub(crate) instance: Instance,
    pub(crate) pool: Pool,
    /// Calls sent and not answered yet.
    pub(crate) in_flight: AtomicU32,
    /// Calls sent in all (the retry budget counts them when a retry is considered).
    pub(crate) calls: AtomicU64,
    /// Calls it answered with OK.
    pub(crate) succeeded: AtomicU64,
    /// Peak-EWMA of latency, in nanoseconds (an `f64`'s bits).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in ns since `epoch`.
    ewma_at: AtomicU64,
    epoch: Instant,
    /// Failures in a row (any success resets it).
    failures: AtomicU32,
    /// Ejections in a row without a success in between.
    ejections: AtomicU32,
    /// Ejected until this many ns since `epoch` (0: not ejected).
    ejected_until: AtomicU64,
    /// Set once the instance left discovery: no new calls.
    pub(crate) retired: AtomicBool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.instance.id)
            .field("addr", &self.instance.addr)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub(crate) fn new(instance: Instance, config: &ClientConfig) -> Endpoint {
        let epoch = Instant::now();
        Endpoint {
            pool: Pool::new(instance.addr.clone(), config.clone()),
            instance,
            in_flight: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            ewma_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            ewma_at: AtomicU64::new(0),
            epoch,
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    fn since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instance's id.
    pub fn id(&self) -> &str {
        &self.instance.id
    }

    /// Its peak-EWMA latency estimate.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.ewma_ns.load(Ordering::Relaxed)) as u64)
    }

    /// What the client knows of this instance now.
    pub(crate) fn stats(&self, now: Instant) -> InstanceStats {
        InstanceStats {
            calls: self.calls.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency: self.latency(),
            ejected: self.is_ejected(now),
        }
    }

    /// The load P2C compares: latency estimate × (calls in flight + 1).
    pub(crate) fn cost(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        ewma * f64::from(self.in_flight.load(Ordering::Relaxed) + 1)
    }

    /// True while ejected (passive health).
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && self.since_epoch(now) < until
    }

    /// Records an answer that took `rtt`: updates the latency estimate (a slower sample
    /// is taken at once, a faster one decays in), and a success resets failures.
    pub(crate) fn observe(&self, rtt: Duration, now: Instant, outcome: &Result<(), &Status>) {
        let at = self.since_epoch(now);
        let last = self.ewma_at.swap(at, Ordering::Relaxed);
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let sample = rtt.as_nanos() as f64;
        let next = if sample > prev {
            sample
        } else {
            let dt = at.saturating_sub(last) as f64;
            let w = (-dt / DECAY.as_nanos() as f64).exp();
            prev * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                self.reset_failures()
            }
            // Failures are counted by the balancer; a timeout or a cancel says nothing
            // either way (a black hole must not look healthy, a tight deadline not sick).
            Err(s)
                if counts_as_failure(s) || matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {}
            Err(_) => self.reset_failures(), // an application error: the instance is healthy
        }
    }

    /// Resets the passive-health state after a success.
    pub(crate) fn reset_failures(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns true when it should now be ejected (the caller checks
    /// the cap on ejected instances, then calls [`Endpoint::eject`]).
    pub(crate) fn failed(&self, now: Instant) -> bool {
        // Failures of calls already in flight when it was ejected do not extend the
        // ejection: one burst of failures is one ejection, not twenty.
        if self.is_ejected(now) {
            return false;
        }
        self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= EJECT_AFTER
    }

    /// Ejects it: doubling back-off per ejection in a row. Returns how long.
    pub(crate) fn eject(&self, now: Instant) -> Duration {
        let k = self.ejections.fetch_add(1, Ordering::AcqRel).min(5);
        let d = (BASE_EJECTION * 2u32.pow(k)).min(MAX_EJECTION);
        self.ejected_until.store(self.since_epoch(now + d).max(1), Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        d
    }
}

/// A discovered client's view of one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct InstanceStats {
    /// Calls sent to it (attempts, including retries and hedges).
    pub calls: u64,
    /// Calls it answered with OK.
    pub succeeded: u64,
    /// Calls in flight on it now.
    pub in_flight: u32,
    /// Its peak-EWMA latency estimate.
    pub latency: Duration,
    /// Ejected now by passive health (it kept failing).
    pub ejected: bool,
}

/// Whether a failed call says something about the instance's health (and so counts
/// toward ejection): transport failures and server faults, not application errors.
pub(crate) fn counts_as_failure(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss)
}
