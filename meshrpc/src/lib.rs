//! meshrpc: a toolkit for scalable, fault-tolerant microservices.
//!
//! Methods are called by name over TCP (`Calculator.Add`), many calls multiplexed on
//! one connection, each with its own deadline; handlers are isolated from each other
//! (a panic or a slow handler fails only its own call).
//!
//! ```
//! use meshrpc::{Client, Context, Server, Service, Status};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Args { a: i64, b: i64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let calculator = Service::new("Calculator")
//!     .method("Add", |_ctx: Context, args: Args| async move { Ok::<_, Status>(args.a + args.b) });
//! let server = Server::builder().add_service(calculator).bind("127.0.0.1:0").await?.spawn();
//!
//! let client = Client::connect(server.local_addr()).await?;
//! let sum: i64 = client.call("Calculator.Add", &Args { a: 10, b: 5 }).await?;
//! assert_eq!(sum, 15);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`wire`] | frame layout, encode/decode, limits; no I/O (spec: `docs/PROTOCOL.md`) |
//! | [`codec`] | payload codecs: MessagePack (default), JSON |
//! | `transport` | write queue with batching, writer task, buffered frame reader |
//! | [`server`] | router by `Service.Method`, connections, call tasks, limits, drain |
//! | [`client`] | multiplexed connection, in-flight table, deadlines, cancel, keepalive |
//! | [`status`] | [`Status`] and [`Code`] with gRPC's names |

pub mod client;
pub mod codec;
pub mod server;
pub mod status;
mod transport;
pub mod wire;

pub use client::{Backoff, CallOptions, Client, ClientBuilder, ClientStats, RawCall};
pub use codec::{Blob, Codec};
pub use meshrpc_macros::service;
pub use server::{Context, Server, ServerBuilder, ServerHandle, Service};
pub use status::{Code, Status};
pub use wire::Metadata;

/// `Result` with [`Status`] as the error, for handler and trait signatures.
pub type Result<T, E = Status> = std::result::Result<T, E>;

/// Re-exports used by code that `#[meshrpc::service]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
}

/// The README's Rust blocks, compiled and run as doc tests so the quickstart cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
