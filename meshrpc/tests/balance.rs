//! A discovered client over real servers: spreading load, failing over when a replica
//! dies, retrying within the budget, hedging, and broadcasting.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use meshrpc::balance::Strategy;
use meshrpc::discovery::MemoryRegistry;
use meshrpc::{CallOptions, Client, Code, Context, Server, ServerHandle, Service, Status};
use support::*;
use tokio::time::Instant;

/// A replica whose `Calculator.Add` counts its calls and can be slowed down.
async fn replica(reg: &MemoryRegistry, served: Arc<AtomicU64>, delay_ms: u64) -> ServerHandle {
    let svc = Service::new("Calculator").method("Add", move |_c: Context, a: AddArgs| {
        let served = served.clone();
        async move {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            served.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Status>(a.a + a.b)
        }
    });
    Server::builder()
        .add_service(svc)
        .registry(Arc::new(reg.clone()))
        .lease_ttl(Duration::from_secs(1))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
}

async fn wait_for_instances(client: &Client, reg: &MemoryRegistry, n: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while reg.snapshot("Calculator").instances.len() < n {
        assert!(Instant::now() < until, "replicas did not register");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One broadcast proves the client sees them all.
    loop {
        let r =
            client.broadcast::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 1 }, &CallOptions::new()).await;
        if r.len() == n && r.iter().all(|(_, r)| r.is_ok()) {
            return;
        }
        assert!(Instant::now() < until, "the client never saw {n} instances: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dying_under_load_costs_no_call_and_retries_stay_within_the_budget() {
    let reg = MemoryRegistry::new();
    let served: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut servers = Vec::new();
    for s in &served {
        servers.push(Some(replica(&reg, s.clone(), 0).await));
    }
    let client = Client::discover("Calculator", Arc::new(reg.clone()));
    wait_for_instances(&client, &reg, 3).await;
    let failed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs(3);
    let mut callers = tokio::task::JoinSet::new();
    for w in 0..32i64 {
        let (client, failed, ok) = (client.clone(), failed.clone(), ok.clone());
        callers.spawn(async move {
            let opts = CallOptions::new().idempotent(true).timeout(Duration::from_secs(2));
            let mut i = 0i64;
            while Instant::now() < stop {
                match client.call_with::<_, i64>("Calculator.Add", &AddArgs { a: w, b: i }, &opts).await {
                    Ok(sum) if sum == w + i => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("call failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = served[1].load(Ordering::Relaxed);
    servers[1].take().unwrap().abort(); // a crash: no GOAWAY, no deregistration
    while callers.join_next().await.is_some() {}
    let stats = client.stats();
    let (calls, retries) = client.retry_budget().counts();
    println!(
        "{} calls ok, {} failed, {} retries ({retries} counted against {calls} calls)",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        stats.retries
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");
    assert!(before_kill > 0, "the killed replica served calls before it died");
    assert!(stats.retries > 0, "the crash caused retries");
    assert!(
        (stats.retries as f64) <= 0.2 * ok.load(Ordering::Relaxed) as f64 + 10.0 * 4.0,
        "retries within the budget"
    );
    assert!(served[0].load(Ordering::Relaxed) > 0 && served[2].load(Ordering::Relaxed) > 0);
    // Its lease expires and it leaves the set.
    let until = Instant::now() + Duration::from_secs(5);
    while reg.snapshot("Calculator").instances.len() != 2 {
        assert!(Instant::now() < until, "the crashed replica's lease did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in servers.into_iter().flatten() {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn without_idempotency_a_call_that_may_have_run_is_not_retried() {
    let reg = MemoryRegistry::new();
    let slow = replica(&reg, Arc::new(AtomicU64::new(0)), 2_000).await;
    let client = Client::discover("Calculator", Arc::new(reg.clone()));
    wait_for_instances(&client, &reg, 1).await;
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 1 }).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    slow.abort(); // the call was in flight: it may have run
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn hedging_beats_a_slow_replica_for_idempotent_calls_only() {
    let reg = MemoryRegistry::new();
    let (fast_n, slow_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let fast = replica(&reg, fast_n.clone(), 0).await;
    let slow = replica(&reg, slow_n.clone(), 300).await;
    let client =
        Client::builder().strategy(Strategy::RoundRobin).discover("Calculator", Arc::new(reg.clone()));
    wait_for_instances(&client, &reg, 2).await;
    // Hedged, idempotent calls: whichever replica they start on, none waits 300 ms.
    let opts =
        CallOptions::new().idempotent(true).hedge(Duration::from_millis(30)).timeout(Duration::from_secs(2));
    for i in 0..6 {
        let t0 = Instant::now();
        let sum: i64 = client.call_with("Calculator.Add", &AddArgs { a: i, b: 1 }, &opts).await.unwrap();
        assert_eq!(sum, i + 1);
        assert!(t0.elapsed() < Duration::from_millis(250), "hedge {i} took {:?}", t0.elapsed());
    }
    assert!(client.stats().hedges > 0, "backups were sent");
    // A hedge is never sent for a call that is not idempotent.
    let before = client.stats().hedges;
    let not_idem = CallOptions::new().hedge(Duration::from_millis(30));
    for i in 0..2 {
        let _: i64 = client.call_with("Calculator.Add", &AddArgs { a: i, b: 1 }, &not_idem).await.unwrap();
    }
    assert_eq!(client.stats().hedges, before);
    fast.shutdown().await;
    slow.shutdown().await;
}

#[tokio::test]
async fn broadcast_reaches_every_instance_and_reports_each() {
    let reg = MemoryRegistry::new();
    let counters: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut servers = Vec::new();
    for c in &counters {
        servers.push(replica(&reg, c.clone(), 0).await);
    }
    let client = Client::discover("Calculator", Arc::new(reg.clone()));
    wait_for_instances(&client, &reg, 3).await;
    let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let results =
        client.broadcast::<_, i64>("Calculator.Add", &AddArgs { a: 20, b: 22 }, &CallOptions::new()).await;
    assert_eq!(results.len(), 3);
    let mut addrs: Vec<String> = results.iter().map(|(i, _)| i.addr.clone()).collect();
    addrs.sort();
    let mut want: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    want.sort();
    assert_eq!(addrs, want, "one result per instance");
    assert!(results.iter().all(|(_, r)| r.as_ref().ok() == Some(&42)));
    for (c, b) in counters.iter().zip(before) {
        assert_eq!(c.load(Ordering::Relaxed), b + 1, "each instance ran it once");
    }
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn an_instance_leaving_discovery_finishes_its_calls_and_gets_no_new_ones() {
    let reg = MemoryRegistry::new();
    let (leaving_n, staying_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Registered by hand (not announced by its server, which would register it again).
    let leaving = replica(&MemoryRegistry::new(), leaving_n.clone(), 500).await;
    let addr = leaving.local_addr().to_string();
    let me = meshrpc::discovery::Instance::new("Calculator", addr.clone(), addr);
    let lease = reg.register_now(&me, Duration::from_secs(30)).unwrap();
    let client =
        Client::builder().strategy(Strategy::RoundRobin).discover("Calculator", Arc::new(reg.clone()));
    wait_for_instances(&client, &reg, 1).await;
    let before = leaving_n.load(Ordering::Relaxed);
    // A slow call in flight on the instance that is about to leave.
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, i64>("Calculator.Add", &AddArgs { a: 2, b: 3 }).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let staying = replica(&reg, staying_n.clone(), 0).await;
    // The instance leaves discovery; its server keeps running.
    reg.deregister_now(&me, lease).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let addrs: Vec<String> =
            client.instances(Duration::from_secs(1)).await.into_iter().map(|i| i.addr).collect();
        if addrs == [staying.local_addr().to_string()] {
            break;
        }
        assert!(Instant::now() < until, "the client still sees {addrs:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight.await.unwrap().unwrap(), 5, "the call in flight on the leaving instance finished");
    assert_eq!(leaving_n.load(Ordering::Relaxed), before + 1);
    for i in 0..20 {
        let sum: i64 = client.call("Calculator.Add", &AddArgs { a: i, b: 1 }).await.unwrap();
        assert_eq!(sum, i + 1);
    }
    assert_eq!(leaving_n.load(Ordering::Relaxed), before + 1, "no new call went to the instance that left");
    assert_eq!(staying_n.load(Ordering::Relaxed), 20);
    leaving.shutdown().await;
    staying.shutdown().await;
}

#[tokio::test]
async fn a_metadata_filter_keeps_calls_on_matching_instances() {
    let reg = MemoryRegistry::new();
    let (v1_n, v2_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut servers = Vec::new();
    for (version, counter) in [("1", &v1_n), ("2", &v2_n)] {
        let c = counter.clone();
        let svc = Service::new("Calculator").method("Add", move |_c: Context, a: AddArgs| {
            c.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Status>(a.a + a.b) }
        });
        let server = Server::builder()
            .add_service(svc)
            .registry(Arc::new(reg.clone()))
            .instance_meta("version", version)
            .bind("127.0.0.1:0")
            .await
            .unwrap()
            .spawn();
        servers.push(server);
    }
    let client = Client::builder().filter("version", "2").discover("Calculator", Arc::new(reg.clone()));
    let until = Instant::now() + Duration::from_secs(5);
    while reg.snapshot("Calculator").instances.len() < 2 {
        assert!(Instant::now() < until, "replicas did not register");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = client.instances(Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 1, "only the version=2 instance: {seen:?}");
    assert_eq!(seen[0].metadata.get("version").map(String::as_str), Some("2"));
    for i in 0..50 {
        let sum: i64 = client.call("Calculator.Add", &AddArgs { a: i, b: 1 }).await.unwrap();
        assert_eq!(sum, i + 1);
    }
    assert_eq!((v1_n.load(Ordering::Relaxed), v2_n.load(Ordering::Relaxed)), (0, 50));
    for s in servers {
        s.shutdown().await;
    }
}
