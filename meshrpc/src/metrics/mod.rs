//! Prometheus metrics, named `meshrpc_…`, through `prometheus-client`'s encoder.
//!
//! - [`ServerMetrics`]: each server's calls per service, method and status code,
//!   latency histograms (25 µs to 10 s), calls in flight, payload bytes, connections.
//!   The `method` label only takes the server's registered names; anything else is
//!   counted as [`UNKNOWN_METHOD`].
//! - [`ClientMetrics`]: the same per method for this process's clients, plus retries,
//!   hedges, re-sends and ejections per service, and open connections.
//! - The dev registry's instances per service, leases and watch lag
//!   (`MemoryRegistry::collector`).
//!
//! Recording is on with the default `telemetry` feature; without it the counters stay
//! at zero (the hot path has no recording code at all). A server's admin endpoint
//! ([`crate::admin`]) serves them at `/metrics`; [`Exposition`] renders them anywhere.
//! docs/METRICS.md lists every metric.
//!
//! ```
//! use meshrpc::metrics::{ClientMetrics, Exposition};
//!
//! let mut expo = Exposition::new();
//! expo.add(ClientMetrics::global());
//! let text = expo.encode();
//! assert!(text.contains("meshrpc_client_connections"));
//! assert!(text.ends_with("# EOF\n"));
//! ```

mod call_stats;
mod client;
mod export;
mod server;

pub use call_stats::{CallSnapshot, CallStats, LATENCY_BUCKETS};
pub(crate) use client::Event;
pub use client::{ClientMetrics, MAX_CLIENT_METHODS, OTHER_METHOD};
pub(crate) use server::service_of;
pub use server::{ServerMetrics, UNKNOWN_METHOD};

use prometheus_client::collector::Collector;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Whether calls are recorded (the `telemetry` feature, on by default).
pub(crate) const ENABLED: bool = cfg!(feature = "telemetry");

/// The `Content-Type` of [`Exposition::encode`]'s output (OpenMetrics text, which
/// Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A set of collectors rendered together as one `/metrics` page, every name prefixed
/// `meshrpc_`, with `meshrpc_build_info{version}`.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Default for Exposition {
    fn default() -> Self {
        Exposition::new()
    }
}

impl Exposition {
    /// An exposition with only the build info.
    pub fn new() -> Exposition {
        let mut registry = Registry::with_prefix("meshrpc");
        let info = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        registry.register("build", "The meshrpc version serving these metrics.", info);
        Exposition { registry }
    }

    /// Adds a collector (read on every [`Exposition::encode`]).
    pub fn add(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The metrics in the text format, as of now.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector error would be a bug in it.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics failed: {e}");
        }
        out
    }
}
