//! Discovery: the in-process registry, the dev registry over RPC, servers announcing
//! themselves, and watches that survive a registry outage.

mod support;

use std::sync::Arc;
use std::time::Duration;

use meshrpc::discovery::{Cursor, DevRegistry, Instance, MemoryRegistry, Registry, Watch};
use meshrpc::{Client, Code, Server};
use support::*;
use tokio::time::Instant;

fn calc(id: &str, port: u16) -> Instance {
    Instance::new("Calculator", id, format!("127.0.0.1:{port}")).with_meta("zone", "a")
}

#[tokio::test(start_paused = true)]
async fn a_lease_expires_unless_kept_alive() {
    let reg = MemoryRegistry::new();
    let a = reg.register(&calc("a", 1), Duration::from_secs(3)).await.unwrap();
    let _b = reg.register(&calc("b", 2), Duration::from_secs(3)).await.unwrap();
    assert_eq!(reg.list("Calculator").await.unwrap().instances.len(), 2);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        reg.keep_alive(a).await.unwrap();
    }
    let snap = reg.list("Calculator").await.unwrap();
    let ids: Vec<&str> = snap.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a"], "b expired after 3 s without keep-alive; a was kept");
    assert_eq!(reg.services().await.unwrap(), ["Calculator"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(reg.list("Calculator").await.unwrap().instances.is_empty());
    let err = reg.keep_alive(a).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "an expired lease must be re-registered: {err}");
    assert!(reg.services().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn watch_next_long_polls_until_a_change_or_the_wait_ends() {
    let reg = MemoryRegistry::new();
    let first = reg.list("Calculator").await.unwrap();
    // No change: returns the same snapshot after the wait.
    let t0 = Instant::now();
    let same = reg.watch_next("Calculator", first.cursor, Duration::from_secs(2)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(same.cursor, first.cursor);
    // A change wakes the poll at once.
    let reg2 = reg.clone();
    let poll =
        tokio::spawn(
            async move { reg2.watch_next("Calculator", first.cursor, Duration::from_secs(30)).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let lease = reg.register(&calc("a", 1), Duration::from_secs(10)).await.unwrap();
    let next = poll.await.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_millis(10));
    assert!(next.cursor.revision > first.cursor.revision);
    assert_eq!(next.instances, vec![calc("a", 1)]);
    // Other services' changes do not wake it.
    let t0 = Instant::now();
    let other = reg.clone();
    let poll =
        tokio::spawn(
            async move { other.watch_next("Calculator", next.cursor, Duration::from_secs(1)).await },
        );
    reg.register(&Instance::new("Echo", "e", "127.0.0.1:9"), Duration::from_secs(10)).await.unwrap();
    assert_eq!(poll.await.unwrap().unwrap().cursor, next.cursor);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    // A cursor from another epoch (a restarted registry) gets the current set at once.
    let stale = Cursor { epoch: 12345, revision: 999 };
    let now = reg.watch_next("Calculator", stale, Duration::from_secs(30)).await.unwrap();
    assert_eq!(now.instances.len(), 1);
    reg.deregister(&calc("a", 1), lease).await.unwrap();
    assert!(reg.list("Calculator").await.unwrap().instances.is_empty());
}

#[tokio::test]
async fn a_server_announces_its_services_and_withdraws_them_at_shutdown() {
    let reg = MemoryRegistry::new();
    let (server, _) = start(|b| b.registry(Arc::new(reg.clone())).instance_meta("version", "2")).await;
    let mut watch = Watch::start(Arc::new(reg.clone()), "Calculator");
    let snap = watch.ready(Duration::from_secs(5)).await.expect("a first snapshot");
    let snap = if snap.instances.is_empty() { watch.changed().await.unwrap() } else { snap };
    assert_eq!(snap.instances.len(), 1);
    let me = &snap.instances[0];
    assert_eq!(me.addr, server.local_addr().to_string());
    assert_eq!(me.metadata.get("version").map(String::as_str), Some("2"));
    // Every user service is announced; built-ins are not.
    let mut services = reg.services().await.unwrap();
    services.sort();
    assert_eq!(services, ["Calculator", "Echo", "Test"]);
    server.shutdown().await;
    assert!(reg.services().await.unwrap().is_empty(), "deregistered at graceful shutdown");
    let gone = watch.changed().await.unwrap();
    assert!(gone.instances.is_empty(), "the watcher saw it leave");
}

#[tokio::test]
async fn a_server_registers_again_when_its_lease_is_revoked() {
    let reg = MemoryRegistry::new();
    let (server, _) =
        start(|b| b.registry(Arc::new(reg.clone())).lease_ttl(Duration::from_millis(300))).await;
    let until = Instant::now() + Duration::from_secs(5);
    let lease = loop {
        if let Some(l) = reg.lease_of("Calculator", &server.local_addr().to_string()) {
            break l;
        }
        assert!(Instant::now() < until, "never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(reg.revoke(lease));
    assert!(reg.snapshot("Calculator").instances.is_empty());
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(l) = reg.lease_of("Calculator", &server.local_addr().to_string()) {
            assert_ne!(l, lease, "a new lease");
            break;
        }
        assert!(Instant::now() < until, "did not register again after the revoke");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

/// Serves a dev registry on `addr` ("127.0.0.1:0" for a free port).
async fn dev_registry(addr: &str) -> (meshrpc::ServerHandle, MemoryRegistry) {
    let reg = MemoryRegistry::new();
    let server =
        Server::builder().dev_registry(reg.clone()).reuse_port(true).bind(addr).await.unwrap().spawn();
    (server, reg)
}

#[tokio::test]
async fn the_dev_registry_serves_the_registry_api_over_rpc() {
    let (server, backing) = dev_registry("127.0.0.1:0").await;
    let dev = DevRegistry::connect(server.local_addr()).await.unwrap();
    let lease = dev.register(&calc("a", 7001), Duration::from_secs(5)).await.unwrap();
    dev.keep_alive(lease).await.unwrap();
    assert_eq!(backing.snapshot("Calculator").instances, vec![calc("a", 7001)]);
    let listed = dev.list("Calculator").await.unwrap();
    assert_eq!(listed.instances, vec![calc("a", 7001)]);
    assert_eq!(dev.services().await.unwrap(), ["Calculator"]);
    // A long poll over RPC wakes on a change.
    let (d2, cursor) = (dev.clone(), listed.cursor);
    let poll =
        tokio::spawn(async move { d2.watch_next("Calculator", cursor, Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    dev.register(&calc("b", 7002), Duration::from_secs(5)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .expect("woke on the change")
        .unwrap()
        .unwrap();
    assert_eq!(next.instances.len(), 2);
    dev.deregister(&calc("a", 7001), lease).await.unwrap();
    assert_eq!(dev.list("Calculator").await.unwrap().instances, vec![calc("b", 7002)]);
    assert_eq!(dev.keep_alive(lease).await.unwrap_err().code(), Code::NotFound);
    // The registry's methods are built-ins: a user cannot register `meshrpc.Registry`.
    let err =
        Server::builder().add_service(meshrpc::Service::new("meshrpc.Registry")).bind("127.0.0.1:0").await;
    assert!(err.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn a_watch_keeps_the_last_instances_through_a_registry_outage_and_catches_up() {
    let (reg_server, _) = dev_registry("127.0.0.1:0").await;
    let addr = reg_server.local_addr();
    let dev: Arc<dyn Registry> = Arc::new(DevRegistry::connect(addr).await.unwrap());
    dev.register(&calc("a", 7001), Duration::from_secs(30)).await.unwrap();
    let mut watch = Watch::start(dev.clone(), "Calculator");
    let first = watch.ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.instances.len(), 1);
    // The registry goes away: the watch keeps what it knew.
    reg_server.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(watch.latest().unwrap().instances.len(), 1, "the last known set is kept");
    // It comes back empty (a restart) on the same port; an instance registers there.
    let (reg_server, _) = dev_registry(&addr.to_string()).await;
    let again: Arc<dyn Registry> = Arc::new(DevRegistry::connect(addr).await.unwrap());
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if again.register(&calc("b", 7002), Duration::from_secs(30)).await.is_ok() {
            break;
        }
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = watch.changed().await.unwrap();
            if s.instances.iter().any(|i| i.id == "b") {
                return s;
            }
        }
    })
    .await
    .expect("the watch resumed after the registry came back");
    assert_eq!(caught_up.instances, vec![calc("b", 7002)], "the restarted registry's whole set");
    reg_server.shutdown().await;
}

#[tokio::test]
async fn a_discovered_client_waits_for_a_first_instance_then_fails_naming_the_service() {
    let reg = MemoryRegistry::new();
    let client = Client::discover("Calculator", Arc::new(reg.clone()));
    let opts = meshrpc::CallOptions::new().timeout(Duration::from_millis(200));
    let t0 = Instant::now();
    let err = client.call_with::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 2 }, &opts).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("Calculator"), "{err}");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    // A call waiting when the first instance appears goes through.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            let opts = meshrpc::CallOptions::new().timeout(Duration::from_secs(5));
            client.call_with::<_, i64>("Calculator.Add", &AddArgs { a: 1, b: 2 }, &opts).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (server, _) = start(|b| b.registry(Arc::new(reg.clone()))).await;
    assert_eq!(waiting.await.unwrap().unwrap(), 3);
    server.shutdown().await;
}
