//! The client as a `tower::Service`: `poll_ready` honours the server's advertised
//! concurrency, and tower layers stack on top of it.

mod support;

use std::time::Duration;

use meshrpc::{Client, Codec, RawCall};
use support::*;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::test]
async fn poll_ready_waits_for_the_servers_advertised_concurrency() {
    let (server, _) = start(|b| b.max_concurrent_calls_per_connection(2)).await;
    let client = Client::connect(server.local_addr()).await.unwrap();
    let sleep = || RawCall::json("Test.Sleep", &SleepArgs { ms: 300 }).unwrap();
    // Two calls take the two slots the server advertised...
    let mut a = client.clone();
    let mut b = client.clone();
    let fa = a.ready().await.unwrap().call(sleep());
    let fb = b.ready().await.unwrap().call(sleep());
    // ...so a third caller is not ready until one of them finishes.
    let mut c = client.clone();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), c.ready()).await.is_err(),
        "poll_ready is Pending at the server's limit"
    );
    let (ra, rb) = tokio::join!(fa, fb);
    assert_eq!(&ra.unwrap()[..], b"300");
    assert_eq!(&rb.unwrap()[..], b"300");
    let reply = tokio::time::timeout(Duration::from_secs(2), c.ready())
        .await
        .expect("ready once a slot is free")
        .unwrap()
        .call(RawCall::json("Calculator.Add", &AddArgs { a: 2, b: 3 }).unwrap())
        .await
        .unwrap();
    assert_eq!(&reply[..], b"5");
    server.shutdown().await;
}

#[tokio::test]
async fn tower_layers_stack_on_the_client() {
    let (server, svcs) = start(|b| b).await;
    let client = Client::connect(server.local_addr()).await.unwrap();
    // A timeout over a concurrency limit of 2 over the meshrpc client.
    let svc = ServiceBuilder::new().timeout(Duration::from_millis(250)).concurrency_limit(2).service(client);
    let calls = (0..6).map(|_| {
        let svc = svc.clone();
        async move { svc.oneshot(RawCall::json("Test.Sleep", &SleepArgs { ms: 50 }).unwrap()).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(&r.expect("within the timeout")[..], b"50");
    }
    assert_eq!(svcs.peak.load(std::sync::atomic::Ordering::SeqCst), 2, "the concurrency layer held it to 2");
    let err = svc
        .clone()
        .oneshot(RawCall::json("Test.Sleep", &SleepArgs { ms: 2_000 }).unwrap())
        .await
        .expect_err("the timeout layer fires");
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    // Errors from meshrpc itself come through as a Status.
    let err = svc.clone().oneshot(RawCall::new("No.Such", Codec::Json, "{}")).await.unwrap_err();
    let status = err.downcast_ref::<meshrpc::Status>().expect("a meshrpc Status");
    assert_eq!(status.code(), meshrpc::Code::NotFound);
    server.shutdown().await;
}
