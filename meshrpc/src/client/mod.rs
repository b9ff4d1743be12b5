//! The client: a small pool of multiplexed connections to one server. Many concurrent
//! calls share a connection, answered in any order, each with its own deadline;
//! dropping a call's future cancels it on the server; keepalive pings detect a dead
//! peer; a dropped connection is re-established with backoff; calls the server refused
//! unprocessed while going away are re-sent on a new connection.
//!
//! The in-flight table holds each call's result and waker directly (no channel per
//! call): the reader fills every slot answered by one read under one lock, then wakes
//! the callers after unlocking.

mod backoff;
mod balanced;
mod call;
mod config;
mod connection;
mod handle;
mod in_flight;
mod options;
mod pool;

pub use backoff::Backoff;
pub use config::{ClientBuilder, ClientConfig};
pub use handle::{Client, ClientStats, RawCall};
pub use options::CallOptions;
pub(crate) use pool::Pool;
