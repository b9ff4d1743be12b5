//! [`Context`]: what a handler knows about its call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::call::CallState;

use crate::wire::Metadata;

tokio::task_local! {
    /// The context of the call whose handler is running on this task.
    pub(crate) static CURRENT: Context;
}

/// The deadline of the server call running on this task, if any: clients use it so that
/// calls a handler makes inherit what is left of its own deadline.
pub fn current_deadline() -> Option<Instant> {
    CURRENT.try_with(|c| c.call.deadline).ok().flatten()
}

/// The trace of the server call running on this task, if its caller sent one (no
/// reference count touched: this runs on every client call).
pub(crate) fn current_trace() -> Option<crate::trace::TraceContext> {
    CURRENT.try_with(|c| c.trace()).ok().flatten()
}

/// Runs a handler future with `ctx` as the task's current call context.
pub(crate) async fn with_context<F: Future>(ctx: Context, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// A handler's view of its call: deadline, peer, call id, metadata and cancellation.
///
/// Cheap to clone (one reference count): the call's facts and its cancellation state
/// live in one shared allocation.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) call: Arc<CallFacts>,
}

/// What the server knows about a call, shared by its context, its replier and the
/// connection's table of pending calls.
#[derive(Debug)]
pub(crate) struct CallFacts {
    pub(crate) call_id: u64,
    pub(crate) method: Arc<str>,
    pub(crate) peer: SocketAddr,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) idempotent: bool,
    pub(crate) state: CallState,
    /// The method's row in the server's metrics.
    pub(crate) route: u32,
    /// When the request was read (for the latency histogram).
    pub(crate) started: Instant,
    /// The call's `rpc.server` span (disabled unless a subscriber records it).
    pub(crate) span: tracing::Span,
}

impl Context {
    /// The context of the call being served on this task (inside a handler, typed or
    /// not); `None` elsewhere. Typed service methods use this to see their call.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Context::clone).ok()
    }

    /// The caller's id for this call (unique per connection while in flight).
    pub fn call_id(&self) -> u64 {
        self.call.call_id
    }

    /// The full method name, `Service.Method`.
    pub fn method(&self) -> &str {
        &self.call.method
    }

    /// The caller's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.call.peer
    }

    /// When the caller stops waiting, if it set a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.call.deadline
    }

    /// Time left before the deadline (zero once past it); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.call.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True when the caller marked the call idempotent (safe to retry or hedge).
    pub fn is_idempotent(&self) -> bool {
        self.call.idempotent
    }

    /// The trace this call is part of, if its caller sent a W3C `traceparent`: the
    /// caller's trace id, and a span id of this call's own. Calls the handler makes
    /// carry it on (see [`crate::trace`]).
    pub fn trace(&self) -> Option<crate::trace::TraceContext> {
        crate::trace::TraceContext::for_server_call(&self.call.metadata, self.call.call_id)
    }

    /// The request metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.call.metadata
    }

    /// True once the caller cancelled, the deadline passed, or the server is stopping
    /// the call. The handler future itself is dropped then; this lets work it spawned
    /// elsewhere stop too.
    pub fn is_cancelled(&self) -> bool {
        self.call.state.is_cancelled()
    }

    /// Resolves when the call is cancelled (see [`Context::is_cancelled`]).
    pub async fn cancelled(&self) {
        self.call.state.cancelled().await
    }

    /// A token that is cancelled with the call, for work spawned on other tasks.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.call.state.token()
    }
}
