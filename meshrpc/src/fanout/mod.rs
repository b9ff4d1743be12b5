//! Fan-out: call several services at once and wait for them, Go style.
//!
//! - [`WaitGroup`]: wait for a set of tasks; a guard's drop is `Done()`.
//! - [`all`]: every result, each its own `Result`; one failure never cancels the others.
//! - [`quorum`]: the first `k` successes; fails fast once `k` is out of reach.
//! - [`first_ok`]: the first success.
//! - [`hedged`]: staggered attempts of idempotent work, the first success wins.
//!
//! They take any futures returning `Result<T, E>` with `E: Into<Status>`: RPC calls,
//! HTTP requests, anything. One deadline bounds a group; stragglers are cancelled.

mod gather;
mod wait_group;

pub use gather::{All, FirstOk, GatherFuture, Hedged, Quorum, all, first_ok, hedged, quorum};
pub use wait_group::{WaitGroup, WaitGuard};
