//! The dev registry: a [`MemoryRegistry`] served over meshrpc itself as the built-in
//! `meshrpc.Registry` service (`meshrpc registry --listen ADDR`), and [`DevRegistry`],
//! the client side, which implements [`Registry`] by calling it. Watches are long polls
//! carrying the watcher's [`Cursor`].

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::instance::{Cursor, Instance, LeasedInstance, Snapshot};
use super::memory::MemoryRegistry;
use super::registry::{LeaseId, Registry};
use crate::client::{CallOptions, Client};
use crate::server::{Context, Service};
use crate::status::Status;

/// The dev registry's wire name.
pub const REGISTRY_SERVICE: &str = "meshrpc.Registry";

/// The longest long poll the dev registry holds open.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct RegisterReq {
    instance: Instance,
    ttl_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct LeaseReq {
    lease: LeaseId,
}

#[derive(Serialize, Deserialize)]
struct DeregisterReq {
    instance: Instance,
    lease: LeaseId,
}

#[derive(Serialize, Deserialize)]
struct ServiceReq {
    service: String,
}

#[derive(Serialize, Deserialize)]
struct WatchReq {
    service: String,
    after: Cursor,
    wait_ms: u64,
}

/// The `meshrpc.Registry` service over `reg` (served by `ServerBuilder::dev_registry`).
/// Long polls end early (with the current snapshot) once `stopping` is cancelled, so a
/// registry shutting down does not wait out its watchers' polls.
pub(crate) fn service(reg: MemoryRegistry, stopping: CancellationToken) -> Service {
    let (r1, r2, r3, r4, r5) = (reg.clone(), reg.clone(), reg.clone(), reg.clone(), reg.clone());
    let (r6, r7) = (reg.clone(), reg);
    Service::new(REGISTRY_SERVICE)
        .method("Register", move |_c: Context, q: RegisterReq| {
            let r = r1.register_now(&q.instance, Duration::from_millis(q.ttl_ms));
            std::future::ready(r)
        })
        .method("KeepAlive", move |_c: Context, q: LeaseReq| std::future::ready(r2.keep_alive_now(q.lease)))
        .method("Deregister", move |_c: Context, q: DeregisterReq| {
            std::future::ready(r3.deregister_now(&q.instance, q.lease))
        })
        .method("List", move |_c: Context, q: ServiceReq| {
            std::future::ready(Ok::<_, Status>(r4.snapshot(&q.service)))
        })
        .method("Services", move |_c: Context, _q: ()| {
            std::future::ready(Ok::<_, Status>(r5.service_names()))
        })
        .method("Leases", move |_c: Context, q: ServiceReq| {
            std::future::ready(Ok::<_, Status>(r7.leases_now(&q.service)))
        })
        .method("Watch", move |ctx: Context, q: WatchReq| {
            let (r, stopping) = (r6.clone(), stopping.clone());
            async move {
                // Answer a little before the caller's deadline, with whatever is current.
                let mut wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
                if let Some(left) = ctx.remaining() {
                    wait = wait.min(left.saturating_sub(Duration::from_millis(200)));
                }
                tokio::select! {
                    s = r.next_snapshot(&q.service, q.after, wait) => Ok::<_, Status>(s),
                    _ = stopping.cancelled() => Ok(r.snapshot(&q.service)),
                }
            }
        })
}

/// A [`Registry`] that is a dev registry process (`meshrpc registry --listen ADDR`).
///
/// Connecting does not need the registry to be up: calls fail with `UNAVAILABLE` until
/// it is, and the connection is re-established after a restart.
#[derive(Debug, Clone)]
pub struct DevRegistry {
    client: Client,
}

impl DevRegistry {
    /// A registry client for the dev registry at `addr`.
    pub async fn connect(addr: impl std::fmt::Display) -> Result<DevRegistry, Status> {
        let client = Client::builder()
            .connections(1)
            .backoff(crate::client::Backoff::new(Duration::from_millis(50), Duration::from_secs(1)))
            .connect_lazy(addr)
            .await?;
        Ok(DevRegistry { client })
    }

    /// The registry's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.client.peer_addr()
    }

    async fn call<A: Serialize + Sync, R: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<R, Status> {
        let opts = CallOptions::new().timeout(timeout);
        self.client.call_with(&format!("{REGISTRY_SERVICE}.{method}"), args, &opts).await
    }
}

/// Deadline of a registry call other than a watch.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

impl Registry for DevRegistry {
    fn register(&self, instance: &Instance, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, Status>> {
        let req = RegisterReq {
            instance: instance.clone(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        };
        async move { self.call("Register", &req, CALL_TIMEOUT).await }.boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>> {
        async move { self.call("KeepAlive", &LeaseReq { lease }, CALL_TIMEOUT).await }.boxed()
    }

    fn deregister(&self, instance: &Instance, lease: LeaseId) -> BoxFuture<'_, Result<(), Status>> {
        let req = DeregisterReq { instance: instance.clone(), lease };
        async move { self.call("Deregister", &req, CALL_TIMEOUT).await }.boxed()
    }

    fn list(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Status>> {
        let req = ServiceReq { service: service.to_string() };
        async move { self.call("List", &req, CALL_TIMEOUT).await }.boxed()
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        async move { self.call("Services", &(), CALL_TIMEOUT).await }.boxed()
    }

    fn leases(&self, service: &str) -> BoxFuture<'_, Result<Vec<LeasedInstance>, Status>> {
        let req = ServiceReq { service: service.to_string() };
        async move {
            match self.call("Leases", &req, CALL_TIMEOUT).await {
                // A dev registry from before `Leases`: the instances without lease details.
                Err(e) if matches!(e.code(), crate::Code::NotFound | crate::Code::Unimplemented) => {
                    Ok(LeasedInstance::unknown_leases(self.call("List", &req, CALL_TIMEOUT).await?))
                }
                other => other,
            }
        }
        .boxed()
    }

    fn watch_next(
        &self,
        service: &str,
        after: Cursor,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Snapshot, Status>> {
        let max_wait = max_wait.min(MAX_WAIT);
        let req = WatchReq {
            service: service.to_string(),
            after,
            wait_ms: u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
        };
        async move { self.call("Watch", &req, max_wait + CALL_TIMEOUT).await }.boxed()
    }
}
