//! [`Instance`] and [`Snapshot`]: what a registry holds and hands out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One running replica of a service, as announced in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Instance {
    /// The RPC service name, exactly as on the wire (`Calculator`).
    pub service: String,
    /// Unique among the service's instances (e.g. `calc-7f3a`).
    pub id: String,
    /// Where it serves RPC: `host:port`.
    pub addr: String,
    /// Its HTTP admin endpoint (`/metrics`, `/healthz`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// Free-form labels; `version`, `zone` and `weight` have meaning to balancers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Instance {
    /// An instance of `service` with id `id` serving at `addr`.
    pub fn new(service: impl Into<String>, id: impl Into<String>, addr: impl Into<String>) -> Instance {
        Instance {
            service: service.into(),
            id: id.into(),
            addr: addr.into(),
            admin_addr: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Adds a metadata label.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Instance {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the admin endpoint's address.
    pub fn with_admin_addr(mut self, addr: impl Into<String>) -> Instance {
        self.admin_addr = Some(addr.into());
        self
    }

    /// The `weight` label (default 1; 0 takes no traffic from weighted balancing).
    pub fn weight(&self) -> u32 {
        self.metadata.get("weight").and_then(|w| w.parse().ok()).unwrap_or(1)
    }

    /// True if every `(key, value)` of `filter` is among this instance's labels.
    pub fn matches(&self, filter: &BTreeMap<String, String>) -> bool {
        filter.iter().all(|(k, v)| self.metadata.get(k) == Some(v))
    }
}

/// Where a watcher stands in a registry's history: snapshots of a service are ordered
/// by `revision` within one `epoch` (an epoch changes when a dev registry restarts and
/// its revisions start over, so a watcher never waits for a revision that will not come).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Identifies the registry's history (random per dev-registry process; etcd's cluster id).
    pub epoch: u64,
    /// The revision of the last change seen.
    pub revision: u64,
}

/// A service's instance set at one revision: a watch yields whole snapshots, so a
/// watcher that missed changes (a reconnect) simply takes the next one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The service.
    pub service: String,
    /// Where this snapshot stands in the registry's history.
    pub cursor: Cursor,
    /// Its live instances, sorted by id.
    pub instances: Vec<Instance>,
}

/// An instance with what its registry knows of its lease (for dashboards and `meshrpc
/// list`); `lease` is `None` where the backend does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedInstance {
    /// The instance.
    pub instance: Instance,
    /// Its lease, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseInfo>,
}

impl LeasedInstance {
    /// A snapshot's instances with no lease details (for backends that do not say).
    pub(crate) fn unknown_leases(snap: Snapshot) -> Vec<LeasedInstance> {
        snap.instances.into_iter().map(|instance| LeasedInstance { instance, lease: None }).collect()
    }
}

/// A lease's age and time to live, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease's TTL.
    pub ttl_ms: u64,
    /// Time since the instance was registered.
    pub age_ms: u64,
    /// Time since the lease was last renewed.
    pub renewed_ms_ago: u64,
    /// Time left before it expires unless renewed.
    pub expires_in_ms: u64,
}
