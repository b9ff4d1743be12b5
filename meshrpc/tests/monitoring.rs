//! Monitoring: server and client metrics, the admin endpoint (`/metrics`, `/healthz`,
//! `/readyz`, `/api/*`, `/sd`) and trace context across a chain of calls.

mod support;

use support::chain::{Seen, chain};

use std::sync::Arc;
use std::time::Duration;

use meshrpc::discovery::{DevRegistry, MemoryRegistry, Registry};
use meshrpc::metrics::{ClientMetrics, UNKNOWN_METHOD};
use meshrpc::trace::TraceContext;
use meshrpc::{CallOptions, Client, Code, Context, Server, ServerHandle, Service, Status};
use serde::Deserialize;

#[derive(Deserialize, serde::Serialize)]
struct Args {
    a: i64,
    b: i64,
}

fn calculator() -> Service {
    Service::new("Calculator").method("Add", |_c: Context, a: Args| async move { Ok::<_, Status>(a.a + a.b) })
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.expect("a body"))
}

/// Reads `read` until `done` holds (at most `tries` readings, `every` apart) and
/// returns the last reading, for the caller to assert on.
async fn poll<T, Fut: Future<Output = T>>(
    tries: u32,
    every: Duration,
    mut read: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut last = read().await;
    for _ in 1..tries {
        if done(&last) {
            break;
        }
        tokio::time::sleep(every).await;
        last = read().await;
    }
    last
}

/// The value of the exposition line `name{labels}` (labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

async fn admin_server(
    configure: impl FnOnce(meshrpc::ServerBuilder) -> meshrpc::ServerBuilder,
) -> ServerHandle {
    let b = configure(Server::builder().add_service(calculator()).admin("127.0.0.1:0"));
    b.bind("127.0.0.1:0").await.expect("bind").spawn()
}

#[tokio::test]
async fn metrics_count_each_call_by_method_and_status() {
    let server = admin_server(|b| b).await;
    let admin = server.admin_addr().expect("an admin endpoint");
    let client = Client::connect(server.local_addr()).await.unwrap();
    for i in 0..25 {
        let sum: i64 = client.call("Calculator.Add", &Args { a: i, b: 1 }).await.unwrap();
        assert_eq!(sum, i + 1);
    }
    // Undecodable arguments: INVALID_ARGUMENT, under the method.
    for _ in 0..3 {
        let err = client.call::<_, i64>("Calculator.Add", &"not args").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    // Unknown names all land in one `<unknown>` row, however many there are.
    for i in 0..50 {
        let err = client.call::<_, i64>(&format!("Nope{i}.Method{i}"), &()).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    let (status, text) = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    let ok = r#"meshrpc_server_calls_total{service="Calculator",method="Calculator.Add",code="OK"}"#;
    let bad =
        r#"meshrpc_server_calls_total{service="Calculator",method="Calculator.Add",code="INVALID_ARGUMENT"}"#;
    let unknown = format!(
        r#"meshrpc_server_calls_total{{service="{UNKNOWN_METHOD}",method="{UNKNOWN_METHOD}",code="NOT_FOUND"}}"#
    );
    assert_eq!(sample(&text, ok), Some(25.0), "{text}");
    assert_eq!(sample(&text, bad), Some(3.0));
    assert_eq!(sample(&text, &unknown), Some(50.0));
    let server_lines = text.lines().filter(|l| l.starts_with("meshrpc_server_"));
    assert!(
        !server_lines.clone().any(|l| l.contains("Nope")),
        "a peer's made-up names never become label values"
    );
    let count = r#"meshrpc_server_call_duration_seconds_count{service="Calculator",method="Calculator.Add"}"#;
    assert_eq!(sample(&text, count), Some(28.0), "every admitted call is in the histogram");
    let conns = sample(&text, "meshrpc_server_connections").expect("the connections gauge");
    assert!(conns >= 1.0, "the client's connection is open: {conns}");
    assert!(text.contains(r#"meshrpc_build_info{version=""#));
    assert!(text.ends_with("# EOF\n"));
    // The client side of the same calls, in this process's client metrics.
    let client_rows = ClientMetrics::global().snapshot();
    let add = &client_rows.iter().find(|(m, _)| m == "Calculator.Add").expect("a client row").1;
    assert!(add.by_code[Code::Ok as usize] >= 25 && add.by_code[Code::InvalidArgument as usize] >= 3);
    server.shutdown().await;
}

#[tokio::test]
async fn latency_lands_in_the_bucket_of_the_handlers_time_and_in_flight_counts_running_calls() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let slow = Service::new("Slow")
        .method("Nap", |_c: Context, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Status>(ms)
        })
        .method("Wait", move |_c: Context, _: ()| {
            let g = g.clone();
            async move {
                g.notified().await;
                Ok::<_, Status>(())
            }
        });
    let server = admin_server(|b| b.add_service(slow)).await;
    let client = Client::connect(server.local_addr()).await.unwrap();
    let _: u64 = client.call("Slow.Nap", &30u64).await.unwrap();
    let waiting = {
        let c = client.clone();
        tokio::spawn(async move { c.call::<_, ()>("Slow.Wait", &()).await })
    };
    let admin = server.admin_addr().unwrap();
    let series = r#"meshrpc_server_calls_in_flight{service="Slow",method="Slow.Wait"}"#;
    let metrics = format!("http://{admin}/metrics");
    let read = || async { sample(&get(&metrics).await.1, series) };
    let in_flight = poll(100, Duration::from_millis(10), read, |v| *v == Some(1.0)).await;
    assert_eq!(in_flight, Some(1.0), "the waiting call is in flight");
    gate.notify_waiters();
    waiting.await.unwrap().unwrap();
    let snap = server.metrics().snapshot();
    let nap = &snap.iter().find(|(m, _)| m == "Slow.Nap").unwrap().1;
    // Buckets: … 10 ms, 25 ms, 50 ms …: 30 ms (plus scheduling) is in (25, 50] ms,
    // the 11th bucket (index 9 is ≤ 25 ms).
    assert_eq!(nap.buckets[10], 1, "{:?}", nap.buckets);
    assert!(nap.sum_ns >= 30_000_000);
    let wait = &snap.iter().find(|(m, _)| m == "Slow.Wait").unwrap().1;
    assert_eq!((wait.in_flight, wait.finished()), (0, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_answers_and_readyz_fails_until_registered_and_while_draining() {
    // A registry that is not up yet: the server serves, but is not registered.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let registry: Arc<dyn Registry> =
        Arc::new(DevRegistry::connect(format!("127.0.0.1:{port}")).await.unwrap());
    let server = admin_server(|b| b.registry(registry).shutdown_grace(Duration::from_millis(800))).await;
    let admin = server.admin_addr().unwrap();
    let readyz = format!("http://{admin}/readyz");
    let ready = get(&readyz).await;
    assert_eq!(ready.0, 503, "not registered yet: {}", ready.1);
    assert!(ready.1.contains("not registered"), "{}", ready.1);
    assert_eq!(get(&format!("http://{admin}/healthz")).await.0, 200, "alive all the same");
    // The registry comes up: the announcement registers, and the server is ready.
    let reg_server = Server::builder()
        .dev_registry(MemoryRegistry::new())
        .bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap()
        .spawn();
    let status = poll(100, Duration::from_millis(50), || async { get(&readyz).await.0 }, |s| *s == 200).await;
    assert_eq!(status, 200, "ready once registered");
    // Draining (the shutdown grace): not ready, still alive.
    let stopping = tokio::spawn(server.shutdown());
    let drained = poll(50, Duration::from_millis(10), || get(&readyz), |r| r.0 == 503).await;
    assert_eq!(drained.0, 503, "a draining server is not ready");
    assert!(drained.1.contains("draining"), "{}", drained.1);
    stopping.await.unwrap();
    reg_server.shutdown().await;
}

#[tokio::test]
async fn the_dev_registry_serves_instances_with_leases_prometheus_sd_and_its_metrics() {
    let memory = MemoryRegistry::new();
    let reg_server = Server::builder()
        .dev_registry(memory.clone())
        .admin("127.0.0.1:0")
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let reg_admin = reg_server.admin_addr().unwrap();
    let registry: Arc<dyn Registry> = Arc::new(DevRegistry::connect(reg_server.local_addr()).await.unwrap());
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let r = registry.clone();
        replicas.push(admin_server(|b| b.registry(r).lease_ttl(Duration::from_secs(3))).await);
    }
    let count = || async { memory.snapshot("Calculator").instances.len() };
    let listed = poll(100, Duration::from_millis(20), count, |n| *n == 2).await;
    assert_eq!(listed, 2);
    let (status, body) = get(&format!("http://{reg_admin}/api/instances")).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let calc = &v["services"][0];
    assert_eq!(calc["service"], "Calculator");
    let instances = calc["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for i in instances {
        assert_eq!(i["lease"]["ttl_ms"], 3000, "{i}");
        assert!(i["lease"]["expires_in_ms"].as_u64().unwrap() <= 3000);
    }
    // Prometheus HTTP SD: each replica's admin endpoint, once.
    let sd: serde_json::Value =
        serde_json::from_str(&get(&format!("http://{reg_admin}/sd")).await.1).unwrap();
    let mut targets: Vec<String> =
        sd.as_array().unwrap().iter().map(|g| g["targets"][0].as_str().unwrap().to_string()).collect();
    targets.sort();
    let mut want: Vec<String> = replicas.iter().map(|r| r.admin_addr().unwrap().to_string()).collect();
    want.sort();
    assert_eq!(targets, want);
    assert_eq!(sd[0]["labels"]["meshrpc_services"], "Calculator");
    // A replica's own admin endpoint lists through the registry it announces in.
    let via_replica = get(&format!("http://{}/api/instances", replicas[0].admin_addr().unwrap())).await.1;
    assert!(via_replica.contains(&want[1]), "{via_replica}");
    // The registry's metrics: instances per service, and a watch's lag.
    let mut watch = meshrpc::discovery::Watch::start(registry.clone(), "Calculator");
    assert!(watch.ready(Duration::from_secs(5)).await.is_some());
    replicas.pop().unwrap().shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
    let text = get(&format!("http://{reg_admin}/metrics")).await.1;
    assert_eq!(sample(&text, r#"meshrpc_registry_instances{service="Calculator"}"#), Some(1.0), "{text}");
    let lagged = sample(&text, "meshrpc_registry_watch_lag_seconds_count").unwrap_or(0.0);
    assert!(lagged >= 1.0, "the deregistration reached a waiting watch: {text}");
    for r in replicas {
        r.shutdown().await;
    }
    reg_server.shutdown().await;
}

#[tokio::test]
async fn a_chain_a_b_c_shares_one_trace_id() {
    let seen = Arc::new(Seen::default());
    let (b, c, to_b) = chain(seen.clone()).await;
    let root = TraceContext::new_root();
    root.scope(async { to_b.call::<_, ()>("B.Middle", &()).await }).await.unwrap();
    let seen = std::mem::take(&mut *seen.0.lock().unwrap());
    assert_eq!(seen.len(), 2);
    let (b_ctx, c_ctx) = (seen[0].1.expect("B got a traceparent"), seen[1].1.expect("C got one"));
    assert_eq!((seen[0].0.as_str(), seen[1].0.as_str()), ("B", "C"));
    assert_eq!(b_ctx.trace_id, root.trace_id, "B is in A's trace");
    assert_eq!(c_ctx.trace_id, root.trace_id, "C is in A's trace, through B");
    let b_parent = TraceContext::parse(seen[0].2.as_deref().unwrap()).unwrap();
    let c_parent = TraceContext::parse(seen[1].2.as_deref().unwrap()).unwrap();
    assert_ne!(b_parent.span_id, root.span_id, "A's call is a span of its own, a child of the root");
    assert_ne!(c_parent.span_id, b_parent.span_id, "B's call to C is a new span");
    assert_ne!(b_ctx.span_id, c_ctx.span_id);
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn without_a_trace_or_a_span_subscriber_nothing_is_added_to_requests() {
    let seen = Arc::new(Seen::default());
    let (b, c, to_b) = chain(seen.clone()).await;
    to_b.call::<_, ()>("B.Middle", &()).await.unwrap();
    for (who, ctx, header) in seen.0.lock().unwrap().iter() {
        assert_eq!((ctx, header), (&None, &None), "{who} got trace context nobody asked for");
    }
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn explicit_metadata_and_a_trace_travel_together() {
    let seen = Arc::new(Seen::default());
    let (b, c, to_b) = chain(seen.clone()).await;
    let opts = CallOptions::new().metadata("tenant", "blue");
    let root = TraceContext::new_root();
    root.scope(to_b.call_with::<_, ()>("B.Middle", &(), &opts)).await.unwrap();
    let first = seen.0.lock().unwrap()[0].clone();
    assert_eq!(first.1.map(|t| t.trace_id), Some(root.trace_id));
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_client_call_dropped_before_its_answer_leaves_the_in_flight_gauge() {
    let hang = Service::new("Hang").method("Forever", |_c: Context, _: ()| async {
        std::future::pending::<()>().await;
        Ok::<_, Status>(())
    });
    let server = admin_server(|b| b.add_service(hang)).await;
    let client = Client::connect(server.local_addr()).await.unwrap();
    let dropped =
        tokio::time::timeout(Duration::from_millis(50), client.call::<_, ()>("Hang.Forever", &())).await;
    assert!(dropped.is_err(), "the call never answers");
    let rows = ClientMetrics::global().snapshot();
    let hang = &rows.iter().find(|(m, _)| m == "Hang.Forever").expect("a client row").1;
    assert_eq!(hang.in_flight, 0, "a dropped call is no longer in flight");
    assert_eq!(hang.by_code[Code::Cancelled as usize], 1, "it ended as CANCELLED");
    server.shutdown().await;
}

#[tokio::test]
async fn a_forwarded_traceparent_is_replaced_by_the_calls_own() {
    let seen = Arc::new(Seen::default());
    let (b, c, to_b) = chain(seen.clone()).await;
    let stale = TraceContext::new_root();
    let opts = CallOptions::new().metadata("traceparent", stale.to_traceparent());
    let root = TraceContext::new_root();
    root.scope(to_b.call_with::<_, ()>("B.Middle", &(), &opts)).await.unwrap();
    let first = seen.0.lock().unwrap()[0].clone();
    assert_eq!(first.1.map(|t| t.trace_id), Some(root.trace_id), "the scope's trace wins");
    b.shutdown().await;
    c.shutdown().await;
}
