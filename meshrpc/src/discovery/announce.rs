//! [`Announcement`]: keeps a server's instances registered: registers them, renews
//! their lease, registers again when the lease is lost, deregisters on request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::instance::Instance;
use super::registry::{LeaseId, Registry};
use crate::client::Backoff;
use crate::status::Code;

/// The shortest pause between two rounds of renewals (registries clamp TTLs to at
/// least 100 ms, so a third of that).
const MIN_RENEW_EVERY: Duration = Duration::from_millis(33);

/// The default lease TTL: a crashed server disappears this long after it died.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Instances kept registered by a background task until [`Announcement::withdraw`]
/// (or drop, which stops renewing and lets the leases expire).
#[derive(Debug)]
pub struct Announcement {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    registered: Arc<AtomicBool>,
}

impl Announcement {
    /// Starts announcing `instances` in `registry` with leases of `ttl`, renewed every
    /// third of it.
    pub fn start(registry: Arc<dyn Registry>, instances: Vec<Instance>, ttl: Duration) -> Announcement {
        let (stop, stop_rx) = watch::channel(false);
        let registered = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(keep(registry, instances, ttl, stop_rx, registered.clone()));
        Announcement { stop, task: Some(task), registered }
    }

    /// True while every instance holds a lease (false until the first registration
    /// succeeded, and while one is being registered again).
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// Deregisters every instance (best effort, within `timeout`) and stops renewing.
    pub async fn withdraw(mut self, timeout: Duration) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn keep(
    registry: Arc<dyn Registry>,
    instances: Vec<Instance>,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
    registered: Arc<AtomicBool>,
) {
    let backoff = Backoff::new(Duration::from_millis(100), ttl.max(Duration::from_secs(1)));
    let mut leases: Vec<Option<LeaseId>> = vec![None; instances.len()];
    let mut failures = 0u32;
    loop {
        let mut all_ok = true;
        for (inst, lease) in instances.iter().zip(leases.iter_mut()) {
            let result = match *lease {
                Some(id) => match registry.keep_alive(id).await {
                    Err(e) if e.code() == Code::NotFound => {
                        tracing::info!(service = %inst.service, id = %inst.id, "lease lost ({e}); registering again");
                        *lease = None;
                        registry.register(inst, ttl).await.map(|id| *lease = Some(id))
                    }
                    other => other,
                },
                None => registry.register(inst, ttl).await.map(|id| *lease = Some(id)),
            };
            if let Err(e) = result {
                all_ok = false;
                tracing::debug!(service = %inst.service, "registry unreachable ({e}); retrying");
            }
        }
        registered.store(leases.iter().all(Option::is_some), Ordering::Release);
        // Never a loop without a pause, whatever TTL was asked for (0 included).
        let renew_every = (ttl / 3).max(MIN_RENEW_EVERY);
        let wait = if all_ok {
            failures = 0;
            renew_every
        } else {
            failures += 1;
            backoff.delay(failures).clamp(MIN_RENEW_EVERY, renew_every)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    registered.store(false, Ordering::Release);
    for (inst, lease) in instances.iter().zip(leases) {
        if let Some(id) = lease
            && let Err(e) = registry.deregister(inst, id).await
        {
            tracing::debug!(service = %inst.service, "deregistration failed ({e}); the lease will expire");
        }
    }
}
