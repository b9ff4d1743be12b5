//! The client: one multiplexed connection carrying many concurrent calls, answered in
//! any order, each with its own deadline; dropping a call's future cancels it on the
//! server; keepalive pings detect a dead peer.
//!
//! The in-flight table holds each call's result and waker directly (no channel per
//! call): the reader fills every slot answered by one read under one lock, then wakes
//! the callers after unlocking.

mod builder;
mod call;
mod connection;
mod in_flight;
mod options;

pub use builder::{Client, ClientBuilder, ClientConfig};
pub use options::CallOptions;
