//! The admin endpoint's handlers and the JSON they answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::time::Instant;

use crate::discovery::{LeaseInfo, LeasedInstance, Registry};
use crate::metrics::{Exposition, LATENCY_BUCKETS, ServerMetrics, UNKNOWN_METHOD, service_of};

/// Everything the admin endpoint shows, gathered when the server is bound.
pub(crate) struct AdminSource {
    /// The instance id announced (or the RPC address).
    pub(crate) id: String,
    /// The RPC address announced.
    pub(crate) addr: String,
    /// This endpoint's address as others reach it.
    pub(crate) admin_addr: String,
    /// The user services served.
    pub(crate) services: Vec<String>,
    pub(crate) metrics: Arc<ServerMetrics>,
    pub(crate) exposition: Exposition,
    /// Where instance lists come from, and how to name it to people.
    pub(crate) registry: Option<(Arc<dyn Registry>, String)>,
    /// `Ok` when ready for traffic, else why not.
    pub(crate) readiness: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    pub(crate) started: Instant,
}

impl std::fmt::Debug for AdminSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSource").field("id", &self.id).field("admin_addr", &self.admin_addr).finish()
    }
}

type Source = State<Arc<AdminSource>>;

/// Registry calls the endpoint makes give up after this long.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(2);

fn json<T: Serialize>(status: StatusCode, body: T) -> Response {
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) async fn metrics(State(src): Source) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], src.exposition.encode()).into_response()
}

pub(super) async fn readyz(State(src): Source) -> Response {
    match (src.readiness)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

#[derive(Serialize)]
struct Stats {
    instance: String,
    addr: String,
    uptime_ms: u64,
    ready: bool,
    connections: i64,
    bucket_bounds_s: &'static [f64],
    methods: Vec<MethodStats>,
}

#[derive(Serialize)]
struct MethodStats {
    method: String,
    service: String,
    calls: u64,
    errors: u64,
    in_flight: u64,
    /// Not cumulative; one more than `bucket_bounds_s` (the last is `+Inf`).
    buckets: Vec<u64>,
    sum_s: f64,
}

pub(super) async fn stats(State(src): Source) -> Response {
    let methods = src
        .metrics
        .snapshot()
        .into_iter()
        .filter(|(m, s)| m != UNKNOWN_METHOD || s.finished() > 0)
        .map(|(method, s)| MethodStats {
            service: if method == UNKNOWN_METHOD { method.clone() } else { service_of(&method).to_string() },
            calls: s.finished(),
            errors: s.errors(),
            in_flight: s.in_flight,
            buckets: s.buckets.to_vec(),
            sum_s: s.sum_ns as f64 / 1e9,
            method,
        })
        .collect();
    let body = Stats {
        instance: src.id.clone(),
        addr: src.addr.clone(),
        uptime_ms: u64::try_from(src.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ready: (src.readiness)().is_ok(),
        connections: src.metrics.open_connections(),
        bucket_bounds_s: &LATENCY_BUCKETS,
        methods,
    };
    json(StatusCode::OK, body)
}

#[derive(Serialize)]
struct InstanceList {
    source: String,
    services: Vec<ServiceInstances>,
}

#[derive(Serialize)]
struct ServiceInstances {
    service: String,
    instances: Vec<InstanceJson>,
}

#[derive(Serialize)]
struct InstanceJson {
    id: String,
    addr: String,
    admin_addr: Option<String>,
    metadata: BTreeMap<String, String>,
    lease: Option<LeaseInfo>,
}

/// The services and instances this endpoint knows: its registry's, else its own.
async fn list(src: &AdminSource) -> Result<InstanceList, String> {
    let Some((registry, name)) = &src.registry else {
        let services = src
            .services
            .iter()
            .map(|s| ServiceInstances {
                service: s.clone(),
                instances: vec![InstanceJson {
                    id: src.id.clone(),
                    addr: src.addr.clone(),
                    admin_addr: Some(src.admin_addr.clone()),
                    metadata: BTreeMap::new(),
                    lease: None,
                }],
            })
            .collect();
        return Ok(InstanceList { source: format!("this process ({})", src.addr), services });
    };
    let fetch = async {
        let mut services = Vec::new();
        for service in registry.services().await? {
            let mut instances: Vec<LeasedInstance> = registry.leases(&service).await?;
            instances.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
            let instances = instances
                .into_iter()
                .map(|l| InstanceJson {
                    id: l.instance.id,
                    addr: l.instance.addr,
                    admin_addr: l.instance.admin_addr,
                    metadata: l.instance.metadata,
                    lease: l.lease,
                })
                .collect();
            services.push(ServiceInstances { service, instances });
        }
        Ok::<_, crate::Status>(services)
    };
    match tokio::time::timeout(REGISTRY_TIMEOUT, fetch).await {
        Ok(Ok(services)) => Ok(InstanceList { source: name.clone(), services }),
        Ok(Err(e)) => Err(format!("the {name} failed: {e}")),
        Err(_) => Err(format!("the {name} did not answer within {REGISTRY_TIMEOUT:?}")),
    }
}

pub(super) async fn instances(State(src): Source) -> Response {
    match list(&src).await {
        Ok(l) => json(StatusCode::OK, l),
        Err(e) => json(StatusCode::BAD_GATEWAY, serde_json::json!({ "error": e })),
    }
}

#[derive(Serialize)]
struct TargetGroup {
    targets: Vec<String>,
    labels: BTreeMap<&'static str, String>,
}

/// Prometheus HTTP service discovery: one target per admin endpoint (a process serving
/// several services is scraped once), labelled with its instance id and services.
pub(super) async fn http_sd(State(src): Source) -> Response {
    let list = match list(&src).await {
        Ok(l) => l,
        // Prometheus keeps its last targets when SD fails.
        Err(e) => return json(StatusCode::BAD_GATEWAY, serde_json::json!({ "error": e })),
    };
    let mut by_admin: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for s in list.services {
        for i in s.instances {
            if let Some(admin) = i.admin_addr {
                by_admin.entry(admin).or_insert_with(|| (i.id.clone(), Vec::new())).1.push(s.service.clone());
            }
        }
    }
    let groups: Vec<TargetGroup> = by_admin
        .into_iter()
        .map(|(admin, (id, services))| TargetGroup {
            targets: vec![admin],
            labels: BTreeMap::from([("meshrpc_instance", id), ("meshrpc_services", services.join(","))]),
        })
        .collect();
    json(StatusCode::OK, groups)
}
