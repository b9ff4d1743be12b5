//! [`CallOptions`]: per-call settings.

use std::time::Duration;

use bytes::Bytes;

use crate::codec::Codec;
use crate::wire::Metadata;

/// Per-call settings: deadline, codec, idempotency and metadata.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) codec: Option<Codec>,
    pub(crate) idempotent: bool,
    pub(crate) metadata: Metadata,
    pub(crate) wait_for_ready: bool,
    pub(crate) hash_key: Option<Bytes>,
    pub(crate) hedge: Option<Duration>,
}

impl CallOptions {
    /// Defaults: no timeout beyond the client's default, the client's codec.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The call fails with `DEADLINE_EXCEEDED` if not answered within `timeout`; the
    /// server is told the remaining budget and stops the handler when it runs out.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Encodes this call with `codec` instead of the client's default.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// Declares the method idempotent: safe to retry or hedge (sent as a frame flag).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Adds a metadata pair (keys ≤ 255 bytes, values ≤ 65,535 bytes; longer ones are
    /// dropped with a warning).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        if let Err(e) = self.metadata.insert(key, value) {
            tracing::warn!("metadata dropped: {e}");
        }
        self
    }

    /// While the connection is down, wait (within the deadline) for it to come back
    /// instead of failing at once with UNAVAILABLE (gRPC's `wait_for_ready`).
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = wait;
        self
    }

    /// The key consistent hashing routes this call by (discovered clients using
    /// `Strategy::ConsistentHash`): calls with the same key go to the same instance.
    pub fn hash_key(mut self, key: impl Into<Bytes>) -> Self {
        self.hash_key = Some(key.into());
        self
    }

    /// Hedges this call (discovered clients, idempotent calls only): if no answer came
    /// `after` this long, a backup is sent to another instance and the first answer
    /// wins. Backups draw on the client's retry budget.
    pub fn hedge(mut self, after: Duration) -> Self {
        self.hedge = Some(after);
        self
    }

    /// The timeout set on this call, if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the call is marked idempotent.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }
}
