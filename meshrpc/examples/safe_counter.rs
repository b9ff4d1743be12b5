//! Seed 4, shared state under concurrency: a counter service guarded by a mutex,
//! incremented by 1000 concurrent calls from several connections; it must read exactly
//! 1000 at the end.
//!
//! Run: `cargo run -p meshrpc --example safe_counter`

use std::sync::Mutex;

use meshrpc::{Server, Status};

/// The SafeCounter as a service.
#[meshrpc::service]
trait SafeCounter {
    /// Adds one; not idempotent (running it twice counts twice).
    async fn inc(&self) -> Result<u64, Status>;
    /// The current value.
    #[meshrpc(idempotent)]
    async fn value(&self) -> Result<u64, Status>;
}

/// The shared state: one value behind a mutex, like Go's `sync.Mutex` version.
#[derive(Default)]
struct Counter {
    value: Mutex<u64>,
}

impl SafeCounter for Counter {
    async fn inc(&self) -> Result<u64, Status> {
        let mut v = self.value.lock().map_err(|_| Status::internal("poisoned lock"))?;
        *v += 1;
        Ok(*v)
    }

    async fn value(&self) -> Result<u64, Status> {
        Ok(*self.value.lock().map_err(|_| Status::internal("poisoned lock"))?)
    }
}

const WORKERS: usize = 1000;
const CONNECTIONS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(SafeCounterServer::new(Counter::default()))
        .bind("127.0.0.1:0")
        .await?
        .spawn();

    // Several connections, like several client processes.
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(SafeCounterClient::connect(server.local_addr()).await?);
    }

    // 1000 concurrent workers, each incrementing once.
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..WORKERS {
        let client = clients[i % CONNECTIONS].clone();
        workers.spawn(async move { client.inc().await });
    }
    let mut failed = 0;
    while let Some(result) = workers.join_next().await {
        if !matches!(result, Ok(Ok(_))) {
            failed += 1;
        }
    }

    let value = clients[0].value().await?;
    println!("{WORKERS} concurrent increments over {CONNECTIONS} connections, {failed} failed");
    println!("Final counter value: {value}");
    server.shutdown().await;
    if value != WORKERS as u64 || failed != 0 {
        return Err(format!("expected exactly {WORKERS}, got {value}").into());
    }
    Ok(())
}
