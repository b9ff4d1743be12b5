//! The etcd registry against a real etcd (`etcd-server`), on loopback ports with a
//! temporary data directory: one member, and a 3-member cluster losing members.
#![cfg(feature = "etcd")]

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use meshrpc::Code;
use meshrpc::discovery::{EtcdRegistry, Instance, KEY_PREFIX, Registry, Watch};
use tokio::time::Instant;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One etcd member: its process, ports and data directory.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: std::path::PathBuf,
    cluster: String,
    token: String,
    child: Option<Child>,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }

    fn start(&mut self) {
        let child = Command::new("etcd")
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", self.client)])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", self.client)])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", self.peer)])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", self.peer)])
            .args(["--initial-cluster", &self.cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "400"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run `etcd`: install etcd-server (scripts/test.sh does)");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `n` members on loopback and waits until the cluster answers; tries a second
/// time on fresh ports if it does not (a free port can be taken between picking it and
/// etcd binding it, by a test running alongside).
async fn cluster(n: usize) -> Vec<Member> {
    for attempt in 0..2 {
        if let Some(members) = try_cluster(n, attempt).await {
            return members;
        }
    }
    panic!("etcd did not become healthy within 20 s, twice (is etcd-server installed?)");
}

async fn try_cluster(n: usize, attempt: u32) -> Option<Vec<Member>> {
    let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        names.iter().zip(&ports).map(|(name, (_, p))| format!("{name}=http://127.0.0.1:{p}")).collect();
    let base =
        std::env::temp_dir().join(format!("meshrpc-etcd-{}-{}-{attempt}", std::process::id(), ports[0].0));
    let mut members: Vec<Member> = names
        .into_iter()
        .zip(ports)
        .map(|(name, (client, peer))| Member {
            dir: base.join(&name),
            name,
            client,
            peer,
            cluster: initial.join(","),
            token: format!("meshrpc-test-{}", std::process::id()),
            child: None,
        })
        .collect();
    for m in &mut members {
        m.start();
    }
    let endpoints: Vec<String> = members.iter().map(Member::endpoint).collect();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = EtcdRegistry::connect(&endpoints).await
            && r.services().await.is_ok()
        {
            return Some(members);
        }
        if Instant::now() > until {
            return None; // dropping `members` kills them and removes their data
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn inst(id: &str, port: u16) -> Instance {
    Instance::new("Calculator", id, format!("127.0.0.1:{port}")).with_meta("version", "1")
}

async fn eventually<F: Fn() -> Fut, Fut: Future<Output = bool>>(what: &str, within: Duration, f: F) {
    let until = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn register_keep_alive_expire_and_watch() {
    let members = cluster(1).await;
    let reg = Arc::new(EtcdRegistry::connect(&[members[0].endpoint()]).await.unwrap());
    let mut watch = Watch::start(reg.clone(), "Calculator");
    assert!(watch.ready(Duration::from_secs(5)).await.unwrap().instances.is_empty());

    let a = reg.register(&inst("a", 7001), Duration::from_secs(2)).await.unwrap();
    let seen = watch.changed().await.unwrap();
    assert_eq!(seen.instances, vec![inst("a", 7001)], "the watch saw the registration");
    assert_eq!(reg.services().await.unwrap(), ["Calculator"]);

    // Kept alive past its TTL: still there.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        reg.keep_alive(a).await.unwrap();
    }
    assert_eq!(reg.list("Calculator").await.unwrap().instances.len(), 1);

    // Not kept alive: etcd expires it, and the watch sees it go.
    let t0 = Instant::now();
    let gone =
        tokio::time::timeout(Duration::from_secs(10), watch.changed()).await.expect("expired").unwrap();
    assert!(gone.instances.is_empty());
    assert!(t0.elapsed() >= Duration::from_secs(1), "expired too early: {:?}", t0.elapsed());
    let err = reg.keep_alive(a).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Deregistration is immediate.
    let b = reg.register(&inst("b", 7002), Duration::from_secs(30)).await.unwrap();
    assert_eq!(watch.changed().await.unwrap().instances, vec![inst("b", 7002)]);
    reg.deregister(&inst("b", 7002), b).await.unwrap();
    assert!(watch.changed().await.unwrap().instances.is_empty());
}

#[tokio::test]
async fn a_lease_revoked_from_outside_makes_the_server_register_again() {
    let members = cluster(1).await;
    let endpoint = members[0].endpoint();
    let reg = Arc::new(EtcdRegistry::connect(std::slice::from_ref(&endpoint)).await.unwrap());
    let (server, _) = support::start(|b| b.registry(reg.clone()).lease_ttl(Duration::from_secs(3))).await;
    let key = format!("{KEY_PREFIX}Calculator/{}", server.local_addr());
    let mut etcd = etcd_client::Client::connect([endpoint], None).await.unwrap();
    let lease_of = |etcd: &mut etcd_client::Client| {
        let mut etcd = etcd.clone();
        let key = key.clone();
        async move { etcd.get(key, None).await.ok()?.kvs().first().map(|kv| kv.lease()) }
    };
    let until = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(l) = lease_of(&mut etcd).await {
            break l;
        }
        assert!(Instant::now() < until, "the server never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    etcd.lease_revoke(first).await.unwrap();
    assert!(lease_of(&mut etcd).await.is_none(), "revoking deleted the key");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match lease_of(&mut etcd).await {
            Some(l) => {
                assert_ne!(l, first, "registered under a new lease");
                break;
            }
            None => assert!(Instant::now() < until, "the server did not register again"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
    assert!(lease_of(&mut etcd).await.is_none(), "deregistered at shutdown");
}

#[tokio::test]
async fn a_watcher_and_a_lease_survive_losing_any_member_of_three() {
    let mut members = cluster(3).await;
    let endpoints: Vec<String> = members.iter().map(Member::endpoint).collect();
    let reg: Arc<dyn Registry> = Arc::new(EtcdRegistry::connect(&endpoints).await.unwrap());
    // A server keeps one instance alive (keep-alive streams) while a watcher follows.
    let announced = meshrpc::discovery::Announcement::start(
        reg.clone(),
        vec![inst("kept", 7000)],
        Duration::from_secs(2),
    );
    let mut watch = Watch::start(reg.clone(), "Calculator");
    eventually("the first registration", Duration::from_secs(10), || {
        let w = watch.clone();
        async move { w.latest().is_some_and(|s| s.instances.len() == 1) }
    })
    .await;
    // Kill each member in turn (so whichever one served the client's streams dies),
    // register after the kill, and check the existing watcher sees it.
    #[allow(clippy::needless_range_loop)] // members[k] is killed, then restarted after awaits
    for k in 0..3 {
        members[k].kill();
        let id = format!("after-kill-{k}");
        let reg2 = reg.clone();
        let inst_k = inst(&id, 7100 + k as u16);
        eventually("a registration after the kill", Duration::from_secs(15), || {
            let (reg2, inst_k) = (reg2.clone(), inst_k.clone());
            async move { reg2.register(&inst_k, Duration::from_secs(30)).await.is_ok() }
        })
        .await;
        let seen = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let s = watch.changed().await.unwrap();
                if s.instances.iter().any(|i| i.id == id) {
                    return s;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the watcher did not see {id} after member {k} died"));
        assert!(
            seen.instances.iter().any(|i| i.id == "kept"),
            "the kept-alive instance survived member {k}'s death"
        );
        members[k].start();
        eventually("the member rejoining", Duration::from_secs(15), || {
            let ep = members[k].endpoint();
            async move {
                match EtcdRegistry::connect(&[ep]).await {
                    Ok(r) => r.services().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }
    // The lease was kept alive throughout: well past its 2 s TTL, "kept" is still listed.
    eventually("the kept instance listed", Duration::from_secs(10), || {
        let reg = reg.clone();
        async move { reg.list("Calculator").await.is_ok_and(|s| s.instances.iter().any(|i| i.id == "kept")) }
    })
    .await;
    announced.withdraw(Duration::from_secs(5)).await;
}
