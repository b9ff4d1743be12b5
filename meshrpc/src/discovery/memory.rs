//! [`MemoryRegistry`]: an in-process registry (tests, one process, and the state
//! behind the dev registry server).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;

use super::instance::{Cursor, Instance, LeaseInfo, LeasedInstance, Snapshot};
use super::registry::{LeaseId, Registry};
use crate::status::Status;

/// The shortest TTL accepted (shorter ones are raised to it).
const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest TTL accepted (longer ones are lowered to it).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

struct Lease {
    ttl: Duration,
    expires: Instant,
    granted: Instant,
    renewed: Instant,
    /// (service, id) of the instances registered under it.
    keys: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    revision: u64,
    /// service → id → (instance, lease)
    services: BTreeMap<String, BTreeMap<String, (Instance, LeaseId)>>,
    /// service → revision and time of its last change
    changed: HashMap<String, (u64, Instant)>,
    leases: HashMap<LeaseId, Lease>,
    reaper_running: bool,
}

struct Shared {
    epoch: u64,
    state: Mutex<State>,
    /// Woken on every change (watchers re-check their service) and for the reaper.
    changed: Notify,
    /// How long after a change waiting watchers got it (seconds).
    watch_lag: Histogram,
}

/// An in-process registry with leases, TTLs and long-poll watches. Cheap to clone
/// (clones share the state). Expired leases are reaped by a task started on the
/// first registration (so the first `register` must run inside a tokio runtime).
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry").field("epoch", &self.shared.epoch).finish_non_exhaustive()
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

impl MemoryRegistry {
    /// An empty registry with a fresh random epoch.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry {
            shared: Arc::new(Shared {
                epoch: rand::random::<u64>() | 1,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                watch_lag: Histogram::new(super::super::metrics::LATENCY_BUCKETS),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers synchronously (see [`Registry::register`]).
    pub fn register_now(&self, instance: &Instance, ttl: Duration) -> Result<LeaseId, Status> {
        validate(instance)?;
        let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
        let start_reaper = {
            let mut st = self.state();
            // Random, not sequential: a restarted registry must not hand out an id that
            // an old holder still renews (it would renew someone else's lease).
            let mut lease: LeaseId = rand::random::<u64>() >> 1 | 1;
            while st.leases.contains_key(&lease) {
                lease = rand::random::<u64>() >> 1 | 1;
            }
            // Re-registering an id replaces the old entry (and detaches it from its lease).
            let key = (instance.service.clone(), instance.id.clone());
            if let Some((_, old)) = st.services.get(&key.0).and_then(|m| m.get(&key.1)).cloned() {
                if let Some(l) = st.leases.get_mut(&old) {
                    l.keys.retain(|k| *k != key);
                }
            }
            let now = Instant::now();
            st.leases.insert(
                lease,
                Lease { ttl, expires: now + ttl, granted: now, renewed: now, keys: vec![key.clone()] },
            );
            st.services.entry(key.0.clone()).or_default().insert(key.1, (instance.clone(), lease));
            bump(&mut st, &key.0);
            let start = !st.reaper_running;
            st.reaper_running = true;
            (lease, start)
        };
        self.shared.changed.notify_waiters();
        if start_reaper.1 {
            tokio::spawn(reap(Arc::downgrade(&self.shared)));
        }
        Ok(start_reaper.0)
    }

    /// Renews a lease synchronously (see [`Registry::keep_alive`]).
    pub fn keep_alive_now(&self, lease: LeaseId) -> Result<(), Status> {
        let mut st = self.state();
        match st.leases.get_mut(&lease) {
            Some(l) => {
                l.renewed = Instant::now();
                l.expires = l.renewed + l.ttl;
                Ok(())
            }
            None => Err(lease_gone(lease)),
        }
    }

    /// Deregisters synchronously (see [`Registry::deregister`]).
    pub fn deregister_now(&self, instance: &Instance, lease: LeaseId) -> Result<(), Status> {
        let removed = {
            let mut st = self.state();
            let l = st.leases.remove(&lease);
            let mut keys = l.map(|l| l.keys).unwrap_or_default();
            keys.push((instance.service.clone(), instance.id.clone()));
            remove_keys(&mut st, &keys, Some(lease))
        };
        if removed {
            self.shared.changed.notify_waiters();
        }
        Ok(())
    }

    /// Revokes a lease as if it had expired (tests use it to simulate an outage).
    pub fn revoke(&self, lease: LeaseId) -> bool {
        let removed = {
            let mut st = self.state();
            match st.leases.remove(&lease) {
                Some(l) => {
                    remove_keys(&mut st, &l.keys, Some(lease));
                    true
                }
                None => false,
            }
        };
        if removed {
            self.shared.changed.notify_waiters();
        }
        removed
    }

    /// The lease instance `id` of `service` is registered under, if it is.
    pub fn lease_of(&self, service: &str, id: &str) -> Option<LeaseId> {
        self.state().services.get(service).and_then(|m| m.get(id)).map(|(_, l)| *l)
    }

    /// The current snapshot of `service`.
    pub fn snapshot(&self, service: &str) -> Snapshot {
        snapshot_of(&self.state(), self.shared.epoch, service)
    }

    /// Every service with at least one live instance, sorted.
    pub fn service_names(&self) -> Vec<String> {
        self.state().services.iter().filter(|(_, m)| !m.is_empty()).map(|(s, _)| s.clone()).collect()
    }

    /// The live instances of `service` with their leases (see [`Registry::leases`]).
    pub fn leases_now(&self, service: &str) -> Vec<LeasedInstance> {
        let now = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let st = self.state();
        let Some(m) = st.services.get(service) else { return Vec::new() };
        m.values()
            .map(|(instance, lease)| LeasedInstance {
                instance: instance.clone(),
                lease: st.leases.get(lease).map(|l| LeaseInfo {
                    ttl_ms: ms(l.ttl),
                    age_ms: ms(now.saturating_duration_since(l.granted)),
                    renewed_ms_ago: ms(now.saturating_duration_since(l.renewed)),
                    expires_in_ms: ms(l.expires.saturating_duration_since(now)),
                }),
            })
            .collect()
    }

    /// This registry's Prometheus metrics: instances per service, live leases, and how
    /// long after a change waiting watchers received it.
    pub fn collector(&self) -> impl prometheus_client::collector::Collector + use<> {
        RegistryCollector { registry: self.clone() }
    }

    /// See [`Registry::watch_next`].
    pub async fn next_snapshot(&self, service: &str, after: Cursor, max_wait: Duration) -> Snapshot {
        let until = Instant::now() + max_wait;
        loop {
            // Registered before checking, so a change between the check and the wait wakes us.
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.state();
                let (rev, at) = st.changed.get(service).copied().unwrap_or((0, until));
                if after.epoch != self.shared.epoch || rev > after.revision {
                    if after.epoch == self.shared.epoch {
                        self.shared.watch_lag.observe(at.elapsed().as_secs_f64());
                    }
                    return snapshot_of(&st, self.shared.epoch, service);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => return self.snapshot(service),
            }
        }
    }
}

fn validate(i: &Instance) -> Result<(), Status> {
    if i.service.is_empty() || i.id.is_empty() || i.addr.is_empty() {
        return Err(Status::invalid_argument("an instance needs a service name, an id and an address"));
    }
    Ok(())
}

fn lease_gone(lease: LeaseId) -> Status {
    Status::not_found(format!("lease {lease} is gone (expired or revoked): register again"))
}

fn bump(st: &mut State, service: &str) {
    st.revision += 1;
    let rev = st.revision;
    st.changed.insert(service.to_string(), (rev, Instant::now()));
}

/// Removes the entries `keys` still registered under `lease` (any lease if `None`).
fn remove_keys(st: &mut State, keys: &[(String, String)], lease: Option<LeaseId>) -> bool {
    let mut removed = false;
    for (svc, id) in keys {
        let Some(m) = st.services.get_mut(svc) else { continue };
        if m.get(id).is_some_and(|(_, l)| lease.is_none_or(|want| *l == want)) {
            m.remove(id);
            if m.is_empty() {
                st.services.remove(svc);
            }
            bump(st, svc);
            removed = true;
        }
    }
    removed
}

fn snapshot_of(st: &State, epoch: u64, service: &str) -> Snapshot {
    Snapshot {
        service: service.to_string(),
        cursor: Cursor { epoch, revision: st.changed.get(service).map_or(0, |c| c.0) },
        instances: st
            .services
            .get(service)
            .map(|m| m.values().map(|(i, _)| i.clone()).collect())
            .unwrap_or_default(),
    }
}

/// Expires leases; ends when the registry is dropped.
async fn reap(shared: Weak<Shared>) {
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else { return };
            let now = Instant::now();
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let expired: Vec<LeaseId> =
                st.leases.iter().filter(|(_, l)| l.expires <= now).map(|(id, _)| *id).collect();
            let mut removed = false;
            for id in expired {
                if let Some(l) = st.leases.remove(&id) {
                    tracing::debug!(lease = id, "lease expired");
                    removed |= remove_keys(&mut st, &l.keys, Some(id));
                }
            }
            let next = st.leases.values().map(|l| l.expires).min();
            drop(st);
            if removed {
                shared.changed.notify_waiters();
            }
            next
        };
        // Re-check at least every 250 ms so new, shorter leases are noticed in time.
        let cap = Instant::now() + Duration::from_millis(250);
        tokio::time::sleep_until(next.map_or(cap, |n| n.min(cap))).await;
    }
}

/// Encodes a [`MemoryRegistry`]'s metrics on each scrape.
#[derive(Debug)]
struct RegistryCollector {
    registry: MemoryRegistry,
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (counts, leases) = {
            let st = self.registry.state();
            let counts: Vec<(String, usize)> =
                st.services.iter().map(|(s, m)| (s.clone(), m.len())).collect();
            (counts, st.leases.len())
        };
        {
            let help = "Live instances per service in this dev registry.";
            let mut family =
                encoder.encode_descriptor("registry_instances", help, None, MetricType::Gauge)?;
            for (service, n) in &counts {
                ConstGauge::new(*n as i64).encode(family.encode_family(&[("service", service.as_str())])?)?;
            }
        }
        let help = "Live leases in this dev registry.";
        ConstGauge::new(leases as i64).encode(encoder.encode_descriptor(
            "registry_leases",
            help,
            None,
            MetricType::Gauge,
        )?)?;
        let help = "Seconds from a change of a service's instances to a waiting watch receiving it.";
        let lag =
            encoder.encode_descriptor("registry_watch_lag_seconds", help, None, MetricType::Histogram)?;
        self.registry.shared.watch_lag.encode(lag)
    }
}

impl Registry for MemoryRegistry {
    fn register(&self, instance: &Instance, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, Status>> {
        std::future::ready(self.register_now(instance, ttl)).boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>> {
        std::future::ready(self.keep_alive_now(lease)).boxed()
    }

    fn deregister(&self, instance: &Instance, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>> {
        std::future::ready(self.deregister_now(instance, lease)).boxed()
    }

    fn list(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Status>> {
        std::future::ready(Ok(self.snapshot(service))).boxed()
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        std::future::ready(Ok(self.service_names())).boxed()
    }

    fn leases(&self, service: &str) -> BoxFuture<'_, Result<Vec<LeasedInstance>, Status>> {
        std::future::ready(Ok(self.leases_now(service))).boxed()
    }

    fn watch_next(
        &self,
        service: &str,
        after: Cursor,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Snapshot, Status>> {
        let service = service.to_string();
        async move { Ok(self.next_snapshot(&service, after, max_wait).await) }.boxed()
    }
}
