//! [`Strategy`] and the [`Picker`] built from one instance set: which endpoint the
//! next call goes to.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use super::endpoint::Endpoint;

/// How calls are spread over a service's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Each instance in turn.
    RoundRobin,
    /// In turn, in proportion to each instance's `weight` label (smooth: no bursts).
    WeightedRoundRobin,
    /// Uniformly at random.
    Random,
    /// Power of two choices: of two random instances, the one with the lower peak-EWMA
    /// latency × (calls in flight + 1). Adapts to slow and overloaded instances.
    #[default]
    P2cEwma,
    /// By the call's hash key (`CallOptions::hash_key`) on a ring of virtual nodes:
    /// a key keeps its instance while the set is stable; adding one of N moves ~1/N.
    ConsistentHash,
}

/// Virtual nodes per instance (per unit of weight is not used: rings stay balanced by
/// count). 400 keep max/min keys per instance under 1.3 for up to ~20 instances.
const VNODES: usize = 400;

/// The longest weighted round-robin schedule kept (weights are scaled down past it).
const MAX_SCHEDULE: usize = 4096;

/// Picks among one instance set with a [`Strategy`] (a discovered client rebuilds it
/// whenever the set changes). Public so the balancer can be tried and measured alone.
pub struct Picker {
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    strategy: Strategy,
    next: AtomicUsize,
    schedule: Vec<u32>,
    ring: Vec<(u64, u32)>,
}

/// A stable 64-bit hash (SipHash with fixed keys: the same on every machine and run).
pub(crate) fn hash64(data: impl Hash) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6d65_7368, 0x7270_6321);
    data.hash(&mut h);
    h.finish()
}

impl std::fmt::Debug for Picker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picker")
            .field("strategy", &self.strategy)
            .field("instances", &self.endpoints.len())
            .finish()
    }
}

impl Picker {
    /// A picker over `instances` (no connections are made until a client uses them).
    pub fn for_instances(strategy: Strategy, instances: Vec<crate::discovery::Instance>) -> Picker {
        let config = crate::client::ClientConfig::default();
        Picker::new(strategy, instances.into_iter().map(|i| Arc::new(Endpoint::new(i, &config))).collect())
    }

    /// The instance the next call would go to (`key`: the call's hash key, for
    /// consistent hashing); `None` with no instances.
    pub fn pick_instance(&self, key: Option<&[u8]>) -> Option<&crate::discovery::Instance> {
        let i = self.pick(key, &[], Instant::now())?;
        Some(&self.endpoints[i].instance)
    }

    pub(crate) fn new(strategy: Strategy, endpoints: Vec<Arc<Endpoint>>) -> Picker {
        let schedule =
            if strategy == Strategy::WeightedRoundRobin { smooth_wrr(&endpoints) } else { Vec::new() };
        let ring = if strategy == Strategy::ConsistentHash { ring(&endpoints) } else { Vec::new() };
        Picker { endpoints, strategy, next: AtomicUsize::new(0), schedule, ring }
    }

    /// The endpoint for the next call: not ejected, not retired, not in `tried` (the
    /// instances this call already failed on), relaxing ejection, then `tried`, when
    /// nothing else is left. `None` when no instance is left at all.
    pub(crate) fn pick(&self, key: Option<&[u8]>, tried: &[Arc<Endpoint>], now: Instant) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let was_tried = |i: usize| tried.iter().any(|t| Arc::ptr_eq(t, &self.endpoints[i]));
        let strict = |i: usize| {
            let e = &self.endpoints[i];
            !was_tried(i) && !e.is_ejected(now) && !e.retired.load(Ordering::Relaxed)
        };
        if let Some(i) = self.pick_with(key, &strict) {
            return Some(i);
        }
        let untried = |i: usize| !was_tried(i) && !self.endpoints[i].retired.load(Ordering::Relaxed);
        if let Some(i) = self.pick_with(key, &untried) {
            return Some(i);
        }
        let live = |i: usize| !self.endpoints[i].retired.load(Ordering::Relaxed);
        self.pick_with(key, &live)
    }

    fn pick_with(&self, key: Option<&[u8]>, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        match self.strategy {
            Strategy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Strategy::WeightedRoundRobin if !self.schedule.is_empty() => {
                let len = self.schedule.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..len).map(|k| self.schedule[(start + k) % len] as usize).find(|&i| ok(i))
            }
            Strategy::WeightedRoundRobin | Strategy::Random => {
                let start = rand::random_range(0..n);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Strategy::P2cEwma => {
                let a = rand::random_range(0..n);
                let b = if n > 1 { (a + 1 + rand::random_range(0..n - 1)) % n } else { a };
                match (ok(a), ok(b)) {
                    (true, true) => {
                        Some(if self.endpoints[b].cost() < self.endpoints[a].cost() { b } else { a })
                    }
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => (0..n)
                        .filter(|&i| ok(i))
                        .min_by(|&x, &y| self.endpoints[x].cost().total_cmp(&self.endpoints[y].cost())),
                }
            }
            Strategy::ConsistentHash => {
                let Some(key) = key else {
                    // No key: any eligible instance, at random.
                    let start = rand::random_range(0..n);
                    return (0..n).map(|k| (start + k) % n).find(|&i| ok(i));
                };
                let h = hash64(key);
                let len = self.ring.len();
                let start = self.ring.partition_point(|(p, _)| *p < h);
                (0..len).map(|k| self.ring[(start + k) % len].1 as usize).find(|&i| ok(i))
            }
        }
    }
}

/// The ring of virtual nodes, sorted by position.
fn ring(endpoints: &[Arc<Endpoint>]) -> Vec<(u64, u32)> {
    let mut ring = Vec::with_capacity(endpoints.len() * VNODES);
    for (i, e) in endpoints.iter().enumerate() {
        for v in 0..VNODES {
            ring.push((hash64((&e.instance.id, &e.instance.addr, v)), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// A smooth weighted round-robin schedule (nginx's algorithm, computed once): weights
/// 5, 1, 1 give a a b a c a a, not a a a a a b c.
fn smooth_wrr(endpoints: &[Arc<Endpoint>]) -> Vec<u32> {
    let mut weights: Vec<u64> = endpoints.iter().map(|e| u64::from(e.instance.weight())).collect();
    let g = weights.iter().copied().fold(0, gcd);
    if g == 0 {
        return Vec::new(); // every weight is 0: fall back to random
    }
    weights.iter_mut().for_each(|w| *w /= g);
    let mut total: u64 = weights.iter().sum();
    if total as usize > MAX_SCHEDULE {
        let scale = total as f64 / MAX_SCHEDULE as f64;
        weights.iter_mut().for_each(|w| {
            if *w > 0 {
                *w = ((*w as f64 / scale).round() as u64).max(1);
            }
        });
        total = weights.iter().sum();
    }
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += *w as i64;
        }
        let (best, _) =
            current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))).unwrap_or((0, &0));
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}
