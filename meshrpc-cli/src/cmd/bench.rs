//! `meshrpc bench`: a closed-loop load test through the public typed client.
//!
//! The same definition as the peer harness (`../shared/peers`): C requesters, each with
//! one call in flight, requester i on connection i % N, a warm-up that is not counted,
//! operands and payloads varied per requester and per call, and every reply verified.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use meshrpc::demo::{CalculatorClient, EchoClient};
use meshrpc::{Blob, CallOptions, Client, Codec, Status};
use tokio::time::Instant;

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
enum Workload {
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

/// What a requester saw (latencies go to the shared histograms).
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// A latency histogram: 1 ns .. 60 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// Requesters share this many histograms (requester i records into i % HISTOGRAMS, each
/// behind a mutex that is almost never contended). One ~220 KiB histogram per requester
/// spread the hot counters over megabytes: at c=256 recording was ~11 % of the bench
/// client's CPU (perf), all cache misses; sixteen keep them in cache. Every call's
/// latency is still recorded, at the same precision.
const HISTOGRAMS: usize = 16;

/// One kind of call the requesters make.
#[derive(Clone)]
enum Target {
    Add(CalculatorClient),
    Echo(EchoClient),
    Raw { client: Client, method: Arc<str>, payload: Bytes },
}

impl Target {
    /// Makes call number `seq` of requester `id`; `Err` says what went wrong.
    async fn call(&self, id: u64, seq: u64, opts: &CallOptions, echo_buf: &mut [u8]) -> Result<(), String> {
        match self {
            Target::Add(c) => {
                let a = (id as i64) * 1_000_003 + seq as i64;
                let b = (seq as i64) * 7 - id as i64;
                let sum = c.add_with(opts.clone(), a, b).await.map_err(|e| e.to_string())?;
                if sum == a + b { Ok(()) } else { Err(format!("{a} + {b} came back as {sum}")) }
            }
            Target::Echo(c) => {
                echo_buf[..8].copy_from_slice(&seq.to_le_bytes());
                echo_buf[8..16].copy_from_slice(&id.to_le_bytes());
                let sent = Blob::from(&echo_buf[..]);
                let got = c.echo_with(opts.clone(), sent).await.map_err(|e| e.to_string())?;
                if got[..] == echo_buf[..] {
                    Ok(())
                } else {
                    Err("the echo differs from what was sent".into())
                }
            }
            Target::Raw { client, method, payload } => {
                client.call_raw(method, Codec::Json, payload, opts).await.map(drop).map_err(|e| e.to_string())
            }
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
    let codec = Codec::from(args.codec);
    let mut clients = Vec::with_capacity(n);
    let registry = args.registry.connect().await?;
    for _ in 0..n {
        let client = match (&args.addr, &args.service, &registry) {
            (Some(addr), _, _) => {
                Client::builder().codec(codec).connect(addr).await.map_err(|s: Status| {
                    format!("{s}\nhint: start a server first, e.g. `meshrpc demo --listen {addr}`")
                })?
            }
            (None, Some(service), Some(reg)) => {
                let client = Client::builder().codec(codec).discover(service, reg.clone());
                if client.instances(Duration::from_secs(5)).await.is_empty() {
                    return Err(format!("no live instance of {service} in the registry"));
                }
                client
            }
            _ => {
                return Err(
                    "give --addr ADDR, or --service NAME with --registry ADDR or --etcd ENDPOINTS".into()
                );
            }
        };
        clients.push(client);
    }
    let raw_payload = match &args.args {
        Some(json) => {
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
            Bytes::from(json.clone().into_bytes())
        }
        None => Bytes::new(),
    };
    let targets: Vec<Target> = clients
        .into_iter()
        .map(|client| match (&args.method, args.workload) {
            (Some(m), _) => {
                Target::Raw { client, method: Arc::from(m.as_str()), payload: raw_payload.clone() }
            }
            (None, Workload::Add) => Target::Add(CalculatorClient::new(client)),
            (None, Workload::Echo1k) => Target::Echo(EchoClient::new(client)),
        })
        .collect();
    let label = match (&args.method, args.workload) {
        (Some(m), _) => m.clone(),
        (None, Workload::Add) => "add".into(),
        (None, Workload::Echo1k) => "echo1k".into(),
    };

    let start = Instant::now();
    let measure_from = start + args.warmup;
    // With --calls, the duration is only a safety cap; requester i makes its share.
    let end =
        measure_from + if args.calls.is_some() { Duration::from_secs(24 * 3600) } else { args.duration };
    let share = |i: usize| args.calls.map(|n| n / c as u64 + u64::from((i as u64) < n % c as u64));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let opts = CallOptions::new().timeout(args.timeout);
    let hists: Arc<[std::sync::Mutex<Histogram<u64>>]> =
        (0..HISTOGRAMS.min(c)).map(|_| std::sync::Mutex::new(histogram())).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..c {
        let target = targets[i % n].clone();
        let (done, stop, opts, hists) = (done.clone(), stop.clone(), opts.clone(), hists.clone());
        let quota = share(i);
        tasks.spawn(async move {
            let hist = &hists[i % hists.len()];
            let mut t = Tally::default();
            let mut buf: Vec<u8> = (0..1024u32).map(|k| (k * 31 + i as u32) as u8).collect();
            let mut seq = 0u64;
            // One clock reading per call: a call's end is the next one's start (the loop
            // sends the next call at once), so latency also covers the reply's check.
            let mut t0 = Instant::now();
            loop {
                if t0 >= end || stop.load(Ordering::Relaxed) || quota.is_some_and(|q| t.ok + t.errors >= q) {
                    break;
                }
                let r = target.call(i as u64, seq, &opts, &mut buf).await;
                seq += 1;
                let t1 = Instant::now();
                let started = std::mem::replace(&mut t0, t1);
                if started < measure_from {
                    continue;
                }
                let ns = t1.saturating_duration_since(started).as_nanos().min(u128::from(u64::MAX)) as u64;
                match r {
                    Ok(()) => {
                        t.ok += 1;
                        let _ = hist.lock().unwrap_or_else(|e| e.into_inner()).record(ns.max(1));
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                        if t.errors > 1000 {
                            stop.store(true, Ordering::Relaxed); // badly broken: stop early
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            t
        });
    }

    let bar = progress(&args, c, n, &label, codec);
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let d = done.load(Ordering::Relaxed);
                let rate = (d - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, d);
                let phase = if now < measure_from { "warm-up" } else { "measuring" };
                bar.set_position(now.saturating_duration_since(start).as_millis() as u64);
                bar.set_message(format!("{phase}: {} calls, {} requests/s", group(d), group(rate as u64)));
            }
        })
    };
    let mut total = Tally::default();
    while let Some(r) = tasks.join_next().await {
        let t = r.map_err(|e| format!("a requester failed: {e}"))?;
        total.ok += t.ok;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
    }
    let mut hist = histogram();
    for h in hists.iter() {
        let _ = hist.add(&*h.lock().unwrap_or_else(|e| e.into_inner()));
    }
    ticker.abort();
    bar.finish_and_clear();
    let measured_secs = Instant::now().saturating_duration_since(measure_from).as_secs_f64().max(1e-9);

    let secs = match args.calls {
        Some(_) => measured_secs,
        None => args.duration.as_secs_f64(),
    };
    let rps = total.ok as f64 / secs;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    if args.json {
        let line = serde_json::json!({
            "workload": label, "c": c, "connections": n, "codec": codec.name(), "seconds": secs,
            "calls": total.ok, "requests_per_sec": (rps * 10.0).round() / 10.0,
            "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": hist.max() as f64 / 1000.0,
            "errors": total.errors,
        });
        println!("{line}");
    } else {
        println!(
            "meshrpc bench: {label}, {c} in flight over {n} connection(s), {codec} codec, {:?} after a {:?} warm-up",
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

fn progress(args: &BenchArgs, c: usize, n: usize, label: &str, codec: Codec) -> ProgressBar {
    let total_ms = (args.warmup + args.duration).as_millis() as u64;
    let bar = ProgressBar::new(total_ms);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("{label} c={c} conns={n} {}", codec.name()));
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
