//! Seed 8, high-concurrency RPC fan-out: one call to `Service.Method` with
//! `{"name": "Alice"}` on three servers at once, one of them down. Every reply or error is
//! reported, the dead server does not hold up the others, then "All RPC calls completed."
//!
//! Run: `cargo run -p meshrpc --example concurrent_calls`

use std::time::Duration;

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

/// One server instance, which says which one it is.
struct Instance(&'static str);

impl Service for Instance {
    async fn method(&self, name: String) -> Result<Reply, Status> {
        Ok(Reply { message: format!("Hello, {name}! (from server {})", self.0) })
    }
}

async fn start(name: &'static str) -> Result<meshrpc::ServerHandle, Box<dyn std::error::Error>> {
    let server =
        Server::builder().add_service(ServiceServer::new(Instance(name))).bind("127.0.0.1:0").await?;
    Ok(server.spawn())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = start("A").await?;
    let b = start("B").await?;
    // The third server is down: a port nobody listens on.
    let down = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let targets = [a.local_addr(), b.local_addr(), down];

    // Call all three at once, each with a 1 s deadline, and wait for every one (a
    // WaitGroup in Go; here the futures are simply joined).
    let deadline = Duration::from_secs(1);
    let calls = targets.map(|addr| async move {
        let result = async {
            let client = Client::builder().connect_timeout(deadline).connect(addr).await?;
            ServiceClient::new(client).method_with(CallOptions::new().timeout(deadline), "Alice".into()).await
        }
        .await;
        (addr, result)
    });
    for (addr, result) in futures_util::future::join_all(calls).await {
        match result {
            Ok(reply) => println!("{addr}: {}", reply.message),
            Err(status) => println!("{addr}: call failed: {status}"),
        }
    }
    println!("All RPC calls completed.");

    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
