//! A handler that blocks its thread must not stall the other calls on its connection:
//! the first poll that holds the reader over the inline limit moves its method to a
//! task of its own, and `Service::method_on_task` does so from the start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meshrpc::{Client, Context, Server, Service, Status};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Serialize, Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

/// `Work.Add` and `Work.Block` (sleeps its thread; sets `blocking` when it starts).
fn services(blocking_on_task: bool, blocking: Arc<AtomicBool>) -> Service {
    let block = move |_ctx: Context, ms: u64| {
        blocking.store(true, Ordering::SeqCst);
        async move {
            // Blocks the thread before any .await: what the inline poll must survive.
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, Status>(ms)
        }
    };
    let svc = Service::new("Work")
        .method("Add", |_ctx: Context, a: AddArgs| async move { Ok::<_, Status>(a.a + a.b) });
    if blocking_on_task { svc.method_on_task("Block", block) } else { svc.method("Block", block) }
}

/// Calls `Work.Block` (200 ms) eight times, one after another, while fast calls run
/// on the same connection; returns the fast calls' latencies (sorted) from after the
/// first blocking call, and how many methods the server moved to their own task.
async fn fast_latencies_beside_a_blocking_method(blocking_on_task: bool) -> (Vec<Duration>, u64) {
    let server = Server::builder()
        .add_service(services(blocking_on_task, Arc::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let metrics = server.metrics().clone();
    let handle = server.spawn();
    // One connection for both kinds of call.
    let client = Client::builder().connections(1).connect(addr).await.unwrap();
    // The first blocking call: it may hold the connection (that is how it is found).
    let first: u64 = client.call("Work.Block", &200u64).await.unwrap();
    assert_eq!(first, 200);
    let blocker = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..8 {
                let ms: u64 = client.call("Work.Block", &200u64).await.expect("a blocking call");
                assert_eq!(ms, 200);
            }
        })
    };
    let mut latencies = Vec::new();
    let mut n = 0i64;
    while !blocker.is_finished() {
        let t = Instant::now();
        let sum: i64 = client.call("Work.Add", &AddArgs { a: n, b: 1 }).await.expect("a fast call");
        latencies.push(t.elapsed());
        assert_eq!(sum, n + 1);
        n += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    blocker.await.unwrap();
    latencies.sort();
    let moved = metrics.methods_moved_to_task();
    handle.shutdown().await;
    (latencies, moved)
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_that_blocks_is_moved_off_the_reader_after_its_first_call() {
    let (latencies, moved) = fast_latencies_beside_a_blocking_method(false).await;
    println!(
        "{} fast calls beside 8 blocking ones: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99(&latencies),
        latencies[latencies.len() - 1]
    );
    assert_eq!(moved, 1, "Work.Block was moved to a task of its own, once");
    assert!(latencies.len() >= 100, "only {} fast calls in 1.6 s", latencies.len());
    assert!(p99(&latencies) < Duration::from_millis(5), "fast calls' p99 was {:?}", p99(&latencies));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_registered_on_task_never_holds_the_reader() {
    let (latencies, moved) = fast_latencies_beside_a_blocking_method(true).await;
    assert_eq!(moved, 0, "nothing needed moving: Work.Block was on its own task from the start");
    assert!(p99(&latencies) < Duration::from_millis(5), "fast calls' p99 was {:?}", p99(&latencies));
}

/// Without the limit (`inline_poll_limit(None)`) a blocking first poll does hold the
/// connection: what the tests above guard against is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_limit_a_blocking_handler_stalls_its_connection() {
    let blocking = Arc::new(AtomicBool::new(false));
    let server = Server::builder()
        .add_service(services(false, blocking.clone()))
        .inline_poll_limit(None)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let handle = server.spawn();
    let client = Client::builder().connections(1).connect(addr).await.unwrap();
    let blocked = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, u64>("Work.Block", &300u64).await })
    };
    // Once the handler is blocking, the reader is inside its first poll.
    while !blocking.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t = Instant::now();
    let _: i64 = client.call("Work.Add", &AddArgs { a: 1, b: 2 }).await.unwrap();
    assert!(t.elapsed() > Duration::from_millis(100), "a fast call took only {:?}", t.elapsed());
    blocked.await.unwrap().unwrap();
    handle.shutdown().await;
}
