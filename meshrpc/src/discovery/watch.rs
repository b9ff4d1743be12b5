//! [`Watch`]: a service's live instance set, kept current by a background task that
//! long-polls the registry and keeps the last known set while the registry is away.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::instance::{Cursor, Snapshot};
use super::registry::Registry;
use crate::client::Backoff;

/// How long one long poll waits for a change before asking again.
const POLL_WAIT: Duration = Duration::from_secs(20);

/// The shortest time between two long polls that brought nothing new.
const MIN_POLL: Duration = Duration::from_millis(100);

/// The latest known snapshot of one service; cheap to clone.
///
/// The task behind it ends when every clone is dropped. When the registry cannot be
/// reached, the last snapshot stays (calls keep going to the known instances) and the
/// task retries with backoff; it catches up with one whole snapshot when the registry
/// answers again.
#[derive(Debug, Clone)]
pub struct Watch {
    rx: watch::Receiver<Option<Snapshot>>,
}

impl Watch {
    /// Starts watching `service` in `registry`.
    pub fn start(registry: Arc<dyn Registry>, service: &str) -> Watch {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow(registry, service.to_string(), tx));
        Watch { rx }
    }

    /// The latest snapshot, if one has arrived yet.
    pub fn latest(&self) -> Option<Snapshot> {
        self.rx.borrow().clone()
    }

    /// Waits for the first snapshot (at most `timeout`).
    pub async fn ready(&mut self, timeout: Duration) -> Option<Snapshot> {
        let r = tokio::time::timeout(timeout, self.rx.wait_for(Option::is_some)).await;
        r.ok().and_then(|r| r.ok()).and_then(|s| s.clone())
    }

    /// Waits for the next snapshot different from the last one seen through this handle.
    /// `None` if the watch ended.
    pub async fn changed(&mut self) -> Option<Snapshot> {
        self.rx.changed().await.ok()?;
        self.rx.borrow_and_update().clone()
    }

    /// A receiver of every snapshot (for `tokio::select!` and streams).
    pub fn receiver(&self) -> watch::Receiver<Option<Snapshot>> {
        self.rx.clone()
    }
}

async fn follow(registry: Arc<dyn Registry>, service: String, tx: watch::Sender<Option<Snapshot>>) {
    let backoff = Backoff::default();
    let mut failures = 0u32;
    let mut cursor = Cursor::default();
    loop {
        let asked = tokio::time::Instant::now();
        let next = tokio::select! {
            _ = tx.closed() => return,
            r = registry.watch_next(&service, cursor, POLL_WAIT) => r,
        };
        match next {
            Ok(snap) => {
                failures = 0;
                let changed = snap.cursor != cursor || tx.borrow().is_none();
                cursor = snap.cursor;
                if !changed && asked.elapsed() < MIN_POLL {
                    // A long poll answered at once with nothing new (a registry that is
                    // stopping does): pause, so this loop never hammers it.
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep_until(asked + MIN_POLL) => {}
                    }
                }
                if changed {
                    tx.send_if_modified(|cur| {
                        let differs = cur.as_ref() != Some(&snap);
                        if differs {
                            *cur = Some(snap);
                        }
                        differs
                    });
                }
            }
            Err(e) => {
                failures += 1;
                let wait = backoff.delay(failures);
                tracing::debug!(%service, "registry watch failed ({e}); keeping the last known instances, retrying in {wait:?}");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
