//! [`QueueBudget`]: a bound on the unsent bytes of many outboxes together (a server's
//! connections), with a wake-up for whoever enforces it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Unsent bytes across outboxes, against a limit. Outboxes count their bytes in it; it
/// only reports going over the limit (the server decides what to drop).
#[derive(Debug)]
pub(crate) struct QueueBudget {
    /// Bytes counted now (shared with the metrics, which export it as a gauge).
    total: Arc<AtomicUsize>,
    limit: usize,
    /// Notified whenever a push takes the total over the limit.
    over: Notify,
}

impl QueueBudget {
    /// A budget of `limit` bytes counted in `total`.
    pub(crate) fn new(limit: usize, total: Arc<AtomicUsize>) -> QueueBudget {
        QueueBudget { total, limit, over: Notify::new() }
    }

    /// Records that an outbox went from holding `before` bytes to `after`.
    pub(crate) fn adjust(&self, before: usize, after: usize) {
        if after > before {
            let now = self.total.fetch_add(after - before, Ordering::AcqRel) + (after - before);
            if now > self.limit {
                self.over.notify_one();
            }
        } else if before > after {
            self.total.fetch_sub(before - after, Ordering::AcqRel);
        }
    }

    /// Bytes counted now.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Resolves when the total is over the limit (at once if it already is).
    pub(crate) async fn over_limit(&self) {
        loop {
            let notified = self.over.notified();
            if self.total() > self.limit {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_and_reports_going_over() {
        let total = Arc::new(AtomicUsize::new(0));
        let b = QueueBudget::new(100, total.clone());
        b.adjust(0, 60);
        b.adjust(10, 50); // an outbox shrank by 10
        assert_eq!(b.total(), 100);
        let over = tokio::time::timeout(std::time::Duration::from_millis(20), b.over_limit()).await;
        assert!(over.is_err(), "at the limit is not over it");
        b.adjust(0, 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), b.over_limit())
            .await
            .expect("over the limit");
        b.adjust(101, 0);
        assert_eq!(total.load(Ordering::Acquire), 0);
    }
}
