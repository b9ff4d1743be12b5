//! Seed 8 over discovered replicas: three `Service` replicas announce themselves in a
//! registry; a caller finds them there (no hard-coded addresses), calls `Service.Method`
//! with `{"name": "Alice"}` on every one at once, waits for all, and prints each reply
//! or failure. One replica has crashed but is still listed (its lease has not expired):
//! it fails fast and does not hold up the others. Then the same service is called the
//! Go way, with a WaitGroup, and with a quorum.
//!
//! Run: `cargo run -p meshrpc --example fanout_rpc`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meshrpc::discovery::{MemoryRegistry, Registry};
use meshrpc::fanout::{self, WaitGroup};
use meshrpc::{CallOptions, Client, Server, Status};
use serde::{Deserialize, Serialize};

/// The seed's service, literally `Service.Method` on the wire.
#[meshrpc::service]
trait Service {
    /// Greets `name`.
    #[meshrpc(idempotent)]
    async fn method(&self, name: String) -> Result<Reply, Status>;
}

/// The seed's `{Message}` reply.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    message: String,
}

/// One replica, which says which one it is.
struct Replica(&'static str);

impl Service for Replica {
    async fn method(&self, name: String) -> Result<Reply, Status> {
        Ok(Reply { message: format!("Hello, {name}! (from replica {})", self.0) })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In one process a MemoryRegistry will do; across processes use the dev registry
    // (`meshrpc registry`, `DevRegistry::connect`) or etcd (`EtcdRegistry`, feature etcd).
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut replicas = Vec::new();
    for name in ["A", "B", "C"] {
        let server = Server::builder()
            .add_service(ServiceServer::new(Replica(name)))
            .registry(registry.clone())
            .bind("127.0.0.1:0")
            .await?
            .spawn();
        println!("replica {name} serves Service.Method on {} and announces itself", server.local_addr());
        replicas.push(server);
    }
    let client = Client::discover("Service", registry.clone());
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.instances(Duration::from_secs(1)).await.len() < 3 {
        if tokio::time::Instant::now() > until {
            return Err("the replicas did not all show up in the registry within 5 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Replica C crashes; the registry still lists it until its lease expires.
    let crashed = replicas.pop().ok_or("no replica")?;
    crashed.abort();
    println!("replica C at {} has crashed (still listed in the registry)", crashed.local_addr());

    // Every listed instance at once, one deadline for all, one result each.
    let opts = CallOptions::new().timeout(Duration::from_secs(1));
    let args = serde_json::json!({ "name": "Alice" });
    let results = client.broadcast::<_, Reply>("Service.Method", &args, &opts).await;
    for (instance, result) in &results {
        match result {
            Ok(reply) => println!("  {:<21} -> {}", instance.addr, reply.message),
            Err(status) => println!("  {:<21} -> failed: {status}", instance.addr),
        }
    }
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();

    // The Go way: a WaitGroup over calls balanced across the live replicas (calls that
    // land on the crashed one are retried elsewhere: the method is idempotent).
    let wg = WaitGroup::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let svc = ServiceClient::new(client.clone());
    for i in 0..10 {
        let (svc, answered) = (svc.clone(), answered.clone());
        wg.spawn(async move {
            if svc.method(format!("caller {i}")).await.is_ok() {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    wg.wait().await;
    println!("WaitGroup: {} of 10 balanced calls answered", answered.load(Ordering::Relaxed));

    // A quorum: two answers are enough; the rest are cancelled.
    let calls = (0..3).map(|_| svc.method("quorum".into()));
    let two = fanout::quorum(2, calls).deadline(Duration::from_secs(1)).await?;
    println!("quorum: {} answers, first from: {}", two.len(), two[0].1.message);

    println!("All RPC calls completed.");
    for r in replicas {
        r.shutdown().await;
    }
    if ok != 2 || answered.load(Ordering::Relaxed) != 10 {
        return Err(format!(
            "expected 2 replies and 10 answered calls, got {ok} and {}",
            answered.load(Ordering::Relaxed)
        )
        .into());
    }
    Ok(())
}
