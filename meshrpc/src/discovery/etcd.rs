//! [`EtcdRegistry`]: the registry for real clusters, on etcd's leases and prefix
//! watches (feature `etcd`).
//!
//! Key layout: `/meshrpc/services/{service}/{instance id}` → the [`Instance`] as JSON,
//! attached to the instance's lease. A lease is granted with the instance's TTL
//! (rounded up to whole seconds, at least 2 s) and renewed by the server every third of
//! it; when the server dies, etcd deletes the key when the lease expires. A watch is a
//! prefix watch on `/meshrpc/services/{service}/` from the watcher's revision + 1; the
//! cursor's epoch is the cluster id, its revision etcd's store revision.
//!
//! Streams (keep-alive, watch) die with the member serving them; every operation here
//! opens what it needs and a failure is `UNAVAILABLE`, so callers (the announcement
//! and the watch loops) simply try again, and the client, built with every endpoint,
//! moves to a live member.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{
    Client as Etcd, ConnectOptions, Error as EtcdError, EventType, GetOptions, PutOptions, WatchOptions,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::instance::{Cursor, Instance, Snapshot};
use super::registry::{LeaseId, Registry};
use crate::status::Status;

/// Where every service's instances live in etcd.
pub const KEY_PREFIX: &str = "/meshrpc/services/";

/// Deadline of one etcd request (not watches).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A [`Registry`] on an etcd cluster.
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Etcd,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

/// An etcd failure as a status: "not found" (an expired or revoked lease) is
/// `NOT_FOUND`, so its owner registers again; anything else is `UNAVAILABLE`.
fn unavailable(what: &str, e: EtcdError) -> Status {
    // gRPC's NOT_FOUND is code 5; a keep-alive on a dead lease fails with its own error.
    let gone = match &e {
        EtcdError::GRpcStatus(s) => s.code() as i32 == 5,
        EtcdError::LeaseKeepAliveError(m) => m.contains("not found"),
        _ => false,
    };
    if gone {
        return Status::not_found(format!("etcd: {what}: {e}: register again"));
    }
    Status::unavailable(format!("etcd: {what} failed: {e}"))
}

fn service_prefix(service: &str) -> String {
    format!("{KEY_PREFIX}{service}/")
}

/// The key of `instance`.
fn key(instance: &Instance) -> String {
    format!("{KEY_PREFIX}{}/{}", instance.service, instance.id)
}

async fn timed<T>(what: &str, f: impl Future<Output = Result<T, EtcdError>>) -> Result<T, Status> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| unavailable(what, e)),
        Err(_) => Err(Status::unavailable(format!("etcd: {what} got no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

/// Runs one etcd request, trying again for up to ~1.5 s (50 ms doubling) when it could
/// not reach a member: etcd-client balances requests over every endpoint and may still
/// pick one that died or is reconnecting, failing a request the others could serve.
async fn request<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(s) if s.code() == crate::status::Code::Unavailable && pause <= Duration::from_millis(800) => {
                tracing::debug!("etcd: {what} failed ({s}); trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

impl EtcdRegistry {
    /// Connects to an etcd cluster; `endpoints` are `host:port` (or `http://host:port`)
    /// of its members, comma-separated or one per item. Fails if none answers.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<EtcdRegistry, Status> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .flat_map(|e| {
                e.as_ref()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        if endpoints.is_empty() {
            return Err(Status::invalid_argument("no etcd endpoints given"));
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(30))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let client =
            tokio::time::timeout(Duration::from_secs(5), Etcd::connect(endpoints.clone(), Some(opts)))
                .await
                .map_err(|_| Status::unavailable(format!("etcd at {endpoints:?} did not answer within 5 s")))?
                .map_err(|e| unavailable(&format!("connecting to {endpoints:?}"), e))?;
        Ok(EtcdRegistry { client, endpoints })
    }

    async fn snapshot(&self, service: &str) -> Result<Snapshot, Status> {
        let mut c = self.client.clone();
        let resp =
            timed("list", c.get(service_prefix(service), Some(GetOptions::new().with_prefix()))).await?;
        let header = resp.header().ok_or_else(|| Status::unavailable("etcd: a response without a header"))?;
        let cursor = Cursor { epoch: header.cluster_id(), revision: header.revision().max(0) as u64 };
        let mut instances: Vec<Instance> =
            resp.kvs().iter().filter_map(|kv| serde_json::from_slice::<Instance>(kv.value()).ok()).collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Snapshot { service: service.to_string(), cursor, instances })
    }

    /// Waits up to `max_wait` for a change under the service's prefix after `after`;
    /// true if one happened (or the history is gone: compacted).
    async fn changed_since(&self, service: &str, after: Cursor, max_wait: Duration) -> Result<bool, Status> {
        // Dropping the stream ends the watch on the server.
        let mut stream = request("watch", || {
            let mut c = self.client.clone();
            let opts = WatchOptions::new().with_prefix().with_start_revision(after.revision as i64 + 1);
            async move { timed("watch", c.watch(service_prefix(service), Some(opts))).await }
        })
        .await?;
        let outcome = tokio::time::timeout(max_wait, async {
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 || resp.canceled() {
                            return Ok(true); // history compacted: resync with a fresh list
                        }
                        if resp
                            .events()
                            .iter()
                            .any(|e| matches!(e.event_type(), EventType::Put | EventType::Delete))
                        {
                            return Ok(true);
                        }
                    }
                    Ok(None) => return Err(Status::unavailable("etcd: the watch stream ended")),
                    Err(e) => return Err(unavailable("watch", e)),
                }
            }
        })
        .await;
        drop(stream);
        match outcome {
            Ok(r) => r,
            Err(_) => Ok(false),
        }
    }
}

impl Registry for EtcdRegistry {
    fn register(&self, instance: &Instance, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, Status>> {
        let instance = instance.clone();
        async move {
            if instance.service.is_empty() || instance.id.is_empty() || instance.addr.is_empty() {
                return Err(Status::invalid_argument(
                    "an instance needs a service name, an id and an address",
                ));
            }
            let secs = ttl.as_secs_f64().ceil().max(2.0) as i64;
            let lease = request("lease grant", || {
                let mut c = self.client.clone();
                async move { timed("lease grant", c.lease_grant(secs, None)).await }
            })
            .await?
            .id();
            let value = serde_json::to_vec(&instance).map_err(|e| Status::internal(e.to_string()))?;
            request("put", || {
                let (mut c, value) = (self.client.clone(), value.clone());
                let k = key(&instance);
                async move { timed("put", c.put(k, value, Some(PutOptions::new().with_lease(lease)))).await }
            })
            .await?;
            Ok(lease as LeaseId)
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>> {
        async move {
            request("lease keep-alive", || async {
                let mut c = self.client.clone();
                let (mut keeper, mut stream) =
                    timed("lease keep-alive", c.lease_keep_alive(lease as i64)).await?;
                timed("lease keep-alive", keeper.keep_alive()).await?;
                match timed("lease keep-alive", stream.message()).await? {
                    Some(r) if r.ttl() > 0 => Ok(()),
                    Some(_) => Err(Status::not_found(format!(
                        "etcd lease {lease:x} expired or was revoked: register again"
                    ))),
                    None => Err(Status::unavailable("etcd: the keep-alive stream ended")),
                }
            })
            .await
        }
        .boxed()
    }

    fn deregister(&self, _instance: &Instance, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>> {
        async move {
            // Revoking the lease deletes exactly the keys put under it: never a newer
            // registration of the same id by another process (a rolling restart on the
            // same address) under its own lease. A lease already gone is fine.
            let revoked = request("lease revoke", || {
                let mut c = self.client.clone();
                async move { timed("lease revoke", c.lease_revoke(lease as i64)).await }
            })
            .await;
            match revoked {
                Ok(_) => Ok(()),
                Err(s) if s.code() == crate::status::Code::NotFound => Ok(()),
                Err(s) => Err(s),
            }
        }
        .boxed()
    }

    fn list(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Status>> {
        let service = service.to_string();
        async move { self.snapshot(&service).await }.boxed()
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        async move {
            let resp = request("list services", || {
                let mut c = self.client.clone();
                async move {
                    timed(
                        "list services",
                        c.get(KEY_PREFIX, Some(GetOptions::new().with_prefix().with_keys_only())),
                    )
                    .await
                }
            })
            .await?;
            let names: BTreeSet<String> = resp
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok())
                .filter_map(|k| k.strip_prefix(KEY_PREFIX)?.split_once('/').map(|(s, _)| s.to_string()))
                .collect();
            Ok(names.into_iter().collect())
        }
        .boxed()
    }

    fn watch_next(
        &self,
        service: &str,
        after: Cursor,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Snapshot, Status>> {
        let service = service.to_string();
        async move {
            let now = self.snapshot(&service).await?;
            if after.epoch != now.cursor.epoch || after.revision == 0 {
                return Ok(now);
            }
            if self.changed_since(&service, after, max_wait).await? {
                return self.snapshot(&service).await;
            }
            // Nothing changed: the same cursor, so the watcher sees no change.
            Ok(Snapshot { cursor: after, ..now })
        }
        .boxed()
    }
}
