//! End-to-end behaviour of server and client over loopback.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use meshrpc::{CallOptions, Client, Code, Codec, Context, Server, Service, Status};
use support::*;
use tokio::time::Instant;

#[tokio::test]
async fn add_by_name_in_both_codecs() {
    let (server, _) = start(|b| b).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 10, b: 5 }).await.unwrap();
    assert_eq!(sum, 15);
    let json = CallOptions::new().codec(Codec::Json);
    let sum: i64 = c.call_with("Calculator.Add", &AddArgs { a: -7, b: 3 }, &json).await.unwrap();
    assert_eq!(sum, -4);
    let raw =
        c.call_raw("Calculator.Add", Codec::Json, br#"{"a":10,"b":5}"#, &CallOptions::new()).await.unwrap();
    assert_eq!(&raw[..], b"15", "the server answers in the codec it was called with");
    let blob: meshrpc::Blob = c.call("Echo.Echo", &EchoArgs { data: vec![0, 1, 255].into() }).await.unwrap();
    assert_eq!(&blob[..], &[0, 1, 255]);
    let raw = c.call_raw("Echo.Echo", Codec::Json, br#"{"data":"AAH/"}"#, &CallOptions::new()).await.unwrap();
    assert_eq!(&raw[..], br#""AAH/""#, "bytes travel as base64 in JSON");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn concurrent_calls_are_answered_out_of_order_on_one_connection() {
    let (server, svcs) = start(|b| b).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let started = Instant::now();
    let calls = (0..20u64).map(|i| {
        let c = c.clone();
        let ms = 300 - i * 15; // later calls finish first
        async move {
            let got: u64 = c.call("Test.Sleep", &SleepArgs { ms }).await.unwrap();
            (got, ms, Instant::now())
        }
    });
    let results = futures_util::future::join_all(calls).await;
    for (got, ms, _) in &results {
        assert_eq!(got, ms);
    }
    assert!(results[19].2 < results[0].2, "the short call finished before the long one");
    assert!(started.elapsed() < Duration::from_millis(1500), "calls ran concurrently, not one by one");
    assert!(svcs.peak.load(Ordering::SeqCst) >= 15, "the server ran them at the same time");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn unknown_method_is_not_found_and_handler_errors_pass_through() {
    let (server, _) = start(|b| b).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let err = c.call::<_, i64>("Calculator.Mul", &AddArgs { a: 1, b: 2 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("Calculator.Mul") && err.message().contains("Calculator.Add"), "{err}");
    let err = c.call::<_, ()>("Test.Fail", "precondition text").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "precondition text");
    assert!(!err.not_processed());
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_own_call() {
    let (server, _) = start(|b| b).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { c.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 300 }).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = c.call::<_, ()>("Test.Panic", &()).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("panicked") && err.message().contains("boom on purpose"), "{err}");
    assert_eq!(slow.await.unwrap().unwrap(), 300, "the other call on the connection completed");
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 1, b: 1 }).await.unwrap();
    assert_eq!(sum, 2, "the same connection keeps serving");
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

/// A server whose only method parks forever and signals when its future is dropped.
async fn parking_server()
-> (meshrpc::ServerHandle, tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Receiver<()>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let svc = Service::new("Park").method("Forever", move |_ctx: Context, _a: ()| {
        let (drop_tx, drop_rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(drop_rx);
        async move {
            let _signal = DropSignal(Some(drop_tx));
            std::future::pending::<()>().await;
            Ok::<_, Status>(())
        }
    });
    let server = Server::builder()
        .add_service(svc)
        .add_service(
            Service::new("Calculator")
                .method("Add", |_c: Context, a: AddArgs| async move { Ok::<_, Status>(a.a + a.b) }),
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    (server, rx)
}

async fn wait_dropped(rx: tokio::sync::oneshot::Receiver<()>) {
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the server dropped the handler future within 5 s")
        .expect("drop signal sent");
}

#[tokio::test]
async fn deadline_exceeded_drops_the_server_side_handler() {
    watch_panics();
    let (server, mut started) = parking_server().await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let t0 = Instant::now();
    let opts = CallOptions::new().timeout(Duration::from_millis(200));
    let err = c.call_with::<_, ()>("Park.Forever", &(), &opts).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(t0.elapsed() < Duration::from_secs(2));
    wait_dropped(started.recv().await.unwrap()).await;
    // The connection still serves.
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 2, b: 2 }).await.unwrap();
    assert_eq!(sum, 4);
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn the_server_answers_deadline_exceeded_itself() {
    watch_panics();
    let (server, mut started) = parking_server().await;
    // Send the request by hand with a 100 ms budget and never cancel it.
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.send_frame(&meshrpc::wire::Frame::Request(meshrpc::wire::Request {
        call_id: 9,
        flags: 0,
        codec: Codec::MessagePack.id(),
        timeout: Some(Duration::from_millis(100)),
        method: bytes::Bytes::from_static(b"Park.Forever"),
        metadata: meshrpc::Metadata::new(),
        payload: bytes::Bytes::from(msgpack(&())),
    }))
    .await;
    match raw.next_frame().await {
        Some(meshrpc::wire::Frame::Response(r)) => {
            assert_eq!(r.call_id, 9);
            assert_eq!(r.code, Code::DeadlineExceeded);
        }
        other => panic!("expected a response, got {other:?}"),
    }
    wait_dropped(started.recv().await.unwrap()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn dropping_a_call_sends_cancel_and_drops_the_handler() {
    watch_panics();
    let (server, mut started) = parking_server().await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let call = c.call::<_, ()>("Park.Forever", &());
    tokio::select! {
        _ = call => panic!("the parked call cannot finish"),
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
    // The call future is dropped here: the client sent CANCEL.
    wait_dropped(started.recv().await.unwrap()).await;
    assert_eq!(c.in_flight(), 0, "the dropped call left the in-flight table");
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 3, b: 4 }).await.unwrap();
    assert_eq!(sum, 7);
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn handler_context_carries_call_facts_and_nested_calls_inherit_the_deadline() {
    let (server, _) = start(|b| b).await;
    let addr = server.local_addr();
    let c = Client::connect(addr).await.unwrap();
    let opts = CallOptions::new().timeout(Duration::from_secs(3)).metadata("user", "ada");
    let json: String = c.call_with("Test.Context", &(), &opts).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["method"], "Test.Context");
    assert_eq!(v["user"], "ada");
    assert_eq!(v["peer"].as_str().unwrap().split(':').next(), Some("127.0.0.1"));
    assert!(v["call_id"].as_u64().unwrap() >= 1);
    let ms = v["remaining_ms"].as_u64().unwrap();
    assert!(ms > 2000 && ms <= 3000, "remaining {ms} ms");

    // A handler that calls another service with no timeout of its own.
    let inner = Client::connect(addr).await.unwrap();
    let relay = Service::new("Relay").method("Ask", move |ctx: Context, _a: ()| {
        let inner = inner.clone();
        async move {
            let mine = ctx.remaining().map(|d| d.as_millis() as u64);
            let theirs: String = inner.call("Test.Context", &()).await?;
            let v: serde_json::Value = serde_json::from_str(&theirs).unwrap();
            Ok::<_, Status>((mine, v["remaining_ms"].as_u64()))
        }
    });
    let relay_server = Server::builder().add_service(relay).bind("127.0.0.1:0").await.unwrap().spawn();
    let rc = Client::connect(relay_server.local_addr()).await.unwrap();
    let opts = CallOptions::new().timeout(Duration::from_millis(1500));
    let (mine, theirs): (Option<u64>, Option<u64>) = rc.call_with("Relay.Ask", &(), &opts).await.unwrap();
    let (mine, theirs) = (mine.unwrap(), theirs.expect("the nested call carried a deadline"));
    assert!(theirs <= mine && mine <= 1500, "nested {theirs} ms ≤ outer {mine} ms ≤ 1500 ms");
    relay_server.shutdown().await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn calls_above_the_advertised_limit_wait_in_the_client() {
    let (server, svcs) = start(|b| b.max_concurrent_calls_per_connection(3)).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    assert_eq!(c.server_max_concurrent_calls(), 3);
    let calls = (0..12).map(|_| {
        let c = c.clone();
        async move { c.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 50 }).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap(), 50, "no call failed: they queued");
    }
    assert_eq!(svcs.peak.load(Ordering::SeqCst), 3, "the server never ran more than the limit");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn the_per_server_limit_refuses_with_resource_exhausted_not_processed() {
    let (server, _) = start(|b| b.max_concurrent_calls(1)).await;
    let a = Client::connect(server.local_addr()).await.unwrap();
    let b = Client::connect(server.local_addr()).await.unwrap();
    let slow = tokio::spawn(async move { a.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 400 }).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = b.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.not_processed(), "refused before the handler ran");
    assert!(err.message().contains("limit of 1"), "{err}");
    assert_eq!(slow.await.unwrap().unwrap(), 400);
    let ok: u64 = b.call("Test.Sleep", &SleepArgs { ms: 1 }).await.unwrap();
    assert_eq!(ok, 1, "served once the slot is free");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn idle_connections_get_goaway_not_a_reset() {
    let (server, _) = start(|b| b.idle_timeout(Some(Duration::from_millis(200)))).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    assert_eq!(raw.settings.idle_timeout_ms, Some(200));
    let t0 = Instant::now();
    match raw.next_frame().await {
        Some(meshrpc::wire::Frame::GoAway(g)) => {
            assert_eq!(g.code, Code::Ok);
            assert_eq!(g.last_call_id, 0);
            assert!(g.message.contains("no calls"), "{}", g.message);
        }
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(150));
    expect_closed(&mut raw.stream).await;

    // The client sees the connection close, and the next call reconnects transparently.
    let c = Client::connect(server.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!c.is_open(), "the idle connection was closed by the server");
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 1, b: 1 }).await.unwrap();
    assert_eq!(sum, 2);
    assert_eq!(c.stats().reconnects, 1);
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_lost_connection_fails_calls_in_flight_with_unavailable() {
    let (server, _) = start(|b| b).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 10_000 }).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    server.abort();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "failed promptly, not at the deadline");
    let err = c.call::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn keepalive_fails_a_half_open_connection_promptly() {
    // A "server" that completes the handshake, then goes silent (like a peer whose
    // host vanished): it never answers pings or calls.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut pre = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut pre).await.unwrap();
        let mut b = bytes::BytesMut::new();
        meshrpc::wire::encode_settings(
            &mut b,
            &meshrpc::wire::Settings { max_concurrent_calls: Some(10), ..Default::default() },
        );
        tokio::io::AsyncWriteExt::write_all(&mut s, &b).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let c = Client::builder()
        .keepalive(Some(Duration::from_millis(200)), Duration::from_millis(200))
        .connect(addr)
        .await
        .unwrap();
    let t0 = Instant::now();
    let err = c.call::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("keepalive"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "failed within ~2 keepalive periods, took {:?}",
        t0.elapsed()
    );
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_in_flight_on_one_connection_while_another_is_served() {
    let (server, svcs) = start(|b| b.max_concurrent_calls_per_connection(10_000)).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    assert_eq!(c.server_max_concurrent_calls(), 10_000);
    let calls: Vec<_> = (0..10_000)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 500 }).await })
        })
        .collect();
    // While they are all parked in the server, a second connection is served.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let t0 = Instant::now();
    assert_serving(server.local_addr()).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    for h in calls {
        assert_eq!(h.await.unwrap().unwrap(), 500);
    }
    assert!(svcs.peak.load(Ordering::SeqCst) > 5_000, "they were really in flight at once");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let (server, _) = start(|b| b).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 300 }).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
    assert_no_stray_panics();
    assert_eq!(call.await.unwrap().unwrap(), 300, "the call in flight completed during the drain");
    assert!(!c.is_open());
}

#[tokio::test]
async fn shutdown_cuts_off_calls_that_outlive_the_drain_timeout() {
    watch_panics();
    let svc = Service::new("Park").method("Forever", |_ctx: Context, _a: ()| async move {
        std::future::pending::<()>().await;
        Ok::<_, Status>(())
    });
    let server = Server::builder()
        .add_service(svc)
        .drain_timeout(Duration::from_millis(300))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let c = Client::connect(server.local_addr()).await.unwrap();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.call::<_, ()>("Park.Forever", &()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), server.shutdown())
        .await
        .expect("shutdown finished though a handler never returns");
    assert!(t0.elapsed() >= Duration::from_millis(250), "it waited for the drain timeout first");
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("drain timeout"), "{err}");
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_duplicate_call_id_is_a_protocol_error_even_for_an_unknown_method() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.request(5, Codec::MessagePack.id(), "Test.Sleep", msgpack(&SleepArgs { ms: 300 })).await;
    raw.request(5, Codec::MessagePack.id(), "No.Such", msgpack(&())).await;
    match raw.next_frame().await {
        Some(meshrpc::wire::Frame::GoAway(g)) => {
            assert_eq!(g.code, Code::InvalidArgument);
            assert!(g.message.contains("call id 5 is already in flight"), "{}", g.message);
        }
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    match raw.next_frame().await {
        Some(meshrpc::wire::Frame::Response(r)) => {
            assert_eq!((r.call_id, r.code), (5, Code::Ok), "the original call still completed")
        }
        other => panic!("expected the original call's response, got {other:?}"),
    }
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_the_servers_limit_never_gets_a_spurious_refusal() {
    // With a limit of 1, the client sends its next call the moment an answer arrives; the
    // server must already have released the slot (it does so before queuing the reply).
    // The race this guards against is microseconds wide, so this checks the behaviour
    // (no refusals at the limit) rather than pinning the release order deterministically.
    let (server, _) = start(|b| b.max_concurrent_calls_per_connection(1)).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let workers = (0..8).map(|w| {
        let c = c.clone();
        async move {
            for i in 0..250i64 {
                let sum: i64 =
                    c.call("Calculator.Add", &AddArgs { a: w, b: i }).await.expect("no call is refused");
                assert_eq!(sum, w + i);
            }
        }
    });
    futures_util::future::join_all(workers).await;
    // Same with cancellations: a dropped call frees its server slot at once.
    let opts = CallOptions::new().timeout(Duration::from_millis(5));
    for _ in 0..20 {
        let _ = c.call_with::<_, u64>("Test.Sleep", &SleepArgs { ms: 50 }, &opts).await;
        let sum: i64 = c
            .call("Calculator.Add", &AddArgs { a: 1, b: 1 })
            .await
            .expect("the cancelled call's slot was free");
        assert_eq!(sum, 2);
    }
    server.shutdown().await;
    assert_no_stray_panics();
}

struct PanicsOnSerialize;

impl serde::Serialize for PanicsOnSerialize {
    fn serialize<S: serde::Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        panic!("serialize panics on purpose")
    }
}

#[tokio::test]
async fn a_panicking_serialize_on_the_client_does_not_corrupt_the_connection() {
    let (server, _) = start(|b| b).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let bad = tokio::spawn({
        let c = c.clone();
        async move { c.call::<_, i64>("Calculator.Add", &PanicsOnSerialize).await }
    });
    assert!(bad.await.unwrap_err().is_panic(), "the caller's own panic reaches the caller");
    assert_eq!(c.in_flight(), 0);
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 5, b: 6 }).await.unwrap();
    assert_eq!(sum, 11, "the next frame on the connection is intact");
    server.shutdown().await;
    assert_no_stray_panics();
}

/// A server that completes the handshake and then never answers; returns the ids of the
/// calls it saw and of the CANCELs it got, in order.
async fn silent_server(listener: tokio::net::TcpListener) -> (Vec<u64>, Vec<u64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, _) = listener.accept().await.unwrap();
    let mut pre = [0u8; 6];
    s.read_exact(&mut pre).await.unwrap();
    let mut out = bytes::BytesMut::new();
    meshrpc::wire::encode_settings(&mut out, &meshrpc::wire::Settings::default());
    s.write_all(&out).await.unwrap();
    let (mut calls, mut cancels) = (Vec::new(), Vec::new());
    let mut buf = bytes::BytesMut::new();
    while cancels.len() < 2 {
        match read_frame(&mut s, &mut buf).await {
            Some(meshrpc::wire::Frame::Request(r)) => calls.push(r.call_id),
            Some(meshrpc::wire::Frame::Cancel { call_id }) => cancels.push(call_id),
            Some(_) => {}
            None => break,
        }
    }
    (calls, cancels)
}

#[tokio::test]
async fn a_silent_server_cannot_outlast_a_deadline_and_an_earlier_deadline_is_not_delayed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = tokio::spawn(silent_server(listener));
    let c = Client::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let long = CallOptions::new().timeout(Duration::from_millis(900));
    let short = CallOptions::new().timeout(Duration::from_millis(150));
    // The long call goes first, so the connection's deadline sweeper is armed for it;
    // the short call's earlier deadline must still be kept.
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            let r = c.call_with::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 2 }, &long).await;
            (r, t0.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = c.call_with::<_, i64>("Calculator.Add", &AddArgs { a: 3, b: 4 }, &short).await.unwrap_err();
    let short_took = t0.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.message().contains("Calculator.Add"), "the error names the method: {err}");
    assert!(short_took < Duration::from_millis(600), "the 150 ms call took {short_took:?}");
    let (r, long_took) = first.await.unwrap();
    let err = r.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(long_took >= Duration::from_millis(900), "the 900 ms call failed early, after {long_took:?}");
    assert!(long_took < Duration::from_secs(3), "the 900 ms call took {long_took:?}");
    let (calls, cancels) = tokio::time::timeout(Duration::from_secs(5), script).await.unwrap().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(cancels, vec![calls[1], calls[0]], "each expired call is cancelled, the short one first");
}

#[tokio::test]
async fn a_call_queued_behind_the_advertised_limit_still_keeps_its_deadline() {
    let (server, _) = start(|b| b.max_concurrent_calls_per_connection(1)).await;
    let c = Client::connect(server.local_addr()).await.unwrap();
    let busy = tokio::spawn({
        let c = c.clone();
        async move { c.call::<_, u64>("Test.Sleep", &SleepArgs { ms: 700 }).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let opts = CallOptions::new().timeout(Duration::from_millis(100));
    let err = c.call_with::<_, u64>("Test.Sleep", &SleepArgs { ms: 1 }, &opts).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.message().contains("Test.Sleep"), "{err}");
    assert!(t0.elapsed() < Duration::from_millis(500), "it waited {:?} for a permit", t0.elapsed());
    assert_eq!(busy.await.unwrap().unwrap(), 700, "the call holding the permit was not disturbed");
    server.shutdown().await;
}
