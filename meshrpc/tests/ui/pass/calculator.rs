//! The trait from the issue compiles, and its server and client have the expected API.
#![deny(missing_docs, missing_debug_implementations)]

use meshrpc::Status;

/// A calculator.
#[meshrpc::service]
pub trait Calculator {
    /// Adds two numbers.
    #[meshrpc(idempotent)]
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status>;
    /// No arguments at all.
    async fn reset(&self) -> meshrpc::Result<()>;
}

#[derive(Debug)]
struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status> {
        Ok(a + b)
    }
    async fn reset(&self) -> meshrpc::Result<()> {
        Ok(())
    }
}

fn main() {
    let service: meshrpc::Service = CalculatorServer::new(Calc).into();
    let names: Vec<String> = service.method_names().collect();
    assert_eq!(names, ["Calculator.Add", "Calculator.Reset"]);
    assert_eq!(CalculatorClient::SERVICE_NAME, "Calculator");
    let _ = CalculatorServer::new(Calc).clone();
}
