//! The load of `meshrpc bench`: T threads, each a single-threaded tokio runtime that owns
//! its connections and the requesters on them, and the closed loop each requester runs.
//!
//! This is wrk's layout: a requester never contends with another thread for a
//! connection's locks, and wake-ups stay on one thread. Measured against one shared
//! two-worker runtime (same binaries, same session, medians of 3): add c=256 1.08M
//! against 0.80M requests/s, echo1k c=256 0.81M against 0.56M, add c=32 0.41M against
//! 0.40M with p99 0.17 against 0.25 ms, add c=1 pinned 80k against 64k. One thread alone
//! did 0.71M at c=256: it sleeps between batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use meshrpc::demo::{CalculatorClient, EchoClient};
use meshrpc::discovery::Registry;
use meshrpc::{Blob, CallOptions, Client, Codec, Status};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Workload;

/// Each thread's requesters share this many histograms between them (requester i records
/// into its thread's i % H, each behind a mutex only that thread takes). One ~220 KiB
/// histogram per requester spread the hot counters over megabytes: at c=256 recording
/// was ~11 % of the bench client's CPU (perf), all cache misses; sixteen in all keep them
/// in cache. Every call's latency is still recorded, at the same precision.
const HISTOGRAMS: usize = 16;

/// A latency histogram: 1 ns .. 60 s at 3 significant digits.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// What requesters saw (their latencies go to the histograms).
#[derive(Default)]
pub(super) struct Tally {
    /// Calls answered and verified.
    pub(super) ok: u64,
    /// Calls that failed or came back wrong.
    pub(super) errors: u64,
    /// What the first failure said.
    pub(super) first_error: Option<String>,
}

impl Tally {
    /// Adds another requester's (or thread's) tally to this one.
    pub(super) fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// How a run is laid out in time, the same for every load thread.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    /// When the warm-up began.
    pub(super) start: Instant,
    /// When measuring begins (the end of the warm-up).
    pub(super) measure_from: Instant,
    /// When requesters stop sending.
    pub(super) end: Instant,
}

/// A counter on a cache line of its own: each load thread writes one on every call.
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// What the load threads and the progress bar share.
pub(super) struct Shared {
    /// Calls finished so far, one counter per thread (no line bounces between threads).
    done: Box<[Padded]>,
    /// Set when the run must end early (too many errors, a failed thread).
    stop: Padded,
}

impl Shared {
    /// Counters for `threads` load threads.
    pub(super) fn new(threads: usize) -> Arc<Shared> {
        Arc::new(Shared { done: (0..threads).map(|_| Padded::default()).collect(), stop: Padded::default() })
    }

    /// Calls finished so far by every thread.
    pub(super) fn done(&self) -> u64 {
        self.done.iter().map(|d| d.0.load(Ordering::Relaxed)).sum()
    }

    /// Asks every requester to stop after its current call.
    pub(super) fn stop(&self) {
        self.stop.0.store(1, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.0.load(Ordering::Relaxed) != 0
    }
}

/// What one load thread hands back.
pub(super) struct Finished {
    /// Its requesters' tallies, summed.
    pub(super) tally: Tally,
    /// Its requesters' latencies, merged.
    pub(super) hist: Histogram<u64>,
    /// When its last requester stopped.
    pub(super) at: Instant,
}

/// Which connections thread `t` of `threads` owns, and the requesters it runs, each with
/// the index of its connection among the thread's: requester i uses connection i % n, and
/// the thread that owns connection j is j % threads.
pub(super) fn share(c: usize, n: usize, threads: usize, t: usize) -> (Vec<usize>, Vec<(usize, usize)>) {
    let conns: Vec<usize> = (t..n).step_by(threads.max(1)).collect();
    let requesters = (0..c).filter(|i| (i % n) % threads == t).map(|i| (i, (i % n) / threads)).collect();
    (conns, requesters)
}

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

/// What every load thread needs to know to connect and drive its share of the requesters.
#[derive(Clone)]
pub(super) struct Plan {
    /// The server (or `None` with `service`).
    pub(super) addr: Option<String>,
    /// The service to find in `registry`.
    pub(super) service: Option<String>,
    /// The registry, already reached from the main runtime.
    pub(super) registry: Option<Arc<dyn Registry>>,
    /// The payload codec.
    pub(super) codec: Codec,
    /// A method called by name instead of a built-in workload, with its JSON arguments.
    pub(super) method: Option<(Arc<str>, Bytes)>,
    /// The built-in workload.
    pub(super) workload: Workload,
    /// Requesters (calls in flight).
    pub(super) c: usize,
    /// Connections.
    pub(super) connections: usize,
    /// Load threads.
    pub(super) threads: usize,
    /// Calls to make in all, instead of running for a duration.
    pub(super) calls: Option<u64>,
    /// Each call's options (its deadline).
    pub(super) opts: CallOptions,
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
            (Some((m, payload)), _) => Target::Raw { client, method: m.clone(), payload: payload.clone() },
            (None, Workload::Add) => Target::Add(CalculatorClient::new(client)),
            (None, Workload::Echo1k) => Target::Echo(EchoClient::new(client)),
        })
    }

    /// Calls requester `i` makes with `--calls`: its share of the total.
    fn quota(&self, i: usize) -> Option<u64> {
        let c = self.c as u64;
        self.calls.map(|n| n / c + u64::from((i as u64) < n % c))
    }

    /// Runs load thread `t` to the end: opens its connections, says so on `ready` (once,
    /// then lets go of it, so the main thread never waits on a thread that is waiting for
    /// it), waits for the common clock on `go`, then runs its requesters.
    pub(super) fn drive(
        self,
        t: usize,
        shared: Arc<Shared>,
        ready: Sender<Result<(), String>>,
        go: oneshot::Receiver<Clock>,
    ) -> Result<Finished, String> {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let e = format!("cannot start a load thread's runtime: {e}");
                let _ = ready.send(Err(e.clone()));
                return Err(e);
            }
        };
        rt.block_on(async move {
            let (conns, requesters) = share(self.c, self.connections, self.threads, t);
            let mut targets = Vec::with_capacity(conns.len());
            for _ in &conns {
                match self.target().await {
                    Ok(target) => targets.push(target),
                    Err(e) => {
                        let _ = ready.send(Err(e.clone()));
                        return Err(e);
                    }
                }
            }
            let _ = ready.send(Ok(()));
            drop(ready);
            let Ok(clock) = go.await else {
                // Called off because another thread failed: its error is the one to show.
                return Ok(Finished { tally: Tally::default(), hist: histogram(), at: Instant::now() });
            };
            let per_thread = (HISTOGRAMS / self.threads).max(1).min(requesters.len().max(1));
            let hists: Arc<[Mutex<Histogram<u64>>]> =
                (0..per_thread).map(|_| Mutex::new(histogram())).collect();
            let mut tasks = tokio::task::JoinSet::new();
            for (k, &(i, local)) in requesters.iter().enumerate() {
                let r = Requester {
                    id: i,
                    target: targets[local].clone(),
                    opts: self.opts.clone(),
                    quota: self.quota(i),
                    clock,
                    hist: hists.clone(),
                    slot: k % per_thread,
                    thread: t,
                    shared: shared.clone(),
                };
                tasks.spawn(r.run());
            }
            let mut tally = Tally::default();
            while let Some(r) = tasks.join_next().await {
                match r {
                    Ok(t) => tally.add(t),
                    Err(e) => {
                        shared.stop();
                        return Err(format!("a requester failed: {e}"));
                    }
                }
            }
            let at = Instant::now();
            let mut hist = histogram();
            for h in hists.iter() {
                let _ = hist.add(&*h.lock().unwrap_or_else(|e| e.into_inner()));
            }
            Ok(Finished { tally, hist, at })
        })
    }
}

/// One requester: one call in flight at a time until the clock or its quota runs out.
struct Requester {
    /// Its number (operands and payloads vary with it).
    id: usize,
    target: Target,
    opts: CallOptions,
    quota: Option<u64>,
    clock: Clock,
    /// Its thread's histograms, and the one it records into.
    hist: Arc<[Mutex<Histogram<u64>>]>,
    slot: usize,
    /// Its thread, whose progress counter it adds to.
    thread: usize,
    shared: Arc<Shared>,
}

impl Requester {
    async fn run(self) -> Tally {
        let (hist, done) = (&self.hist[self.slot], &self.shared.done[self.thread].0);
        let mut t = Tally::default();
        let mut buf: Vec<u8> = (0..1024u32).map(|k| (k * 31 + self.id as u32) as u8).collect();
        let mut seq = 0u64;
        // One clock reading per call: a call's end is the next one's start (the loop sends
        // the next call at once), so latency also covers the reply's check.
        let mut t0 = Instant::now();
        loop {
            if t0 >= self.clock.end
                || self.shared.stopped()
                || self.quota.is_some_and(|q| t.ok + t.errors >= q)
            {
                break;
            }
            let r = self.target.call(self.id as u64, seq, &self.opts, &mut buf).await;
            seq += 1;
            let t1 = Instant::now();
            let started = std::mem::replace(&mut t0, t1);
            if started < self.clock.measure_from {
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
                        self.shared.stop(); // badly broken: stop early
                    }
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn every_requester_runs_once_on_the_thread_that_owns_its_connection() {
        for c in [1, 2, 7, 32, 256] {
            for n in 1..=c.min(9) {
                for threads in 1..=n.min(5) {
                    let mut runs = vec![0u32; c];
                    let mut owners = vec![0u32; n];
                    for t in 0..threads {
                        let (conns, requesters) = share(c, n, threads, t);
                        for &j in &conns {
                            owners[j] += 1;
                        }
                        for (i, local) in requesters {
                            runs[i] += 1;
                            assert_eq!(conns[local], i % n, "c={c} n={n} threads={threads} t={t} i={i}");
                        }
                    }
                    assert!(runs.iter().all(|&r| r == 1), "c={c} n={n} threads={threads}: {runs:?}");
                    assert!(owners.iter().all(|&o| o == 1), "c={c} n={n} threads={threads}: {owners:?}");
                }
            }
        }
    }
}
