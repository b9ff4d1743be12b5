//! Service discovery: instances registered under leases, listed and watched by service
//! name (the RPC service name exactly as on the wire, `Calculator`).
//!
//! - [`Registry`]: the trait every backend implements.
//! - [`MemoryRegistry`]: in-process; [`DevRegistry`]: the `meshrpc registry` process
//!   (one machine, zero set-up); `EtcdRegistry` with the `etcd` feature (clusters).
//! - [`Watch`]: a service's live instance set, kept current in the background; the
//!   last known set survives a registry outage.
//! - [`Announcement`]: keeps a server's instances registered (the server builder's
//!   `registry(..)` does this for you).

mod announce;
pub(crate) mod dev;
#[cfg(feature = "etcd")]
mod etcd;
mod instance;
mod memory;
mod registry;
mod watch;

pub use announce::{Announcement, DEFAULT_TTL};
pub use dev::{DevRegistry, REGISTRY_SERVICE};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdRegistry, KEY_PREFIX};
pub use instance::{Cursor, Instance, LeaseInfo, LeasedInstance, Snapshot};
pub use memory::MemoryRegistry;
pub use registry::{LeaseId, Registry};
pub use watch::Watch;
