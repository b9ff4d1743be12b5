//! The server-wide bound on queued reply bytes: a list of the live connections and the
//! task that drops the ones holding the most unread replies when the bound is passed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::transport::QueueBudget;

/// What the guard needs of a connection.
pub(crate) trait Sheddable: Send + Sync + 'static {
    /// Reply bytes queued for the peer and not yet written to its socket.
    fn unsent(&self) -> usize;
    /// True once the connection can send nothing more (closed, failed or already shed).
    fn is_gone(&self) -> bool;
    /// Drops the connection, freeing its queued replies; `why` goes in its GOAWAY.
    fn shed(&self, why: String);
}

/// The server's live connections, so the guard can find the largest.
pub(crate) struct Connections<C> {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Weak<C>>>,
}

impl<C> std::fmt::Debug for Connections<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

impl<C> Default for Connections<C> {
    fn default() -> Self {
        Connections { next: AtomicU64::new(0), live: Mutex::new(HashMap::new()) }
    }
}

/// Keeps a connection listed until dropped.
pub(crate) struct Listed<'a, C> {
    list: &'a Connections<C>,
    id: u64,
}

impl<C> Drop for Listed<'_, C> {
    fn drop(&mut self) {
        self.list.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl<C: Sheddable> Connections<C> {
    /// Lists `conn` while the returned guard lives.
    pub(crate) fn add(&self, conn: &Arc<C>) -> Listed<'_, C> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::downgrade(conn));
        Listed { list: self, id }
    }

    /// Drops the connections holding the most unsent bytes until what they held brings
    /// the total back under the limit. Returns how many it dropped.
    pub(crate) fn shed_largest(&self, budget: &QueueBudget) -> usize {
        let (total, limit) = (budget.total(), budget.limit());
        if total <= limit {
            return 0;
        }
        let listed: Vec<Arc<C>> =
            self.live.lock().unwrap_or_else(|e| e.into_inner()).values().filter_map(Weak::upgrade).collect();
        // Connections already dropped still count what their writers hold until those
        // tasks run: that is on its way out, so it does not call for dropping more.
        let leaving: usize = listed.iter().filter(|c| c.is_gone()).map(|c| c.unsent()).sum();
        let mut holders: Vec<(usize, Arc<C>)> = listed
            .into_iter()
            .filter(|c| !c.is_gone())
            .map(|c| (c.unsent(), c))
            .filter(|(n, _)| *n > 0)
            .collect();
        holders.sort_by_key(|h| std::cmp::Reverse(h.0));
        let mut left = total.saturating_sub(leaving);
        let mut dropped = 0;
        for (held, conn) in holders {
            if left <= limit {
                break;
            }
            conn.shed(format!(
                "the server dropped this connection: it held {held} bytes of replies the client \
                 did not read, and the server's queued replies ({total} bytes) passed its limit of \
                 {limit} bytes; read replies as they come, or use a connection per stream of work"
            ));
            tracing::warn!(
                unsent_bytes = held,
                total_bytes = total,
                limit_bytes = limit,
                "dropped a connection that was not reading its replies: the server-wide queued-bytes limit was passed"
            );
            left = left.saturating_sub(held);
            dropped += 1;
        }
        dropped
    }
}

/// Pause between two rounds while the total stays over the limit: dropped connections
/// free what their writers held when those tasks next run, so the guard gives them
/// that moment instead of dropping more at once (and never spins).
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// Runs until `stop`: whenever the budget goes over its limit, sheds connections and
/// tells `on_shed` how many.
pub(crate) async fn guard<C: Sheddable>(
    list: Weak<Connections<C>>,
    budget: Arc<QueueBudget>,
    stop: CancellationToken,
    on_shed: impl Fn(usize),
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = budget.over_limit() => {}
        }
        let Some(list) = list.upgrade() else { return };
        on_shed(list.shed_largest(&budget));
        drop(list);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ROUND_PAUSE) => {}
        }
    }
}
