//! Discovery from the shell and across processes: `meshrpc registry`, `list`, `watch`,
//! `call --service`, `fanout`; replicas dying under load; the registry going away.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshrpc::demo::CalculatorClient;
use meshrpc::discovery::{DevRegistry, Registry};
use meshrpc::{CallOptions, Client};
use support::*;
use tokio::time::Instant;

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

/// Waits until `meshrpc list Calculator` shows exactly `want` instances; returns their addresses.
fn wait_listed(reg: &str, want: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = stdout(&run(&["list", "Calculator", "--registry", reg, "--json"]));
        let mut addrs: Vec<String> =
            json_lines(&out).iter().map(|v| v["address"].as_str().unwrap().to_string()).collect();
        if addrs.len() == want {
            addrs.sort();
            return addrs;
        }
        assert!(Instant::now() < until, "never {want} instances listed: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn registry_list_call_fanout_and_watch_from_the_shell() {
    let (_reg, reg) = registry("127.0.0.1:0");
    let (mut a, a_addr) = replica(&reg);
    let (_b, b_addr) = replica(&reg);
    let mut want = vec![a_addr.clone(), b_addr.clone()];
    want.sort();
    assert_eq!(wait_listed(&reg, 2), want, "both replicas announced themselves");
    let human = stdout(&run(&["list", "--registry", &reg]));
    assert!(
        human.contains("Calculator: 2 instance(s)") && human.contains("Greeter: 2 instance(s)"),
        "{human}"
    );

    let sum = stdout(&run(&[
        "call",
        "--service",
        "Calculator",
        "--registry",
        &reg,
        "Calculator.Add",
        r#"{"a":10,"b":5}"#,
    ]));
    assert_eq!(sum.trim(), "15");

    let out = stdout(&run(&[
        "fanout",
        "--service",
        "Calculator",
        "--registry",
        &reg,
        "Calculator.Add",
        r#"{"a":1,"b":2}"#,
        "--deadline",
        "500ms",
        "--json",
    ]));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "one line per instance: {out}");
    let mut seen: Vec<String> = lines.iter().map(|l| l["address"].as_str().unwrap().to_string()).collect();
    seen.sort();
    assert_eq!(seen, want);
    assert!(lines.iter().all(|l| l["status"] == "OK" && l["reply"] == 3), "{out}");
    let table =
        stdout(&run(&["fanout", "--service", "Calculator", "--registry", &reg, "meshrpc.Health.Check"]));
    assert!(table.contains("2 ok, 0 failed") && table.contains("SERVING"), "{table}");

    let watched = stdout(&run(&["watch", "Calculator", "--registry", &reg, "--json", "--duration", "500ms"]));
    let snaps = json_lines(&watched);
    assert_eq!(snaps.last().unwrap()["instances"].as_array().unwrap().len(), 2, "{watched}");

    // A graceful stop (SIGTERM) deregisters at once, long before the lease would expire.
    let t0 = Instant::now();
    terminate(&mut a);
    assert_eq!(wait_listed(&reg, 1), vec![b_addr]);
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());

    // Without a registry, the commands say what to pass.
    let o = run(&["list"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--registry"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Closed-loop callers of the idempotent `Calculator.Add` through one discovered client;
/// returns (ok, failed, latencies).
fn start_load(
    client: &Client,
    callers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinSet<(u64, u64, Vec<Duration>)> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..callers as i64 {
        let (calc, stop) = (CalculatorClient::new(client.clone()), stop.clone());
        set.spawn(async move {
            let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
            let opts = CallOptions::new().timeout(Duration::from_secs(2));
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match calc.add_with(opts.clone(), w, i).await {
                    Ok(s) if s == w + i => {
                        ok += 1;
                        lat.push(t0.elapsed());
                    }
                    other => {
                        failed += 1;
                        eprintln!("call failed: {other:?}");
                    }
                }
                i += 1;
            }
            (ok, failed, lat)
        });
    }
    set
}

async fn finish(mut set: tokio::task::JoinSet<(u64, u64, Vec<Duration>)>) -> (u64, u64, Duration) {
    let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
    while let Some(r) = set.join_next().await {
        let (o, f, l) = r.unwrap();
        ok += o;
        failed += f;
        lat.extend(l);
    }
    lat.sort();
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or_default();
    (ok, failed, p99)
}

/// A discovered client of `Calculator` in the dev registry at `reg`, once it sees `n` instances.
async fn discovered(reg: &str, n: usize) -> Client {
    let registry: Arc<dyn Registry> = Arc::new(DevRegistry::connect(reg).await.unwrap());
    let client = Client::discover("Calculator", registry);
    let until = Instant::now() + Duration::from_secs(10);
    while client.instances(Duration::from_secs(1)).await.len() < n {
        assert!(Instant::now() < until, "the client never saw {n} replicas");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_and_restarted_under_load_cost_no_call() {
    let (_reg, reg) = registry("127.0.0.1:0");
    let mut replicas: Vec<(Running, String)> = (0..3).map(|_| replica(&reg)).collect();
    let client = discovered(&reg, 3).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(&client, 32, stop.clone());
    let started = Instant::now();
    let killed = AtomicU64::new(0);
    let mut k = 0;
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The victim must have served calls before it dies.
        let victim = replicas[k % 3].1.clone();
        let served = client
            .instance_stats()
            .into_iter()
            .find(|(i, _)| i.addr == victim)
            .map(|(_, s)| s.succeeded)
            .unwrap_or(0);
        assert!(served > 0, "replica {victim} served no call before being killed");
        let (mut child, _) = std::mem::replace(&mut replicas[k % 3], replica(&reg)); // restart (new port)
        let _ = child.0.kill(); // SIGKILL: a crash, no deregistration
        let _ = child.0.wait();
        killed.fetch_add(1, Ordering::Relaxed);
        k += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, p99) = finish(load).await;
    let stats = client.stats();
    println!(
        "{ok} calls in {:.1?}, {failed} failed, {} retries, {} replicas killed, p99 {p99:?}",
        started.elapsed(),
        stats.retries,
        killed.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "no call failed");
    assert!(killed.load(Ordering::Relaxed) >= 5);
    assert!(stats.retries > 0, "the crashes caused retries");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        (stats.retries as f64) <= 0.2 * ok as f64 + 10.0 * secs,
        "{} retries exceed the budget for {ok} calls",
        stats.retries
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_stops_nothing_and_a_new_replica_is_found_after_it() {
    let (mut reg_proc, reg) = registry("127.0.0.1:0");
    let _replicas: Vec<(Running, String)> = (0..3).map(|_| replica(&reg)).collect();
    let client = discovered(&reg, 3).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(&client, 16, stop.clone());
    // The registry dies; calls keep going to the known replicas.
    let _ = reg_proc.0.kill();
    let _ = reg_proc.0.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(client.instances(Duration::ZERO).await.len(), 3, "the last known set is kept");
    // It comes back (empty) on the same address; the replicas register again; a 4th starts.
    let (_reg_again, _) = support::registry(&reg);
    // The restarted registry is empty until the replicas register again; the client
    // keeps the instances it knew meanwhile instead of dropping them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.instances(Duration::ZERO).await.len() >= 3, "the known instances were kept");
    let (_fourth, fourth) = replica(&reg);
    let t0 = Instant::now();
    loop {
        let served =
            client.instance_stats().into_iter().find(|(i, _)| i.addr == fourth).map(|(_, s)| s.succeeded);
        if served.is_some_and(|n| n > 0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the 4th replica got no traffic: the watch did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("the 4th replica got traffic {:?} after it started", t0.elapsed());
    // The three old replicas registered again in the restarted registry (their old
    // leases are unknown there): 4 instances listed.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = run(&["list", "Calculator", "--registry", &reg, "--json"]);
        if String::from_utf8_lossy(&listed.stdout).lines().count() == 4 {
            break;
        }
        assert!(Instant::now() < until, "the old replicas did not register again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, _) = finish(load).await;
    assert_eq!(failed, 0, "no call failed during the outage ({ok} succeeded)");
    assert!(t0.elapsed() < Duration::from_secs(10));
}
