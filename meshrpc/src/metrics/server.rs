//! [`ServerMetrics`]: what one server records about the calls it serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::call_stats::{CallSnapshot, CallStats};
use super::export::{encode_bytes, encode_calls, encode_counter, encode_gauge, rows};

/// The label value of every method a server does not serve: a peer sending random names
/// cannot make the number of series grow.
pub const UNKNOWN_METHOD: &str = "<unknown>";

/// A server's numbers: per registered method (and one row for unknown names) calls by
/// status, latency, in flight and bytes; open and accepted connections.
pub struct ServerMetrics {
    /// Full method names (`Service.Method`) in route-index order.
    methods: Vec<Arc<str>>,
    /// One per method, then one for unknown names.
    stats: Box<[CallStats]>,
    connections: AtomicI64,
    accepted: AtomicU64,
    /// Bytes read from and written to client connections.
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    /// Calls admitted and not yet answered, across connections (the server's count).
    admitted: Arc<AtomicUsize>,
    /// Reply bytes queued for all connections and not yet written (the server's count).
    queued_bytes: Arc<AtomicUsize>,
    /// Connections dropped because the server's queued reply bytes passed their limit.
    shed: AtomicU64,
    /// Methods moved to a task of their own per call because a first poll held the reader.
    pub(crate) moved_to_task: AtomicU64,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").field("methods", &self.methods).finish_non_exhaustive()
    }
}

impl ServerMetrics {
    /// Counters for `methods` (indexed as given) and for unknown method names.
    /// `admitted` and `queued_bytes` are the server's own counts, read for the gauges.
    pub(crate) fn new(
        methods: Vec<Arc<str>>,
        admitted: Arc<AtomicUsize>,
        queued_bytes: Arc<AtomicUsize>,
    ) -> ServerMetrics {
        let stats = (0..=methods.len()).map(|_| CallStats::new()).collect();
        ServerMetrics {
            methods,
            stats,
            connections: AtomicI64::new(0),
            accepted: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            admitted,
            queued_bytes,
            shed: AtomicU64::new(0),
            moved_to_task: AtomicU64::new(0),
        }
    }

    /// Counts connections dropped by the queued-bytes limit.
    pub(crate) fn connections_shed(&self, n: usize) {
        self.shed.fetch_add(n as u64, Relaxed);
    }

    /// Calls admitted and not yet answered now, across connections.
    pub fn admitted_calls(&self) -> usize {
        self.admitted.load(Relaxed)
    }

    /// Reply bytes queued now for all connections and not yet written to their sockets.
    pub fn queued_reply_bytes(&self) -> usize {
        self.queued_bytes.load(Relaxed)
    }

    /// Methods moved so far to a task of their own per call because a first poll held
    /// the connection's reader over the inline limit.
    pub fn methods_moved_to_task(&self) -> u64 {
        self.moved_to_task.load(Relaxed)
    }

    /// Connections dropped so far because queued replies passed the server's limit.
    pub fn connections_shed_total(&self) -> u64 {
        self.shed.load(Relaxed)
    }

    /// The counters of the method with route index `index`.
    pub(crate) fn method(&self, index: u32) -> &CallStats {
        self.stats.get(index as usize).unwrap_or_else(|| self.unknown())
    }

    /// The counters of calls to methods this server does not have.
    pub(crate) fn unknown(&self) -> &CallStats {
        &self.stats[self.methods.len()]
    }

    /// Counts a connection that completed its handshake.
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
    }

    /// Counts a connection that ended.
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> i64 {
        self.connections.load(Relaxed)
    }

    /// Every method's numbers now, by full name, sorted; unknown names last as
    /// [`UNKNOWN_METHOD`].
    pub fn snapshot(&self) -> Vec<(String, CallSnapshot)> {
        let mut rows: Vec<(String, CallSnapshot)> =
            self.methods.iter().zip(self.stats.iter()).map(|(m, s)| (m.to_string(), s.snapshot())).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.push((UNKNOWN_METHOD.to_string(), self.unknown().snapshot()));
        rows
    }
}

/// The service part of `Service.Method` (or the whole name if it has no dot).
pub(crate) fn service_of(method: &str) -> &str {
    method.rsplit_once('.').map_or(method, |(s, _)| s)
}

impl Collector for ServerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snaps = self.snapshot();
        let rows = rows(&snaps, UNKNOWN_METHOD);
        encode_calls(&mut encoder, "server", &rows)?;
        encode_bytes(&mut encoder, "server", self.received.load(Relaxed), self.sent.load(Relaxed))?;
        encode_gauge(
            &mut encoder,
            "server_connections",
            "Client connections open now.",
            self.open_connections(),
        )?;
        encode_counter(
            &mut encoder,
            "server_connections_accepted",
            "Client connections that completed the handshake.",
            self.accepted.load(Relaxed),
        )?;
        encode_gauge(
            &mut encoder,
            "server_admitted_calls",
            "Calls admitted and not yet answered, across connections.",
            self.admitted_calls() as i64,
        )?;
        encode_gauge(
            &mut encoder,
            "server_queued_reply_bytes",
            "Reply bytes queued for clients and not yet written to their sockets.",
            self.queued_reply_bytes() as i64,
        )?;
        encode_counter(
            &mut encoder,
            "server_connections_shed",
            "Connections dropped because the server's queued reply bytes passed their limit.",
            self.connections_shed_total(),
        )?;
        encode_counter(
            &mut encoder,
            "server_methods_moved_to_task",
            "Methods whose calls run on a task of their own since a first poll held the connection's reader over the inline limit.",
            self.methods_moved_to_task(),
        )?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            encode_gauge(
                &mut encoder,
                "runtime_alive_tasks",
                "Tasks alive in the tokio runtime serving these metrics.",
                rt.metrics().num_alive_tasks() as i64,
            )?;
        }
        Ok(())
    }
}
