//! [`WaitGroup`]: Go's `sync.WaitGroup` for async Rust, as a thin face over
//! `tokio_util::task::TaskTracker`.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

/// Waits for a group of tasks or units of work to finish, like Go's `sync.WaitGroup`.
///
/// There is no `done()` to forget or call twice: [`WaitGroup::add`] returns a guard whose
/// drop counts as done (also when the work panics), and [`WaitGroup::spawn`] counts a
/// task until it ends. Cloning gives another handle to the same group.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// let wg = meshrpc::fanout::WaitGroup::new();
/// let total = Arc::new(AtomicU32::new(0));
/// for i in 1..=3 {
///     let total = total.clone();
///     wg.spawn(async move { total.fetch_add(i, Ordering::Relaxed); });
/// }
/// wg.wait().await;
/// assert_eq!(total.load(Ordering::Relaxed), 6);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct WaitGroup {
    tracker: TaskTracker,
}

/// One unit of work counted by a [`WaitGroup`]; dropping it is Go's `Done()`.
#[derive(Debug)]
#[must_use = "the work counts as done as soon as the guard is dropped"]
pub struct WaitGuard {
    _token: TaskTrackerToken,
}

impl WaitGroup {
    /// An empty group.
    pub fn new() -> WaitGroup {
        WaitGroup::default()
    }

    /// Counts one unit of work until the returned guard is dropped (Go's `Add(1)`).
    pub fn add(&self) -> WaitGuard {
        WaitGuard { _token: self.tracker.token() }
    }

    /// Spawns `fut` on the current tokio runtime, counted until it ends.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Units of work and tasks not finished yet.
    pub fn pending(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every guard is dropped and every spawned task has ended (Go's
    /// `Wait()`). Work added while waiting is waited for too; the group can be reused,
    /// and any number of tasks may wait at once.
    pub async fn wait(&self) {
        // A tracker's `wait` returns once it is closed and empty; closing changes nothing
        // else (tokens and spawns still count), so the group stays closed for good.
        self.tracker.close();
        self.tracker.wait().await;
    }
}
