//! Load balancing over a discovered service: the live instance set from a
//! [`crate::discovery::Watch`], a [`Strategy`] to pick among it, and passive health
//! (instances that keep failing are ejected for a doubling back-off, never more than
//! half of them at once).

mod endpoint;
mod picker;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use endpoint::counts_as_failure;
pub use endpoint::{Endpoint, InstanceStats};
pub use picker::{Picker, Strategy};

use crate::client::ClientConfig;
use crate::discovery::{Instance, Registry, Snapshot, Watch};

/// Longest wait for a removed instance's calls in flight before its connections close.
const RETIRE_WAIT: Duration = Duration::from_secs(30);

/// After the registry's epoch changes (a dev registry restarted empty), instances it
/// no longer lists are kept this long: their servers register again within a third of
/// their TTL (10 s by default), and dropping them meanwhile would stop every call.
const EPOCH_GRACE: Duration = Duration::from_secs(10);

/// The balanced side of a discovered client: the current picker, rebuilt on every
/// instance-set change.
pub(crate) struct Balanced {
    pub(crate) service: String,
    strategy: Strategy,
    filter: BTreeMap<String, String>,
    config: ClientConfig,
    picker: RwLock<Arc<Picker>>,
    /// Bumped on every new instance set (calls waiting for an instance watch it).
    generation: watch::Sender<u64>,
    follower: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The registry epoch of the last snapshot, and until when a change of epoch keeps
    /// unlisted instances (see [`EPOCH_GRACE`]).
    epoch: std::sync::Mutex<(u64, Option<Instant>)>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").field("service", &self.service).field("strategy", &self.strategy).finish()
    }
}

impl Drop for Balanced {
    fn drop(&mut self) {
        if let Some(f) = self.follower.lock().unwrap_or_else(|e| e.into_inner()).take() {
            f.abort();
        }
        let picker = self.picker.read().unwrap_or_else(|e| e.into_inner()).clone();
        for e in &picker.endpoints {
            e.pool.close();
        }
    }
}

impl Balanced {
    /// Starts following `service` in `registry`.
    pub(crate) fn start(
        service: &str,
        registry: Arc<dyn Registry>,
        strategy: Strategy,
        filter: BTreeMap<String, String>,
        config: ClientConfig,
    ) -> Arc<Balanced> {
        let watch = Watch::start(registry, service);
        let (generation, _) = watch::channel(0);
        let balanced = Arc::new(Balanced {
            service: service.to_string(),
            strategy,
            filter,
            config,
            picker: RwLock::new(Arc::new(Picker::new(strategy, Vec::new()))),
            generation,
            follower: std::sync::Mutex::new(None),
            epoch: std::sync::Mutex::new((0, None)),
        });
        // Spawned only once the Arc exists: a follower started earlier could find its
        // weak reference dead and quit (the first snapshot can arrive at once).
        let weak = Arc::downgrade(&balanced);
        let follower = tokio::spawn(async move {
            let mut rx = watch.receiver();
            let _keep = watch; // the background watch lives as long as this task
            loop {
                let snap = rx.borrow_and_update().clone();
                let mut grace_until = None;
                if let Some(snap) = snap {
                    let Some(me) = weak.upgrade() else { return };
                    grace_until = me.apply(&snap);
                }
                // A grace period ending is a change too: apply the latest set again then.
                let grace = async {
                    match grace_until {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = grace => rx.mark_changed(),
                }
            }
        });
        *balanced.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(follower);
        balanced
    }

    /// The current picker.
    pub(crate) fn picker(&self) -> Arc<Picker> {
        self.picker.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A receiver that changes whenever the instance set does.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Installs a new instance set: endpoints of instances still present are kept
    /// (with their connections and statistics); removed ones get no new calls, finish
    /// those in flight, and stop reconnecting. Returns when to apply the set again if a
    /// registry restart's grace period is running.
    fn apply(&self, snap: &Snapshot) -> Option<Instant> {
        let now = Instant::now();
        let grace_until = {
            let mut epoch = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
            if epoch.0 != 0 && epoch.0 != snap.cursor.epoch {
                tracing::info!(service = %self.service, "the registry restarted: keeping the known instances for {EPOCH_GRACE:?}");
                epoch.1 = Some(now + EPOCH_GRACE);
            }
            epoch.0 = snap.cursor.epoch;
            epoch.1.filter(|t| *t > now)
        };
        let wanted: Vec<&Instance> = snap.instances.iter().filter(|i| i.matches(&self.filter)).collect();
        let old = self.picker();
        let mut by_key: HashMap<(&str, &str), &Arc<Endpoint>> =
            old.endpoints.iter().map(|e| ((e.instance.id.as_str(), e.instance.addr.as_str()), e)).collect();
        let mut endpoints = Vec::with_capacity(wanted.len());
        for inst in wanted {
            match by_key.remove(&(inst.id.as_str(), inst.addr.as_str())) {
                Some(e) if e.instance == *inst => endpoints.push(e.clone()),
                Some(e) => {
                    // Same instance, new labels (e.g. weight): keep nothing stale.
                    retire(e.clone());
                    endpoints.push(Arc::new(Endpoint::new(inst.clone(), &self.config)));
                }
                None => endpoints.push(Arc::new(Endpoint::new(inst.clone(), &self.config))),
            }
        }
        for (_, gone) in by_key {
            if grace_until.is_some() {
                endpoints.push(gone.clone()); // not listed by the restarted registry yet
                continue;
            }
            tracing::debug!(service = %self.service, id = %gone.instance.id, "instance left discovery");
            retire(gone.clone());
        }
        let picker = Arc::new(Picker::new(self.strategy, endpoints));
        *self.picker.write().unwrap_or_else(|e| e.into_inner()) = picker;
        self.generation.send_modify(|g| *g += 1);
        grace_until
    }

    /// Records a failed call on endpoint `i` of `picker`; ejects it if it keeps failing
    /// and at most half of the instances would then be ejected.
    pub(crate) fn failed(&self, picker: &Picker, i: usize, now: Instant) {
        let Some(e) = picker.endpoints.get(i) else { return };
        if !e.failed(now) {
            return;
        }
        let n = picker.endpoints.len();
        let ejected = picker.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        if (ejected + 1) * 2 <= n {
            let d = e.eject(now);
            if crate::metrics::ENABLED {
                crate::metrics::ClientMetrics::global()
                    .count(&e.instance.service, crate::metrics::Event::Ejection);
            }
            tracing::info!(service = %self.service, id = %e.instance.id, "instance ejected for {d:?} after repeated failures");
        }
    }
}

/// Stops new calls to a removed endpoint; closes its connections once its calls in
/// flight are done (or after [`RETIRE_WAIT`]).
fn retire(e: Arc<Endpoint>) {
    e.retired.store(true, std::sync::atomic::Ordering::Release);
    e.pool.stop_reconnecting();
    tokio::spawn(async move {
        let until = Instant::now() + RETIRE_WAIT;
        while e.pool.snapshot().1 > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        e.pool.close();
    });
}
