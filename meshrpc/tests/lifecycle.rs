//! Connection lifecycle: reconnect with backoff, pools, GOAWAY re-sends, rolling
//! restarts, keepalive-driven reconnects, graceful shutdown and health.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use meshrpc::server::{HEALTH_CHECK, HealthCheckResponse, ServingStatus};
use meshrpc::wire::{self, Frame, Settings};
use meshrpc::{Backoff, CallOptions, Client, Code, Codec, Server, Status};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

#[tokio::test]
async fn a_client_reconnects_with_backoff_after_the_server_comes_back() {
    let (server, _) = start(|b| b).await;
    let addr = server.local_addr();
    let c = Client::builder()
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(400)))
        .connect(addr)
        .await
        .unwrap();
    server.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Down: calls fail fast with a clear, not-processed UNAVAILABLE.
    let t0 = Instant::now();
    let err = c.call::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.not_processed() && err.message().contains("cannot connect"), "{err}");
    let err = c.call::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 1 }).await.unwrap_err();
    assert!(err.message().contains("next attempt in"), "during the backoff: {err}");
    assert!(t0.elapsed() < Duration::from_millis(500), "failing fast, not waiting");
    // Back on the same port: a call that waits for readiness gets through.
    let again = support::TestServices::new()
        .add_to(Server::builder())
        .bind(addr)
        .await
        .expect("the port is free again")
        .spawn();
    let opts = CallOptions::new().wait_for_ready(true).timeout(Duration::from_secs(5));
    let sum: i64 = c.call_with("Calculator.Add", &AddArgs { a: 2, b: 3 }, &opts).await.unwrap();
    assert_eq!(sum, 5);
    assert_eq!(c.stats().reconnects, 1);
    again.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_pool_spreads_calls_over_its_connections() {
    let (server, _) = start(|b| b).await;
    let c = Client::builder().connections(3).connect(server.local_addr()).await.unwrap();
    assert_eq!(c.stats().connections, 3);
    let mut peers = std::collections::HashSet::new();
    for _ in 0..9 {
        let json: String = c.call("Test.Context", &()).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        peers.insert(v["peer"].as_str().unwrap().to_string());
    }
    assert_eq!(peers.len(), 3, "calls went over three distinct connections: {peers:?}");
    server.shutdown().await;
}

/// A scripted server: on its first connection it takes two calls, sends GOAWAY saying it
/// accepted only the first, answers that one and closes; on the second connection it
/// answers whatever comes. Returns the call ids and payloads it saw per connection.
async fn scripted_goaway_server(listener: tokio::net::TcpListener) -> Vec<Vec<(u64, bytes::Bytes)>> {
    let mut seen = Vec::new();
    for conn in 0..2 {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let mut pre = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut pre).await.unwrap();
        let mut out = BytesMut::new();
        wire::encode_settings(&mut out, &Settings { max_concurrent_calls: Some(100), ..Default::default() });
        s.write_all(&out).await.unwrap();
        let mut calls = Vec::new();
        let want = if conn == 0 { 2 } else { 1 };
        while calls.len() < want {
            match read_frame(&mut s, &mut buf).await {
                Some(Frame::Request(r)) => calls.push((r.call_id, r.payload)),
                Some(_) => {}
                None => break,
            }
        }
        let mut out = BytesMut::new();
        if conn == 0 {
            let first = calls[0].0;
            wire::encode_goaway(
                &mut out,
                &wire::GoAway { last_call_id: first, code: Code::Ok, message: "restarting".into() },
            );
        }
        for (id, payload) in calls.iter().take(1) {
            let args: AddArgs = rmp_serde::from_slice(payload).unwrap();
            let head = wire::encode_response_head(
                &mut out,
                *id,
                0,
                Codec::MessagePack.id(),
                Code::Ok,
                "",
                &wire::Metadata::new(),
            );
            Codec::MessagePack.encode(&(args.a + args.b), &mut out).unwrap();
            head.finish(&mut out, u32::MAX).unwrap();
        }
        s.write_all(&out).await.unwrap();
        seen.push(calls);
        if conn == 0 {
            drop(s);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    seen
}

#[tokio::test]
async fn calls_above_goaways_last_call_id_are_resent_on_a_new_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = tokio::spawn(scripted_goaway_server(listener));
    let c = Client::connect(addr).await.unwrap();
    let (a, b) = tokio::join!(
        c.call::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 2 }),
        c.call::<_, i64>("Calculator.Add", &AddArgs { a: 10, b: 20 }),
    );
    let mut sums = [a.expect("first call"), b.expect("second call")];
    sums.sort();
    assert_eq!(sums, [3, 30], "both calls succeeded, one of them after a re-send");
    let seen = script.await.unwrap();
    assert_eq!(seen[0].len(), 2, "the first connection carried both calls");
    assert_eq!(seen[1].len(), 1, "exactly one call was re-sent, on a new connection");
    assert_eq!(seen[1][0].1, seen[0][1].1, "the re-sent call is the one above last_call_id");
    assert_eq!(c.stats().resent, 1);
}

/// A counter whose total is shared by every server instance in the test.
fn counting_service(total: Arc<AtomicU64>) -> meshrpc::Service {
    meshrpc::Service::new("Counter").method("Inc", move |_ctx: meshrpc::Context, _a: ()| {
        let total = total.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await; // long enough to be caught mid-flight
            Ok::<_, Status>(total.fetch_add(1, Ordering::SeqCst) + 1)
        }
    })
}

async fn counting_server(addr: &str, total: Arc<AtomicU64>) -> meshrpc::ServerHandle {
    Server::builder()
        .add_service(counting_service(total))
        .reuse_port(true)
        .bind(addr)
        .await
        .expect("bind with SO_REUSEPORT")
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_call_and_runs_none_twice() {
    watch_panics();
    let total = Arc::new(AtomicU64::new(0));
    let mut server = counting_server("127.0.0.1:0", total.clone()).await;
    let addr = server.local_addr();
    let c = Client::builder().connections(2).connect(addr).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    // Counter.Inc is not idempotent: only calls that never ran may be re-sent.
                    match c.call::<_, u64>("Counter.Inc", &()).await {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    // Three rolling restarts: start the new server on the same port, then stop the old.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = counting_server(&addr.to_string(), total.clone()).await;
        std::mem::replace(&mut server, next).shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    let stats = c.stats();
    println!(
        "calls {ok}, failed {}, re-sent {}, reconnects {}",
        failed.len(),
        stats.resent,
        stats.reconnects
    );
    assert!(failed.is_empty(), "{} calls failed, the first: {}", failed.len(), failed[0]);
    assert!(ok > 500, "the load was real: {ok} calls");
    assert_eq!(
        total.load(Ordering::SeqCst),
        ok,
        "every successful call ran exactly once, re-sent ones included"
    );
    assert!(stats.reconnects >= 3, "the client moved to each new server: {stats:?}");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn keepalive_notices_a_half_open_connection_and_the_next_call_reconnects() {
    let (server, _) = start(|b| b).await;
    let proxy = FreezableProxy::start(server.local_addr()).await;
    let c = Client::builder()
        .keepalive(Some(Duration::from_millis(150)), Duration::from_millis(150))
        .connect(proxy.addr)
        .await
        .unwrap();
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 1, b: 1 }).await.unwrap();
    assert_eq!(sum, 2);
    proxy.freeze_existing();
    let t0 = Instant::now();
    let err = c.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("keepalive"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "noticed within ~2 keepalive periods");
    proxy.thaw_new(1);
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 2, b: 2 }).await.unwrap();
    assert_eq!(sum, 4, "the next call reconnected through a working path");
    assert_eq!(c.stats().reconnects, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_reports_not_serving_during_the_grace_then_goes_away() {
    let (server, _) = start(|b| b.shutdown_grace(Duration::from_millis(400))).await;
    let addr = server.local_addr();
    let c = Client::connect(addr).await.unwrap();
    let health = |c: Client| async move {
        c.call::<_, HealthCheckResponse>(HEALTH_CHECK, &serde_json::json!({})).await.unwrap().status
    };
    assert_eq!(health(c.clone()).await, ServingStatus::Serving);
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(health(c.clone()).await, ServingStatus::NotServing, "during the grace");
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 1, b: 2 }).await.unwrap();
    assert_eq!(sum, 3, "still serving during the grace");
    stopping.await.unwrap();
    let err = c.call::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 2 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "gone after the grace: {err}");
}

#[tokio::test]
async fn health_is_answered_even_at_the_in_flight_limit() {
    let (server, _) = start(|b| b.max_concurrent_calls_per_connection(1).max_concurrent_calls(1)).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.request(1, Codec::MessagePack.id(), "Test.Sleep", msgpack(&SleepArgs { ms: 300 })).await;
    raw.request(2, Codec::MessagePack.id(), "Calculator.Add", msgpack(&AddArgs { a: 1, b: 1 })).await;
    raw.request(3, Codec::Json.id(), HEALTH_CHECK, b"{}".to_vec()).await;
    let mut answers = std::collections::HashMap::new();
    for _ in 0..3 {
        if let Some(Frame::Response(r)) = raw.next_frame().await {
            answers.insert(r.call_id, r);
        }
    }
    assert_eq!(answers[&2].code, Code::ResourceExhausted, "an ordinary call is refused at the limit");
    assert_eq!(answers[&3].code, Code::Ok, "health is exempt");
    assert_eq!(&answers[&3].payload[..], br#"{"status":"SERVING"}"#);
    assert_eq!(answers[&1].code, Code::Ok);
    let err = Client::connect(server.local_addr())
        .await
        .unwrap()
        .call::<_, HealthCheckResponse>(HEALTH_CHECK, &serde_json::json!({"service": "Nope"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.shutdown().await;
}
