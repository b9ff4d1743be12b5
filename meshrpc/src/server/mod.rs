//! The server: a router from `Service.Method` to handlers, and a connection loop that
//! runs each call as its own task, guarded by a deadline, a cancel signal and a
//! panic catcher, within per-connection and per-server limits.
//!
//! ```no_run
//! use meshrpc::{Context, Server, Service, Status};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(serde::Deserialize)]
//! struct Args { a: i64, b: i64 }
//!
//! let calculator = Service::new("Calculator")
//!     .method("Add", |_ctx: Context, args: Args| async move { Ok::<_, Status>(args.a + args.b) });
//! Server::builder().add_service(calculator).serve("127.0.0.1:7001").await?;
//! # Ok(()) }
//! ```

mod builder;
mod call;
mod connection;
mod context;
mod handshake;
mod health;
mod router;
mod shed;

pub use builder::{
    ANNOUNCED_SHUTDOWN_GRACE, DEFAULT_MAX_QUEUED_BYTES, Server, ServerBuilder, ServerConfig, ServerHandle,
};
pub(crate) use context::current_trace;
pub use context::{Context, current_deadline};
pub use health::{HEALTH_CHECK, HEALTH_SERVICE, HealthCheckRequest, HealthCheckResponse, ServingStatus};
pub use router::Service;
pub(crate) use router::ServiceNames;
