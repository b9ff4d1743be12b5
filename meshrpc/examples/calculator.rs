//! Seed 2, RPC by name: a typed Calculator server and client.
//!
//! Run: `cargo run -p meshrpc --example calculator`

use meshrpc::{Server, Status};

/// The service: one method, `Calculator.Add` on the wire, taking `{"a": .., "b": ..}`.
#[meshrpc::service]
trait Calculator {
    /// Adds two numbers. Pure, so safe to retry.
    #[meshrpc(idempotent)]
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status>;
}

/// The implementation the server runs.
struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status> {
        a.checked_add(b).ok_or_else(|| Status::invalid_argument("the sum overflows"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server registers the service and listens on a free loopback port.
    let server =
        Server::builder().add_service(CalculatorServer::new(Calc)).bind("127.0.0.1:0").await?.spawn();
    println!("Calculator server listening on {}", server.local_addr());

    // The client dials it and calls Calculator.Add with {A: 10, B: 5}.
    let calc = CalculatorClient::connect(server.local_addr()).await?;
    let sum = calc.add(10, 5).await?;
    println!("Result: {sum}");

    // Errors come back as a Status with a gRPC code and a message.
    match calc.add(i64::MAX, 1).await {
        Ok(v) => println!("unexpected: {v}"),
        Err(status) => println!("Adding past i64::MAX fails cleanly: {status}"),
    }

    server.shutdown().await;
    Ok(())
}
