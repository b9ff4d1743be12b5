//! Trace context across calls: a W3C `traceparent` in the request metadata, so a chain
//! A → B → C shares one trace id, and `tracing` spans for every call on both ends
//! (`rpc.client`, `rpc.server`, at DEBUG level, with method, call id, peer, status and
//! trace id). With the `otel` feature the spans are exported through OpenTelemetry
//! (install `tracing-opentelemetry`'s layer) and carry its span ids.
//!
//! Where a call's trace comes from, first match wins:
//! 1. an explicit [`TraceContext::scope`] around the calling code;
//! 2. the server call being handled on this task (its caller's `traceparent`);
//! 3. a new trace, if a subscriber records `rpc.client` spans;
//! 4. none: then nothing is added to the request.
//!
//! ```
//! use meshrpc::trace::TraceContext;
//!
//! let root = TraceContext::new_root();
//! let header = root.to_traceparent();
//! assert_eq!(TraceContext::parse(&header), Some(root));
//! assert_eq!(root.child().trace_id, root.trace_id);
//! ```

use std::fmt;

use crate::status::Code;
use crate::wire::Metadata;

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A position in a distributed trace: the trace, and the span that is the parent of
/// whatever is done next.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace, shared by every span of one request chain (never 0).
    pub trace_id: u128,
    /// The current span (never 0).
    pub span_id: u64,
    /// Whether the trace is sampled (recorded).
    pub sampled: bool,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_traceparent())
    }
}

tokio::task_local! {
    static SCOPE: TraceContext;
}

fn nonzero64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

impl TraceContext {
    /// A new trace (random ids), sampled.
    pub fn new_root() -> TraceContext {
        let trace_id = loop {
            let v: u128 = rand::random();
            if v != 0 {
                break v;
            }
        };
        TraceContext { trace_id, span_id: nonzero64(), sampled: true }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> TraceContext {
        TraceContext { span_id: nonzero64(), ..*self }
    }

    /// Parses a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`); `None` if it is
    /// malformed or has all-zero ids, as the W3C spec requires.
    pub fn parse(s: &str) -> Option<TraceContext> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |p: &str, len: usize| {
            p.len() == len && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        // Version 00 has exactly four parts; later versions may add more (read as 00).
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The `traceparent` value for this context.
    pub fn to_traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }

    /// The trace id as 32 lowercase hex digits (as tracing back-ends show it).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// Runs `fut` with this context as the current one: calls it makes carry it.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        SCOPE.scope(self, fut).await
    }

    /// The current context: an enclosing [`TraceContext::scope`], else the server call
    /// being handled on this task (if its caller sent a `traceparent`).
    pub fn current() -> Option<TraceContext> {
        SCOPE.try_with(|c| *c).ok().or_else(crate::server::current_trace)
    }

    /// The context a server call runs in: its caller's span id replaced by one derived
    /// from it and the call id (stable for the call, different per call).
    pub(crate) fn for_server_call(metadata: &Metadata, call_id: u64) -> Option<TraceContext> {
        if metadata.is_empty() {
            return None;
        }
        let parent = TraceContext::parse(metadata.get_str(TRACEPARENT)?)?;
        let mut z = parent.span_id ^ call_id.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        // splitmix64's finaliser: a well-spread id from the two inputs.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Some(TraceContext { span_id: z.max(1), ..parent })
    }
}

/// The span of a call served: `rpc.server` at DEBUG, with the caller's trace as its
/// parent. Disabled (and free) when no subscriber wants it.
pub(crate) fn server_span(
    method: &str,
    call_id: u64,
    peer: std::net::SocketAddr,
    metadata: &Metadata,
) -> tracing::Span {
    if !crate::metrics::ENABLED {
        return tracing::Span::none();
    }
    let span = tracing::debug_span!(
        target: "meshrpc::server",
        "rpc.server",
        otel.name = method,
        otel.kind = "server",
        rpc.method = method,
        rpc.call_id = call_id,
        net.peer = %peer,
        trace_id = tracing::field::Empty,
        rpc.code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        if let Some(parent) = metadata.get_str(TRACEPARENT).and_then(TraceContext::parse) {
            span.record("trace_id", parent.trace_id_hex());
            #[cfg(feature = "otel")]
            otel::set_parent(&span, parent);
        }
    }
    span
}

/// The span of a call made: `rpc.client` at DEBUG, a child of the current span.
pub(crate) fn client_span(method: &str) -> tracing::Span {
    if !crate::metrics::ENABLED {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        target: "meshrpc::client",
        "rpc.client",
        otel.name = method,
        otel.kind = "client",
        rpc.method = method,
        trace_id = tracing::field::Empty,
        rpc.code = tracing::field::Empty,
    )
}

/// The trace context an outgoing call carries (see the module docs for the order), or
/// `None` to send none. `span` is the call's `rpc.client` span; `parent` is
/// [`TraceContext::current`].
pub(crate) fn outgoing(span: &tracing::Span, parent: Option<TraceContext>) -> Option<TraceContext> {
    if !crate::metrics::ENABLED {
        return None;
    }
    if span.is_disabled() {
        return parent.map(|p| p.child());
    }
    #[cfg(feature = "otel")]
    {
        // A server call's trace reaches this span through its tracing parent (the
        // `rpc.server` span); only an explicit scope has to be made its parent here.
        if let Ok(p) = SCOPE.try_with(|c| *c) {
            otel::set_parent(span, p);
        }
        if let Some(ctx) = otel::context_of(span) {
            span.record("trace_id", ctx.trace_id_hex());
            return Some(ctx);
        }
    }
    let ctx = parent.map_or_else(TraceContext::new_root, |p| p.child());
    span.record("trace_id", ctx.trace_id_hex());
    Some(ctx)
}

/// Records a call's final status on its span.
pub(crate) fn record_code(span: &tracing::Span, code: Code) {
    if !span.is_disabled() {
        span.record("rpc.code", code.as_str());
    }
}

#[cfg(feature = "otel")]
mod otel {
    //! The bridge to OpenTelemetry: remote parents in, span ids out.

    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::TraceContext;

    /// Makes `parent` (from another process) the OpenTelemetry parent of `span`.
    pub(super) fn set_parent(span: &tracing::Span, parent: TraceContext) {
        let flags = if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id.to_be_bytes()),
            SpanId::from_bytes(parent.span_id.to_be_bytes()),
            flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// `span`'s OpenTelemetry ids, if an OpenTelemetry layer records it.
    pub(super) fn context_of(span: &tracing::Span) -> Option<TraceContext> {
        let cx = span.context();
        let otel_span = cx.span();
        let sc = otel_span.span_context();
        sc.is_valid().then(|| TraceContext {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_w3c_example_and_writes_it_back() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tc = TraceContext::parse(s).expect("the spec's example parses");
        assert_eq!(tc.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tc.span_id, 0x00f067aa0ba902b7);
        assert!(tc.sampled);
        assert_eq!(tc.to_traceparent(), s);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?} must be rejected");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(TraceContext::parse(later).is_some(), "a later version may carry more fields");
    }

    #[test]
    fn a_server_call_gets_a_stable_span_of_its_own_in_the_callers_trace() {
        let parent = TraceContext::new_root();
        let mut md = Metadata::new();
        md.insert(TRACEPARENT, parent.to_traceparent()).expect("a valid pair");
        let a = TraceContext::for_server_call(&md, 7).expect("a context");
        assert_eq!(a.trace_id, parent.trace_id);
        assert_ne!(a.span_id, parent.span_id);
        assert_eq!(TraceContext::for_server_call(&md, 7), Some(a));
        assert_ne!(TraceContext::for_server_call(&md, 8).map(|c| c.span_id), Some(a.span_id));
        assert_eq!(TraceContext::for_server_call(&Metadata::new(), 7), None);
    }

    #[tokio::test]
    async fn a_scope_is_the_current_context_inside_it_only() {
        let root = TraceContext::new_root();
        assert_eq!(root.scope(async { TraceContext::current() }).await, Some(root));
        assert_eq!(TraceContext::current(), None);
    }
}
