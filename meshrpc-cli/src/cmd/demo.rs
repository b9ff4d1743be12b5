//! `meshrpc demo`: the scenarios meshrpc grew from, run and explained on loopback;
//! with `--listen`, the demo services kept serving until Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;

use super::target::RegistryArgs;
use meshrpc::demo::{self, CalculatorClient, CounterClient, GreeterClient};
use meshrpc::discovery::{DevRegistry, MemoryRegistry, Registry};
use meshrpc::{CallOptions, Client, Server, ServerHandle, Status, fanout};
use tokio::time::Instant;

/// Arguments of `meshrpc demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo services (Calculator, Counter, Echo, Greeter) serving on ADDR until
    /// Ctrl-C instead of running the scenarios. With port 0, prints `PORT n` first.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// With --listen: announce the services in this registry (repeat with other ports
    /// to run replicas; see `meshrpc registry`).
    #[command(flatten)]
    registry: RegistryArgs,
    /// With --listen: where to serve the admin endpoint (dashboard, /metrics, /healthz,
    /// /readyz); port 0 picks a free port. Printed as `DASHBOARD http://…/`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    admin: String,
    /// With --listen: demo calls per second (on average; the rate swings slowly) this
    /// process sends to the demo services, so the dashboard shows live traffic.
    /// 0 sends none (benchmarks and exact-count tests use 0).
    #[arg(long, value_name = "CALLS_PER_SEC", default_value_t = 20.0)]
    traffic: f64,
    /// With --registry: the TTL of the announcement's lease (how long a crashed replica
    /// stays listed); renewed every third of it.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// With --listen: reply bytes the server holds for all clients together, queued and
    /// not yet written, in MiB; past it, the connections holding the most unread
    /// replies are dropped (GOAWAY RESOURCE_EXHAUSTED).
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..))]
    max_queued_mib: u32,
}

/// Runs `meshrpc demo`.
pub(crate) async fn run(args: DemoArgs) -> ExitCode {
    match &args.listen {
        Some(addr) => listen(addr, &args).await,
        None => match scenarios().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("\ndemo failed: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn listen(addr: &str, args: &DemoArgs) -> ExitCode {
    let registry = &args.registry;
    if !(args.traffic >= 0.0 && args.traffic <= 100_000.0) {
        eprintln!("error: --traffic must be between 0 and 100000 calls per second");
        return ExitCode::FAILURE;
    }
    let mut builder =
        Server::builder().admin(args.admin.as_str()).max_queued_bytes((args.max_queued_mib as usize) << 20);
    for svc in demo::services("demo") {
        builder = builder.add_service(svc);
    }
    let announced = registry.registry.clone().or_else(|| registry.etcd.clone());
    let mut discovered = None;
    match registry.connect().await {
        // Deregistered at Ctrl-C; watchers get a moment to see it before GOAWAY.
        Ok(Some(reg)) => {
            discovered = Some(reg.clone());
            builder =
                builder.registry(reg).lease_ttl(args.lease_ttl).shutdown_grace(Duration::from_millis(300));
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let server = match builder.bind(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}\nhint: pick a free port, or port 0 for any free port");
            return ExitCode::FAILURE;
        }
    };
    let local = server.local_addr();
    let methods = server.method_names().join(", ");
    let mut out = std::io::stdout().lock();
    if addr.ends_with(":0") {
        let _ = writeln!(out, "PORT {}", local.port());
    }
    if let Some(admin) = server.admin_addr() {
        let _ = writeln!(out, "DASHBOARD http://{admin}/");
    }
    let _ = writeln!(out, "meshrpc demo serving {methods} on {local}");
    if let Some(r) = &announced {
        let _ = writeln!(out, "announced in the registry at {r} (as instance {local})");
    }
    let _ = writeln!(out, "try: meshrpc call --addr {local} Calculator.Add '{{\"a\":10,\"b\":5}}'");
    if let Some(admin) = server.admin_addr() {
        let _ = writeln!(out, "metrics: http://{admin}/metrics (Prometheus), health: /healthz, /readyz");
    }
    if args.traffic > 0.0 {
        let _ = writeln!(
            out,
            "sending about {} demo calls/s to the demo services (--traffic 0 for none)",
            args.traffic
        );
    }
    let _ = writeln!(out, "press Ctrl-C to stop");
    let _ = out.flush();
    drop(out);
    let handle = server.spawn();
    let traffic = if args.traffic > 0.0 {
        let client = match discovered {
            Some(reg) => Ok(Client::discover("Calculator", reg)),
            None => Client::connect(local).await,
        };
        match client {
            Ok(c) => Some(tokio::spawn(super::traffic::run(c, args.traffic))),
            Err(e) => {
                eprintln!("warning: cannot send demo traffic: {e}");
                None
            }
        }
    } else {
        None
    };
    super::stop_signal().await;
    if let Some(t) = traffic {
        t.abort();
    }
    eprintln!("shutting down: finishing calls in flight…");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

async fn spawn_server(services: Vec<meshrpc::Service>) -> Result<ServerHandle, String> {
    let mut b = Server::builder();
    for s in services {
        b = b.add_service(s);
    }
    let server = b.bind("127.0.0.1:0").await.map_err(|e| format!("cannot bind a loopback port: {e}"))?;
    Ok(server.spawn())
}

fn heading(n: usize, title: &str, seed: &str) {
    println!("\n[{n}/4] {title}  ({seed})");
}

async fn scenarios() -> Result<(), String> {
    println!("meshrpc demo: the scenarios meshrpc grew from, on this machine, nothing external.");
    println!("Every server below listens on a free port on 127.0.0.1 inside this process.");
    rpc_by_name().await?;
    safe_counter().await?;
    fan_out().await?;
    discovery_and_failover().await?;
    println!("\nDone. To keep the demo services running and call them from the shell:");
    println!("  meshrpc demo --listen 127.0.0.1:7001");
    println!("  meshrpc call --addr 127.0.0.1:7001 Calculator.Add '{{\"a\":10,\"b\":5}}'");
    println!("Or several replicas behind a registry, each command in its own terminal:");
    println!("  meshrpc registry --listen 127.0.0.1:7700");
    println!("  meshrpc demo --listen 127.0.0.1:0 --registry 127.0.0.1:7700   (start two or three)");
    println!(
        "  meshrpc fanout --service Calculator --registry 127.0.0.1:7700 meshrpc.Health.Check --deadline 200ms"
    );
    println!(
        "  meshrpc call --service Calculator --registry 127.0.0.1:7700 Calculator.Add '{{\"a\":10,\"b\":5}}'"
    );
    println!("To watch it live (services, instances, requests/s, errors, p50/p99), run");
    println!("  meshrpc demo --listen 127.0.0.1:7001");
    println!("and open the DASHBOARD address it prints; with a registry, its DASHBOARD shows every replica.");
    Ok(())
}

/// Seed 2: a Calculator server and a client calling `Calculator.Add` by name.
async fn rpc_by_name() -> Result<(), String> {
    heading(1, "RPC by name", "seed 2");
    let server = spawn_server(vec![demo::CalculatorServer::new(demo::Calc).into()]).await?;
    let addr = server.local_addr();
    println!("  A server registers the Calculator service (method Add) and listens on {addr}.");
    println!("  A client dials it and calls \"Calculator.Add\" with {{a: 10, b: 5}}:");
    let calc = CalculatorClient::connect(addr).await.map_err(|e| e.to_string())?;
    let opts = CallOptions::new().timeout(Duration::from_secs(5));
    let sum = calc.add_with(opts, 10, 5).await.map_err(|e| e.to_string())?;
    println!("  Result: {sum}");
    if sum != 15 {
        return Err(format!("Calculator.Add(10, 5) returned {sum}, expected 15"));
    }
    drop(calc);
    server.shutdown().await;
    Ok(())
}

/// Seed 4: a mutex-guarded counter hit by 1000 concurrent calls from several connections.
async fn safe_counter() -> Result<(), String> {
    heading(2, "Shared state under concurrency: the SafeCounter", "seed 4");
    let server = spawn_server(vec![demo::CounterServer::new(demo::SafeCounter::default()).into()]).await?;
    let addr = server.local_addr();
    const CALLS: usize = 1000;
    const CONNECTIONS: usize = 4;
    println!("  A Counter service keeps one value behind a mutex, on {addr}.");
    println!("  {CALLS} concurrent Counter.Inc calls arrive over {CONNECTIONS} connections…");
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(CounterClient::connect(addr).await.map_err(|e| e.to_string())?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let c = clients[i % CONNECTIONS].clone();
        tasks.spawn(async move {
            let opts = CallOptions::new().timeout(Duration::from_secs(10));
            c.inc_with(opts).await
        });
    }
    let mut failed: Vec<Status> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(s)) => failed.push(s),
            Err(e) => failed.push(Status::internal(e.to_string())),
        }
    }
    let value = clients[0].value().await.map_err(|e| e.to_string())?;
    println!(
        "  Counter.Value = {value} after {CALLS} calls in {} ms ({} failed)",
        started.elapsed().as_millis(),
        failed.len()
    );
    if let Some(first) = failed.first() {
        return Err(format!("{} Counter.Inc calls failed, the first with {first}", failed.len()));
    }
    if value != CALLS as i64 {
        return Err(format!("the counter reads {value}, expected exactly {CALLS}"));
    }
    println!("  Exactly {CALLS}: no increment was lost, none counted twice.");
    drop(clients);
    server.shutdown().await;
    Ok(())
}

/// Seed 8: one call to three servers at once, one of them down; every result reported.
async fn fan_out() -> Result<(), String> {
    heading(3, "High-concurrency RPC fan-out, one server down", "seed 8");
    let greeter = |name: &str| demo::GreeterServer::new(demo::NamedGreeter { instance: name.into() }).into();
    let a = spawn_server(vec![greeter("server A")]).await?;
    let b = spawn_server(vec![greeter("server B")]).await?;
    let down = free_port_nobody_listens_on().await?;
    let targets = [a.local_addr(), b.local_addr(), down];
    println!(
        "  Greeter servers are expected at {}, {} and {}; the last one is down.",
        targets[0], targets[1], targets[2]
    );
    println!(
        "  The caller sends Greeter.Hello {{name: \"Alice\"}} to all three at once (1 s deadline) and waits for all:"
    );
    let deadline = Duration::from_secs(1);
    let calls = targets.iter().map(|&addr| async move {
        let c = Client::builder().connect_timeout(deadline).connect(addr).await?;
        GreeterClient::new(c).hello_with(CallOptions::new().timeout(deadline), "Alice".into()).await
    });
    // meshrpc::fanout::all is the WaitGroup: every call at once, each result on its own.
    let started = Instant::now();
    let replies = fanout::all(calls).deadline(deadline).await;
    let took = started.elapsed();
    let results: Vec<_> = targets.iter().zip(replies).map(|(a, r)| (*a, r, took)).collect();
    let mut ok = 0;
    for (addr, result, _) in &results {
        match result {
            Ok(reply) => {
                ok += 1;
                println!("    {addr:<21} OK           {}", reply.message);
            }
            Err(s) => println!("    {addr:<21} {:<12} {}", s.code().as_str(), s.message()),
        }
    }
    println!("All RPC calls completed.");
    println!(
        "  All three took {} µs together (meshrpc::fanout::all, one 1 s deadline).",
        results[0].2.as_micros()
    );
    println!("  The server that was down failed fast with its own error; it did not hold up the other {ok}.");
    if ok != 2 || results[2].1.is_ok() {
        return Err(format!("expected 2 replies and 1 failure, got {ok} replies"));
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// A loopback port with no listener (bound, then released), to stand for a server that is down.
async fn free_port_nobody_listens_on() -> Result<SocketAddr, String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    drop(l);
    Ok(addr)
}

/// A Calculator replica that counts the calls it served.
struct CountingCalc(Arc<AtomicU64>);

impl demo::Calculator for CountingCalc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        demo::Calc.add(a, b).await
    }
}

/// Seeds 5, 6 and 10: replicas found through a registry, calls balanced over them, and
/// one replica crashing without the caller noticing.
async fn discovery_and_failover() -> Result<(), String> {
    heading(4, "Discovery, load balancing and failover", "seeds 5, 6, 10");
    // The dev registry, served over RPC like `meshrpc registry --listen` does.
    let registry_server = Server::builder()
        .dev_registry(MemoryRegistry::new())
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind a loopback port: {e}"))?
        .spawn();
    let reg_addr = registry_server.local_addr();
    let registry: Arc<dyn Registry> =
        Arc::new(DevRegistry::connect(reg_addr).await.map_err(|e| e.to_string())?);
    println!("  A dev registry listens on {reg_addr}; three Calculator replicas announce themselves in it");
    println!("  under 1 s leases they keep renewing:");
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let served = Arc::new(AtomicU64::new(0));
        let server = Server::builder()
            .add_service(demo::CalculatorServer::new(CountingCalc(served.clone())))
            .registry(registry.clone())
            .lease_ttl(Duration::from_secs(1))
            .bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind a loopback port: {e}"))?
            .spawn();
        replicas.push((Some(server), served));
    }
    let client = Client::discover("Calculator", registry.clone());
    let until = Instant::now() + Duration::from_secs(5);
    let instances = loop {
        let found = client.instances(Duration::from_secs(1)).await;
        if found.len() == 3 {
            break found;
        }
        if Instant::now() > until {
            return Err(format!("only {} of 3 replicas showed up in the registry", found.len()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for i in &instances {
        println!("    Calculator instance {}", i.addr);
    }
    let calc = CalculatorClient::new(client.clone());
    let opts = CallOptions::new().timeout(Duration::from_secs(2));
    const CALLS: i64 = 300;
    let run = |from: i64| {
        let (calc, opts) = (calc.clone(), opts.clone());
        async move {
            let calls = (from..from + CALLS).map(|i| {
                let (calc, opts) = (calc.clone(), opts.clone());
                async move { calc.add_with(opts, i, 1).await.map(|sum| (i, sum)) }
            });
            let mut failed = 0;
            for r in fanout::all(calls).await {
                match r {
                    Ok((i, sum)) if sum == i + 1 => {}
                    _ => failed += 1,
                }
            }
            failed
        }
    };
    let failed = run(0).await;
    let counts: Vec<u64> = replicas.iter().map(|(_, c)| c.load(Ordering::Relaxed)).collect();
    println!("  {CALLS} concurrent Calculator.Add calls through the balanced client: {failed} failed;");
    println!("  served per replica: {counts:?} (power of two choices over latency x load)");
    if failed > 0 {
        return Err(format!("{failed} calls failed with every replica up"));
    }
    let crashed = replicas[1].0.take().map(|s| {
        let addr = s.local_addr();
        s.abort();
        addr
    });
    let crashed = crashed.ok_or("the replica was already gone")?;
    println!("  Replica {crashed} crashes (no goodbye: its lease is simply no longer renewed).");
    let failed = run(CALLS).await;
    let stats = client.stats();
    let after: Vec<u64> = replicas.iter().map(|(_, c)| c.load(Ordering::Relaxed)).collect();
    println!(
        "  {CALLS} more calls: {failed} failed, {} retried on another replica (within the retry budget);",
        stats.retries
    );
    println!("  served per replica now: {after:?}");
    if failed > 0 {
        return Err(format!("{failed} calls failed after one replica of three crashed"));
    }
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = registry.list("Calculator").await.map_err(|e| e.to_string())?.instances.len();
        if listed == 2 {
            println!("  The registry dropped it when its lease expired: 2 instances listed.");
            break;
        }
        if Instant::now() > until {
            return Err(format!("the registry still lists {listed} instances 5 s after the crash"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health =
        client.broadcast::<_, serde_json::Value>("meshrpc.Health.Check", &serde_json::json!({}), &opts).await;
    println!("  A broadcast of meshrpc.Health.Check reaches the survivors:");
    for (inst, r) in &health {
        match r {
            Ok(v) => println!("    {:<21} OK           {v}", inst.addr),
            Err(s) => println!("    {:<21} {:<12} {}", inst.addr, s.code().as_str(), s.message()),
        }
    }
    for (s, _) in replicas {
        if let Some(s) = s {
            s.shutdown().await;
        }
    }
    registry_server.shutdown().await;
    Ok(())
}
