//! The demo services: what `meshrpc demo` serves, and handy targets for tests and
//! benchmarks. `Calculator.Add`, `Echo.Echo` and `Greeter.Hello` are pure (idempotent);
//! `Counter.Inc` is not.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{Blob, Service, Status};

/// Integer arithmetic (the seeds' `Calculator`).
#[crate::service]
pub trait Calculator {
    /// `a + b`; an overflow is `INVALID_ARGUMENT`, not a wrap.
    #[meshrpc(idempotent)]
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status>;
}

/// A shared counter (the seeds' `SafeCounter`); a mutex guards the value.
#[crate::service]
pub trait Counter {
    /// Adds one and returns the new value. Not idempotent.
    async fn inc(&self) -> Result<i64, Status>;
    /// The current value.
    #[meshrpc(idempotent)]
    async fn value(&self) -> Result<i64, Status>;
}

/// Returns its bytes (base64 in JSON).
#[crate::service]
pub trait Echo {
    /// Returns `data` unchanged.
    #[meshrpc(idempotent)]
    async fn echo(&self, data: Blob) -> Result<Blob, Status>;

    /// `Echo.Sleep`: waits `ms` milliseconds (at most a minute), then answers `ms`. A
    /// slow call, for trying deadlines, cancellation and draining.
    #[meshrpc(idempotent)]
    async fn sleep(&self, ms: u64) -> Result<u64, Status>;
}

/// Greets by name, saying which instance answered.
#[crate::service]
pub trait Greeter {
    /// `{"message": "Hello, <name>! (from <instance>)"}`.
    #[meshrpc(idempotent)]
    async fn hello(&self, name: String) -> Result<HelloReply, Status>;
}

/// The reply of `Greeter.Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The greeting.
    pub message: String,
}

/// The demo `Calculator`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, Status> {
        a.checked_add(b)
            .ok_or_else(|| Status::invalid_argument(format!("{a} + {b} overflows a 64-bit integer")))
    }
}

/// The demo `Counter`: one value behind a mutex.
#[derive(Debug, Default)]
pub struct SafeCounter {
    value: Mutex<i64>,
}

impl Counter for SafeCounter {
    async fn inc(&self) -> Result<i64, Status> {
        let mut v = self.value.lock().map_err(|_| Status::internal("the counter's lock is poisoned"))?;
        *v = v.checked_add(1).ok_or_else(|| Status::invalid_argument("the counter would overflow"))?;
        Ok(*v)
    }

    async fn value(&self) -> Result<i64, Status> {
        self.value.lock().map(|v| *v).map_err(|_| Status::internal("the counter's lock is poisoned"))
    }
}

/// The demo `Echo`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, data: Blob) -> Result<Blob, Status> {
        Ok(data)
    }

    async fn sleep(&self, ms: u64) -> Result<u64, Status> {
        if ms > 60_000 {
            return Err(Status::invalid_argument(format!("Echo.Sleep sleeps at most 60000 ms, not {ms}")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

/// The demo `Greeter`, named after the instance that runs it.
#[derive(Debug, Clone)]
pub struct NamedGreeter {
    /// Said in every greeting.
    pub instance: String,
}

impl Greeter for NamedGreeter {
    async fn hello(&self, name: String) -> Result<HelloReply, Status> {
        Ok(HelloReply { message: format!("Hello, {name}! (from {})", self.instance) })
    }
}

/// Every demo service, for one server; `instance` names it in greetings.
pub fn services(instance: &str) -> Vec<Service> {
    vec![
        CalculatorServer::new(Calc).into(),
        CounterServer::new(SafeCounter::default()).into(),
        EchoServer::new(Echoer).into(),
        GreeterServer::new(NamedGreeter { instance: instance.to_string() }).into(),
    ]
}
