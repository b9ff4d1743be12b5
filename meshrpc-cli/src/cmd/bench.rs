//! `meshrpc bench`: a closed-loop load test through the public typed client.
//!
//! The same definition as the peer harness (`../shared/peers`): C requesters, each with
//! one call in flight, requester i on connection i % N, a warm-up that is not counted,
//! operands and payloads varied per requester and per call, and every reply verified.
//!
//! The load runs on T threads (default: one per CPU), each a single-threaded tokio runtime
//! that owns its connections and the requesters on them, as wrk does: requesters never
//! contend with another thread for a connection's locks and wake-ups stay on one thread.
//! Measured against one shared two-worker runtime (same binaries, same session, medians
//! of 3): add c=256 1.08M against 0.80M requests/s, echo1k c=256 0.81M against 0.56M,
//! add c=32 0.41M against 0.40M with p99 0.17 against 0.25 ms, add c=1 pinned 80k
//! against 64k. One thread alone did 0.71M at c=256: it sleeps between batches.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use meshrpc::demo::{CalculatorClient, EchoClient};
use meshrpc::discovery::Registry;
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

impl Tally {
    /// Adds another requester's (or thread's) tally to this one.
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
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

/// How a run is laid out in time, shared by every load thread.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// What the load threads share: the progress count, the stop flag and the histograms.
struct Shared {
    done: AtomicU64,
    stop: AtomicBool,
    hists: Box<[std::sync::Mutex<Histogram<u64>>]>,
}

/// What one load thread needs to know to connect and drive its share of the requesters.
#[derive(Clone)]
struct Plan {
    addr: Option<String>,
    service: Option<String>,
    registry: Option<Arc<dyn Registry>>,
    codec: Codec,
    method: Option<Arc<str>>,
    raw_payload: Bytes,
    workload: Workload,
    c: usize,
    connections: usize,
    threads: usize,
    calls: Option<u64>,
    opts: CallOptions,
}

impl Plan {
    /// Opens one connection (a client of its own) and wraps it as the workload's target.
    async fn target(&self) -> Result<Target, String> {
        let client = match (&self.addr, &self.service, &self.registry) {
            (Some(addr), _, _) => {
                Client::builder().codec(self.codec).connect(addr).await.map_err(|s: Status| {
                    format!("{s}\nhint: start a server first, e.g. `meshrpc demo --listen {addr}`")
                })?
            }
            (None, Some(service), Some(reg)) => {
                let client = Client::builder().codec(self.codec).discover(service, reg.clone());
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
        Ok(match (&self.method, self.workload) {
            (Some(m), _) => Target::Raw { client, method: m.clone(), payload: self.raw_payload.clone() },
            (None, Workload::Add) => Target::Add(CalculatorClient::new(client)),
            (None, Workload::Echo1k) => Target::Echo(EchoClient::new(client)),
        })
    }

    /// Calls requester `i` makes with `--calls`: its share of the total.
    fn quota(&self, i: usize) -> Option<u64> {
        let c = self.c as u64;
        self.calls.map(|n| n / c + u64::from((i as u64) < n % c))
    }

    /// Load thread `t`: a single-threaded runtime that owns connections j with
    /// j % threads == t and the requesters on them (requester i uses connection i % N).
    /// It reports once its connections are open, then waits for the common clock.
    fn drive(
        self,
        t: usize,
        shared: Arc<Shared>,
        ready: std::sync::mpsc::Sender<Result<(), String>>,
        go: tokio::sync::oneshot::Receiver<Clock>,
    ) -> Result<Tally, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a load thread's runtime: {e}"))?;
        rt.block_on(async move {
            let mut targets = Vec::new();
            for j in (t..self.connections).step_by(self.threads) {
                match self.target().await {
                    Ok(target) => targets.push((j, target)),
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return Ok(Tally::default());
                    }
                }
            }
            let _ = ready.send(Ok(()));
            let Ok(clock) = go.await else { return Ok(Tally::default()) };
            let mut tasks = tokio::task::JoinSet::new();
            for i in (0..self.c).filter(|i| (i % self.connections) % self.threads == t) {
                let Some((_, target)) = targets.iter().find(|(j, _)| *j == i % self.connections) else {
                    continue;
                };
                tasks.spawn(requester(
                    i,
                    target.clone(),
                    self.opts.clone(),
                    self.quota(i),
                    clock,
                    shared.clone(),
                ));
            }
            let mut total = Tally::default();
            while let Some(r) = tasks.join_next().await {
                total.add(r.map_err(|e| format!("a requester failed: {e}"))?);
            }
            Ok(total)
        })
    }
}

/// Requester `i`: one call in flight at a time until the clock or its quota runs out.
async fn requester(
    i: usize,
    target: Target,
    opts: CallOptions,
    quota: Option<u64>,
    clock: Clock,
    shared: Arc<Shared>,
) -> Tally {
    let hist = &shared.hists[i % shared.hists.len()];
    let mut t = Tally::default();
    let mut buf: Vec<u8> = (0..1024u32).map(|k| (k * 31 + i as u32) as u8).collect();
    let mut seq = 0u64;
    // One clock reading per call: a call's end is the next one's start (the loop sends
    // the next call at once), so latency also covers the reply's check.
    let mut t0 = Instant::now();
    loop {
        if t0 >= clock.end
            || shared.stop.load(Ordering::Relaxed)
            || quota.is_some_and(|q| t.ok + t.errors >= q)
        {
            break;
        }
        let r = target.call(i as u64, seq, &opts, &mut buf).await;
        seq += 1;
        let t1 = Instant::now();
        let started = std::mem::replace(&mut t0, t1);
        if started < clock.measure_from {
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
                    shared.stop.store(true, Ordering::Relaxed); // badly broken: stop early
                }
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    t
}

async fn bench(args: BenchArgs) -> Result<ExitCode, String> {
    let c = args.concurrency.max(1);
    let n = args.connections.unwrap_or(if c == 1 { 1 } else { 4 }).clamp(1, c);
    let cpus = std::thread::available_parallelism().map_or(1, |p| p.get());
    let threads = args.threads.unwrap_or(cpus).clamp(1, n);
    let codec = Codec::from(args.codec);
    let raw_payload = match &args.args {
        Some(json) => {
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
            Bytes::from(json.clone().into_bytes())
        }
        None => Bytes::new(),
    };
    let plan = Plan {
        addr: args.addr.clone(),
        service: args.service.clone(),
        registry: args.registry.connect().await?,
        codec,
        method: args.method.as_deref().map(Arc::from),
        raw_payload,
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
    let shared = Arc::new(Shared {
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        hists: (0..HISTOGRAMS.min(c)).map(|_| std::sync::Mutex::new(histogram())).collect(),
    });

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
    let connected = tokio::task::spawn_blocking(move || {
        (0..threads).try_for_each(|_| ready_rx.recv().unwrap_or_else(|_| Err("a load thread stopped".into())))
    })
    .await
    .map_err(|e| format!("a load thread failed: {e}"))?;
    if let Err(e) = connected {
        drop(gos); // the threads see the clock will never start and return
        return Err(e);
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

    let bar = progress(&args, c, n, &label, codec);
    let ticker = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let d = shared.done.load(Ordering::Relaxed);
                let rate = (d - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, d);
                let phase = if now < clock.measure_from { "warm-up" } else { "measuring" };
                bar.set_position(now.saturating_duration_since(clock.start).as_millis() as u64);
                bar.set_message(format!("{phase}: {} calls, {} requests/s", group(d), group(rate as u64)));
            }
        })
    };
    let results = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a load thread panicked".into())))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| format!("a load thread failed: {e}"))?;
    let mut total = Tally::default();
    for r in results {
        total.add(r?);
    }
    let mut hist = histogram();
    for h in shared.hists.iter() {
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
