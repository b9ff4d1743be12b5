//! `meshrpc bench`: a closed-loop load test through the public typed client.
//!
//! The same definition as the peer harness (`../shared/peers`): C requesters, each with
//! one call in flight, requester i on connection i % N, a warm-up that is not counted,
//! operands and payloads varied per requester and per call, and every reply verified.
//!
//! The load runs on T threads, each a single-threaded runtime that owns its connections
//! and their requesters ([`load`] says why and what it measured).

mod load;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use meshrpc::{CallOptions, Codec};
use tokio::time::Instant;

use load::{Clock, Finished, Plan, Shared, Tally, histogram};

/// Arguments of `meshrpc bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Server address, e.g. 127.0.0.1:7001 (a `meshrpc demo --listen` server for the built-in workloads).
    #[arg(long, value_name = "ADDR", required_unless_present = "service", conflicts_with = "service")]
    addr: Option<String>,
    /// Load-test a service found in a registry instead, balanced over its instances
    /// (each requester's client has one connection per instance).
    #[arg(long, value_name = "NAME", requires = "registry_or_etcd")]
    service: Option<String>,
    #[command(flatten)]
    registry: super::target::RegistryArgs,
    /// Built-in workload: `add` (Calculator.Add, sums checked) or `echo1k` (Echo.Echo, 1 KiB compared).
    #[arg(long, value_enum, default_value_t = Workload::Add)]
    workload: Workload,
    /// Calls in flight (closed loop: C requesters with one call each).
    #[arg(short = 'c', long = "concurrency", value_name = "C", default_value_t = 32)]
    concurrency: usize,
    /// Measured duration (e.g. 10s).
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before measuring (not counted).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Connections; requester i uses connection i % N. Default: 1 when C = 1, else 4.
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// Load threads, each a single-threaded runtime that owns connections j with j % T == t
    /// and their requesters (as wrk does). Default: one per CPU, at most one per connection.
    #[arg(long, value_name = "T")]
    threads: Option<usize>,
    /// Make exactly this many calls (after the warm-up) instead of running for a duration.
    #[arg(long, value_name = "N")]
    calls: Option<u64>,
    /// Per-call deadline.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Payload codec.
    #[arg(long, value_enum, default_value_t = CodecArg::Msgpack)]
    codec: CodecArg,
    /// Print one JSON line instead of the report.
    #[arg(long)]
    json: bool,
    /// Load-test any method instead of a built-in workload (replies are not verified).
    #[arg(value_name = "METHOD", requires = "args")]
    method: Option<String>,
    /// JSON arguments for METHOD.
    #[arg(value_name = "JSON", id = "args")]
    args: Option<String>,
}

/// A built-in workload.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Workload {
    /// `Calculator.Add` with two i64; every sum is checked.
    Add,
    /// `Echo.Echo` with 1 KiB; every echo is compared byte for byte.
    Echo1k,
}

/// A codec name on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    /// MessagePack (the default codec).
    Msgpack,
    /// JSON.
    Json,
    /// The positional binary codec (postcard).
    Binary,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Msgpack => Codec::MessagePack,
            CodecArg::Json => Codec::Json,
            CodecArg::Binary => Codec::Binary,
        }
    }
}

/// Runs `meshrpc bench`.
pub(crate) async fn run(args: BenchArgs) -> ExitCode {
    match bench(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: BenchArgs) -> Result<ExitCode, String> {
    let c = args.concurrency.max(1);
    let n = args.connections.unwrap_or(if c == 1 { 1 } else { 4 }).clamp(1, c);
    let cpus = std::thread::available_parallelism().map_or(1, |p| p.get());
    let threads = args.threads.unwrap_or(cpus).clamp(1, n);
    let codec = Codec::from(args.codec);
    let method = match (&args.method, &args.args) {
        (Some(m), Some(json)) => {
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
            Some((Arc::from(m.as_str()), Bytes::from(json.clone().into_bytes())))
        }
        _ => None,
    };
    let registry = args.registry.connect().await?;
    if let (Some(service), Some(reg)) = (&args.service, &registry) {
        // Reached from the main runtime first, so the registry's connection lives here and
        // outlives every load thread (a lazily dialled one would belong to the first
        // thread that used it).
        let found = reg.list(service).await.map_err(|s| format!("cannot read the registry: {s}"))?;
        if found.instances.is_empty() {
            return Err(format!("no live instance of {service} in the registry"));
        }
    }
    let plan = Plan {
        addr: args.addr.clone(),
        service: args.service.clone(),
        registry,
        codec,
        method,
        workload: args.workload,
        c,
        connections: n,
        threads,
        calls: args.calls,
        opts: CallOptions::new().timeout(args.timeout),
    };
    let label = match (&args.method, args.workload) {
        (Some(m), _) => m.clone(),
        (None, Workload::Add) => "add".into(),
        (None, Workload::Echo1k) => "echo1k".into(),
    };
    let shared = Shared::new(threads);

    // Every load thread opens its connections first; the clock starts once all are open.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut gos = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let (go_tx, go_rx) = tokio::sync::oneshot::channel();
        gos.push(go_tx);
        let (plan, shared, ready) = (plan.clone(), shared.clone(), ready_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || plan.drive(t, shared, ready, go_rx))
            .map_err(|e| format!("cannot start a load thread: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    // Each thread sends once and then drops its sender, so this ends: all sent, or one
    // failed, or one died before sending (its sender dropped as it unwound).
    let connected = tokio::task::spawn_blocking(move || {
        for _ in 0..threads {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Some(e)),
                Err(_) => return Err(None),
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("a load thread failed: {e}"))?;
    if let Err(first) = connected {
        drop(gos); // the threads waiting for the clock return at once
        let results = join(handles).await?;
        let died = results.into_iter().find_map(Result::err);
        return Err(first.or(died).unwrap_or_else(|| "a load thread stopped before it connected".into()));
    }

    let start = Instant::now();
    let measure_from = start + args.warmup;
    // With --calls, the duration is only a safety cap; requester i makes its share.
    let end =
        measure_from + if args.calls.is_some() { Duration::from_secs(24 * 3600) } else { args.duration };
    let clock = Clock { start, measure_from, end };
    for go in gos {
        let _ = go.send(clock);
    }

    let bar = progress(&args, c, n, threads, &label, codec);
    let ticker = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let d = shared.done();
                let rate = (d - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, d);
                let phase = if now < clock.measure_from { "warm-up" } else { "measuring" };
                bar.set_position(now.saturating_duration_since(clock.start).as_millis() as u64);
                bar.set_message(format!("{phase}: {} calls, {} requests/s", group(d), group(rate as u64)));
            }
        })
    };
    let results = join(handles).await?;
    ticker.abort();
    bar.finish_and_clear();
    let mut total = Tally::default();
    let mut hist = histogram();
    let mut last = measure_from;
    for r in results {
        let f = r?;
        total.add(f.tally);
        let _ = hist.add(&f.hist);
        last = last.max(f.at);
    }

    let secs = match args.calls {
        Some(_) => last.saturating_duration_since(measure_from).as_secs_f64().max(1e-9),
        None => args.duration.as_secs_f64(),
    };
    let rps = total.ok as f64 / secs;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    if args.json {
        let line = serde_json::json!({
            "workload": label, "c": c, "connections": n, "threads": threads, "codec": codec.name(), "seconds": secs,
            "calls": total.ok, "requests_per_sec": (rps * 10.0).round() / 10.0,
            "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": hist.max() as f64 / 1000.0,
            "errors": total.errors,
        });
        println!("{line}");
    } else {
        println!(
            "meshrpc bench: {label}, {c} in flight over {n} connection(s) on {threads} thread(s), {codec} codec, {:?} after a {:?} warm-up",
            args.duration,
            args.warmup,
            codec = codec.name()
        );
        println!("  calls        {}", group(total.ok));
        println!("  requests/s   {}", group(rps.round() as u64));
        println!(
            "  latency      p50 {}   p99 {}   p99.9 {}   max {}",
            dur(q(0.5)),
            dur(q(0.99)),
            dur(q(0.999)),
            dur(hist.max() as f64 / 1000.0)
        );
        println!("  errors       {}", group(total.errors));
    }
    if let Some(e) = &total.first_error {
        eprintln!("first error: {e}");
    }
    Ok(if total.ok == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Waits for every load thread (off the async workers) and returns what each gave back;
/// a thread that panicked gives its panic message.
async fn join(
    handles: Vec<std::thread::JoinHandle<Result<Finished, String>>>,
) -> Result<Vec<Result<Finished, String>>, String> {
    tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|p| {
                    let why = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    Err(format!("a load thread panicked: {why}"))
                })
            })
            .collect()
    })
    .await
    .map_err(|e| format!("a load thread failed: {e}"))
}

fn progress(args: &BenchArgs, c: usize, n: usize, threads: usize, label: &str, codec: Codec) -> ProgressBar {
    let total_ms = (args.warmup + args.duration).as_millis() as u64;
    let bar = ProgressBar::new(total_ms);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("{label} c={c} conns={n} threads={threads} {}", codec.name()));
    bar
}

/// 1234567 → "1,234,567".
fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Microseconds with a unit that fits: "850 µs", "1.23 ms", "2.50 s".
fn dur(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}
