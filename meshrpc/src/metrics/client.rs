//! [`ClientMetrics`]: what this process's clients record about the calls they make.
//! One set per process ([`ClientMetrics::global`]), like a default Prometheus registry.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::call_stats::{CallSnapshot, CallStats};
use super::export::{encode_bytes, encode_calls, encode_gauge, rows};

/// Method names a process's clients get series of their own for; later names share
/// the [`OTHER_METHOD`] row (a program that builds names from input stays bounded).
pub const MAX_CLIENT_METHODS: usize = 1000;
/// The label value shared by method names past [`MAX_CLIENT_METHODS`].
pub const OTHER_METHOD: &str = "<other>";
/// Services retry, hedge, re-send and ejection counts are kept for (later ones share
/// the [`OTHER_METHOD`] row).
const MAX_SERVICES: usize = 1000;

/// Rare client events, counted per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A call sent again after a failure (balanced clients, within the retry budget).
    Retry,
    /// A hedged copy of a slow call.
    Hedge,
    /// A call the server refused unprocessed (it was going away), sent on a new connection.
    Resend,
    /// An instance taken out of rotation after consecutive failures.
    Ejection,
}

const EVENTS: [(Event, &str, &str); 4] = [
    (Event::Retry, "client_retries", "Calls sent again after a failure, within the retry budget."),
    (Event::Hedge, "client_hedges", "Hedged copies of slow calls sent to another instance."),
    (
        Event::Resend,
        "client_resent",
        "Calls re-sent on a new connection after an unprocessed refusal (GOAWAY).",
    ),
    (Event::Ejection, "client_ejections", "Instances taken out of rotation after consecutive failures."),
];

/// The call counters of this process's clients, per method; retries, hedges, re-sends
/// and ejections per service; open connections.
pub struct ClientMetrics {
    /// Leaked on purpose: at most [`MAX_CLIENT_METHODS`] + 1 live for the process, and a
    /// `&'static` needs no reference count on the call path (a shared `Arc` count is
    /// written by every worker, which is what the striping avoids).
    methods: Mutex<HashMap<Box<str>, &'static CallStats>>,
    other: &'static CallStats,
    events: Mutex<BTreeMap<String, [u64; 4]>>,
    connections: AtomicI64,
    /// Bytes read from and written to servers.
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
}

impl std::fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetrics").finish_non_exhaustive()
    }
}

thread_local! {
    /// This thread's recently used methods (a short scan beats hashing the name).
    static CACHE: RefCell<Vec<(Box<str>, &'static CallStats)>> = const { RefCell::new(Vec::new()) };
}
const CACHE_LEN: usize = 16;

impl ClientMetrics {
    /// The process's client metrics.
    pub fn global() -> &'static ClientMetrics {
        static GLOBAL: OnceLock<ClientMetrics> = OnceLock::new();
        GLOBAL.get_or_init(|| ClientMetrics {
            methods: Mutex::new(HashMap::new()),
            other: Box::leak(Box::new(CallStats::new())),
            events: Mutex::new(BTreeMap::new()),
            connections: AtomicI64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        })
    }

    /// The counters of `method`.
    pub(crate) fn method(&'static self, method: &str) -> &'static CallStats {
        let cached = CACHE.with(|c| c.borrow().iter().find(|(m, _)| &**m == method).map(|(_, s)| *s));
        if let Some(s) = cached {
            return s;
        }
        let stats = {
            let mut map = self.methods.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(method) {
                Some(s) => *s,
                None if map.len() >= MAX_CLIENT_METHODS => self.other,
                None => {
                    let s: &'static CallStats = Box::leak(Box::new(CallStats::new()));
                    map.insert(method.into(), s);
                    s
                }
            }
        };
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CACHE_LEN {
                c.remove(0);
            }
            c.push((method.into(), stats));
        });
        stats
    }

    /// Counts `event` for `service`.
    pub(crate) fn count(&self, service: &str, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let key =
            if events.contains_key(service) || events.len() < MAX_SERVICES { service } else { OTHER_METHOD };
        let row = match events.get_mut(key) {
            Some(r) => r,
            None => events.entry(key.to_string()).or_default(),
        };
        row[event as usize] += 1;
    }

    /// Counts a connection that completed its handshake.
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    /// Counts a connection that closed.
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }

    /// Every method's numbers now, sorted by name ([`OTHER_METHOD`] last, if used).
    pub fn snapshot(&self) -> Vec<(String, CallSnapshot)> {
        let mut rows: Vec<(String, CallSnapshot)> = {
            let map = self.methods.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(m, s)| (m.to_string(), s.snapshot())).collect()
        };
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let other = self.other.snapshot();
        if other.finished() > 0 || other.in_flight > 0 {
            rows.push((OTHER_METHOD.to_string(), other));
        }
        rows
    }
}

impl Collector for &'static ClientMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snaps = self.snapshot();
        let rows = rows(&snaps, OTHER_METHOD);
        encode_calls(&mut encoder, "client", &rows)?;
        encode_bytes(&mut encoder, "client", self.received.load(Relaxed), self.sent.load(Relaxed))?;
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (event, name, help) in EVENTS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (service, counts) in &events {
                let n = counts[event as usize];
                family
                    .encode_family(&[("service", service.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        encode_gauge(
            &mut encoder,
            "client_connections",
            "Connections this process's clients hold open.",
            self.connections.load(Relaxed),
        )
    }
}
