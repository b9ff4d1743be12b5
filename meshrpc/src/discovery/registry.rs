//! The [`Registry`] trait: what every discovery backend offers.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::instance::{Cursor, Instance, LeasedInstance, Snapshot};
use crate::status::Status;

/// A lease: the registration lives while the lease is kept alive.
pub type LeaseId = u64;

/// A service registry: instances registered under leases with a TTL, listed and watched
/// by service name. Implemented by [`super::MemoryRegistry`] (in-process),
/// [`super::DevRegistry`] (the `meshrpc registry` process) and, with the `etcd` feature,
/// `EtcdRegistry`.
///
/// Errors: `UNAVAILABLE` when the registry cannot be reached (callers keep what they
/// know and try again), `NOT_FOUND` for a lease that expired or was revoked (the owner
/// registers again).
pub trait Registry: Send + Sync + 'static {
    /// Registers `instance` under a new lease that expires `ttl` after its last renewal.
    fn register(&self, instance: &Instance, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, Status>>;

    /// Renews a lease; `NOT_FOUND` if it is gone.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>>;

    /// Removes `instance` and revokes its lease.
    fn deregister(&self, instance: &Instance, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>>;

    /// The live instances of `service` now.
    fn list(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Status>>;

    /// Every service with at least one live instance, sorted.
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, Status>>;

    /// The first snapshot of `service` newer than `after`, waiting up to `max_wait` for
    /// one (long poll); after that wait, the current snapshot (possibly unchanged).
    /// A cursor from another epoch gets the current snapshot at once.
    fn watch_next(
        &self,
        service: &str,
        after: Cursor,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Snapshot, Status>>;

    /// The live instances of `service` with their leases' age and TTL where the backend
    /// knows them (the default: [`Registry::list`] without lease details).
    fn leases(&self, service: &str) -> BoxFuture<'_, Result<Vec<LeasedInstance>, Status>> {
        let list = self.list(service);
        Box::pin(async move { Ok(LeasedInstance::unknown_leases(list.await?)) })
    }
}
