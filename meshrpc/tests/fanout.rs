//! Fan-out: WaitGroup, all / quorum / first_ok / hedged, over plain futures (with the
//! clock paused, so timings are exact) and over real RPC servers.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use meshrpc::fanout::{self, WaitGroup};
use meshrpc::{Client, Code, Status};
use support::*;
use tokio::time::Instant;

type Call = Pin<Box<dyn Future<Output = Result<u32, Status>> + Send>>;

/// Sets its flag when dropped: proves a future was cancelled, not left running.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A call that answers `r` after `ms`; `dropped` is set when its future goes away.
fn after(ms: u64, r: Result<u32, Status>, dropped: &Arc<AtomicBool>) -> Call {
    let flag = DropFlag(dropped.clone());
    Box::pin(async move {
        let _flag = flag;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        r
    })
}

fn flags(n: usize) -> Vec<Arc<AtomicBool>> {
    (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect()
}

#[tokio::test(start_paused = true)]
async fn all_reports_each_result_and_cuts_stragglers_at_the_deadline() {
    let d = flags(4);
    let t0 = Instant::now();
    let results = fanout::all([
        after(10, Ok(1), &d[0]),
        after(5, Err(Status::unavailable("replica down")), &d[1]),
        after(5_000, Ok(3), &d[2]),
        after(150, Ok(4), &d[3]),
    ])
    .deadline(Duration::from_millis(200))
    .await;
    assert_eq!(t0.elapsed(), Duration::from_millis(200), "the group waited exactly for its deadline");
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().ok(), Some(&1));
    assert_eq!(
        results[1].as_ref().unwrap_err().code(),
        Code::Unavailable,
        "a failure does not cancel others"
    );
    assert_eq!(results[2].as_ref().unwrap_err().code(), Code::DeadlineExceeded);
    assert_eq!(results[3].as_ref().ok(), Some(&4), "a call finishing after a failure still counts");
    assert!(d[2].load(Ordering::SeqCst), "the straggler was cancelled");
}

#[tokio::test(start_paused = true)]
async fn all_without_a_deadline_waits_for_every_call() {
    let d = flags(2);
    let t0 = Instant::now();
    let results = fanout::all([after(300, Ok(1), &d[0]), after(700, Ok(2), &d[1])]).await;
    assert_eq!(t0.elapsed(), Duration::from_millis(700));
    assert_eq!(results.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [1, 2], "in the order given");
}

#[tokio::test(start_paused = true)]
async fn quorum_returns_at_k_successes_and_cancels_the_rest() {
    let d = flags(4);
    let t0 = Instant::now();
    let ok = fanout::quorum(
        2,
        [after(30, Ok(1), &d[0]), after(10, Ok(2), &d[1]), after(20, Ok(3), &d[2]), after(900, Ok(4), &d[3])],
    )
    .await
    .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(20));
    assert_eq!(ok, vec![(1, 2), (2, 3)], "(index, value) in the order they finished");
    assert!(d[0].load(Ordering::SeqCst) && d[3].load(Ordering::SeqCst), "the rest were cancelled");
}

#[tokio::test(start_paused = true)]
async fn quorum_fails_as_soon_as_k_is_out_of_reach() {
    let d = flags(4);
    let t0 = Instant::now();
    let err = fanout::quorum(
        3,
        [
            after(10, Err(Status::unavailable("a is down")), &d[0]),
            after(5_000, Ok(2), &d[1]),
            after(20, Err(Status::unavailable("c is down")), &d[2]),
            after(5_000, Ok(4), &d[3]),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_millis(20), "failed at the second failure, not at 5 s");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("a is down") && err.message().contains("c is down"), "{err}");
    assert!(d[1].load(Ordering::SeqCst) && d[3].load(Ordering::SeqCst), "the calls left were cancelled");
}

#[tokio::test(start_paused = true)]
async fn quorum_at_the_deadline_and_impossible_quorums() {
    let d = flags(2);
    let err = fanout::quorum(2, [after(10, Ok(1), &d[0]), after(900, Ok(2), &d[1])])
        .deadline(Duration::from_millis(100));
    let err = err.await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.message().contains("1 succeeded"), "{err}");
    let none: Vec<Call> = Vec::new();
    assert_eq!(fanout::quorum(1, none).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(start_paused = true)]
async fn first_ok_skips_failures_and_fails_only_when_all_do() {
    let d = flags(3);
    let won = fanout::first_ok([
        after(5, Err(Status::internal("boom")), &d[0]),
        after(40, Ok(2), &d[1]),
        after(60, Ok(3), &d[2]),
    ])
    .await
    .unwrap();
    assert_eq!(won, (1, 2));
    assert!(d[2].load(Ordering::SeqCst), "the slower call was cancelled");
    let d = flags(2);
    let err = fanout::first_ok([
        after(5, Err(Status::internal("x")), &d[0]),
        after(9, Err(Status::unavailable("y")), &d[1]),
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "the first failure's code");
    assert!(err.message().contains("2 failed"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn hedged_starts_a_backup_after_the_delay_and_keeps_the_first_answer() {
    let started = Arc::new(AtomicUsize::new(0));
    let d = flags(3);
    let attempt = |ms: u64, v: u32, flag: &Arc<AtomicBool>| {
        let started = started.clone();
        let inner = after(ms, Ok(v), flag);
        Box::pin(async move {
            started.fetch_add(1, Ordering::SeqCst);
            inner.await
        }) as Call
    };
    let t0 = Instant::now();
    let won = fanout::hedged(
        Duration::from_millis(100),
        [attempt(1_000, 1, &d[0]), attempt(50, 2, &d[1]), attempt(10, 3, &d[2])],
    )
    .await
    .unwrap();
    assert_eq!(won, (1, 2), "the backup answered first");
    assert_eq!(t0.elapsed(), Duration::from_millis(150), "backup sent at 100 ms, answered 50 ms later");
    assert_eq!(started.load(Ordering::SeqCst), 2, "the third attempt was never started");
    assert!(d[0].load(Ordering::SeqCst), "the first attempt was cancelled");
}

#[tokio::test(start_paused = true)]
async fn hedged_moves_on_at_once_when_an_attempt_fails() {
    let d = flags(2);
    let t0 = Instant::now();
    let won = fanout::hedged(
        Duration::from_secs(10),
        [after(5, Err(Status::unavailable("refused")), &d[0]), after(5, Ok(7), &d[1])],
    )
    .await
    .unwrap();
    assert_eq!(won, (1, 7));
    assert_eq!(t0.elapsed(), Duration::from_millis(10), "did not wait out the hedge delay after a failure");
}

#[tokio::test(start_paused = true)]
async fn wait_group_waits_for_guards_and_tasks_even_when_one_panics() {
    let wg = WaitGroup::new();
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..5u64 {
        let done = done.clone();
        wg.spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    wg.spawn(async {
        panic!("a worker panics on purpose");
    });
    let guard = wg.add();
    let released = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(guard);
    });
    let t0 = Instant::now();
    wg.wait().await;
    assert_eq!(done.load(Ordering::SeqCst), 5);
    assert_eq!(t0.elapsed(), Duration::from_millis(500), "waited for the guard to drop");
    assert_eq!(wg.pending(), 0);
    released.await.unwrap();
    // Reusable, and waiting on an empty group returns at once.
    wg.wait().await;
    let g = wg.add();
    assert_eq!(wg.pending(), 1);
    drop(g);
    wg.wait().await;
}

/// A real fan-out: three servers, one shut down, one too slow for the deadline.
#[tokio::test]
async fn all_over_rpc_reports_a_down_server_and_a_slow_one_each_correctly() {
    let (fast, _) = start(|b| b).await;
    let (slow, _) = start(|b| b).await;
    let (gone, _) = start(|b| b).await;
    let gone_addr = gone.local_addr();
    gone.shutdown().await;
    let call = |addr: std::net::SocketAddr, ms: u64| async move {
        let c = Client::connect(addr).await?;
        c.call::<_, u64>("Test.Sleep", &SleepArgs { ms }).await
    };
    let t0 = Instant::now();
    let results =
        fanout::all([call(fast.local_addr(), 1), call(gone_addr, 1), call(slow.local_addr(), 5_000)])
            .deadline(Duration::from_millis(300))
            .await;
    let took = t0.elapsed();
    assert_eq!(results[0].as_ref().ok(), Some(&1));
    assert_eq!(results[1].as_ref().unwrap_err().code(), Code::Unavailable, "{:?}", results[1]);
    assert_eq!(results[2].as_ref().unwrap_err().code(), Code::DeadlineExceeded, "{:?}", results[2]);
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "took {took:?}");
    fast.shutdown().await;
    slow.shutdown().await;
}
