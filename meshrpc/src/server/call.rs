//! Running a call: the first poll happens inline on the connection's reader, so a
//! handler that finishes at once (most do) costs no task, timer or table entry; one that
//! is still pending gets its own task, raced against its deadline and cancellation. A
//! panic is caught either way and answered INTERNAL.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Context;
use super::connection::ConnShared;
use super::context::{CURRENT, CallFacts, with_context};
use super::router::{BoxFuture, IncomingCall, Route};
use crate::codec::Codec;
use crate::status::{Code, Status};
use crate::wire::{self, Metadata};

/// One call's shared state: whether it has been answered (exactly one answer per call)
/// and whether it was cancelled.
#[derive(Debug)]
pub(crate) struct CallState {
    answered: AtomicBool,
    cancelled: AtomicBool,
    notify: Notify,
    /// Made only when a handler asks for a `CancellationToken`. A mutex, not a OnceLock:
    /// `cancel` and `token` each store one thing and read the other, which needs one
    /// lock (or SeqCst fences) so that neither can miss the other.
    token: Mutex<Option<CancellationToken>>,
    pub(crate) codec: u8,
}

impl CallState {
    pub(crate) fn new(codec: u8) -> CallState {
        CallState {
            answered: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            notify: Notify::new(),
            token: Mutex::new(None),
            codec,
        }
    }

    /// Claims the right to answer; true for the first caller only.
    pub(crate) fn claim_answer(&self) -> bool {
        !self.answered.swap(true, Ordering::AcqRel)
    }

    /// Cancels the call: its task drops the handler, and `Context::cancelled` resolves.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.notify.notify_waiters();
        if let Some(t) = self.token.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            t.cancel();
        }
    }

    pub(crate) fn is_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once the call is cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// A token cancelled with the call (made on first use).
    pub(crate) fn token(&self) -> CancellationToken {
        let mut slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
        let t = slot.get_or_insert_with(CancellationToken::new).clone();
        if self.is_cancelled() {
            t.cancel(); // cancelled before the token existed
        }
        t
    }
}

/// Where a call's reply goes: encodes the response frame into the connection's outbox.
pub(crate) struct Replier {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) call: Arc<CallFacts>,
    pub(crate) codec: Codec,
}

impl Replier {
    /// Answers the call with `reply`, or with INTERNAL / RESOURCE_EXHAUSTED if the reply
    /// does not encode or is larger than the client accepts. Sends nothing if the call
    /// was already answered (drain timeout) or cancelled.
    pub(crate) fn send_ok<R: serde::Serialize>(&self, reply: &R) {
        let Some(_answering) = self.conn.release(&self.call.state) else {
            return;
        };
        let max = self.conn.peer_max_frame;
        let failure = {
            let mut out = self.conn.outbox.lock();
            let head = wire::encode_response_head(
                &mut out,
                self.call.call_id,
                0,
                self.codec.id(),
                Code::Ok,
                "",
                &Metadata::new(),
            );
            // A panicking Serialize must not leave half a frame in the shared queue.
            let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| self.codec.encode(reply, &mut out)));
            match encoded {
                Ok(Ok(())) => head
                    .finish(&mut out, max)
                    .err()
                    .map(|e| Status::resource_exhausted(format!("the reply is too large to send: {e}"))),
                Ok(Err(e)) => {
                    head.abandon(&mut out);
                    Some(Status::internal(format!("cannot encode the reply: {e}")))
                }
                Err(_) => {
                    head.abandon(&mut out);
                    Some(Status::internal("the reply's Serialize implementation panicked"))
                }
            }
        };
        // We hold the answer: a reply that cannot be sent is answered with its error.
        match failure {
            None => self.conn.finished(&self.call, Code::Ok),
            Some(status) => {
                self.conn.send_error(self.call.call_id, self.codec.id(), &status);
                self.conn.finished(&self.call, status.code());
            }
        }
    }
}

/// A call admitted by the reader, ready to run.
pub(crate) struct CallStart<'a> {
    pub(crate) conn: Arc<ConnShared>,
    /// Borrowed from the router: cloning its `Arc`s would touch counters every
    /// connection's calls share (contended between worker threads).
    pub(crate) route: &'a Route,
    pub(crate) call_id: u64,
    pub(crate) codec: Codec,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) idempotent: bool,
    pub(crate) payload: bytes::Bytes,
    /// When the request was read.
    pub(crate) started: Instant,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

fn panicked(method: &str, call_id: u64, msg: &str) -> Status {
    tracing::error!(method, call_id, "handler panicked: {msg}");
    Status::internal(format!("the handler of {method} panicked: {msg}"))
}

/// Starts a call: polls its handler once right here (inside the call's context scope
/// and a panic catcher); if it is not done, hands it to a task of its own. A method
/// marked to run on its own task skips the inline poll; a first poll that held the
/// reader longer than the server's `inline_poll_limit` marks its method so.
///
/// Measured: `Calculator.Add` finishes on that first poll, so the call costs no spawn,
/// no cancel token, no timer and no lock on the calls table (the profile before this
/// change spent ~25 % of server CPU on exactly those).
pub(crate) fn start_call(start: CallStart<'_>) {
    let CallStart { conn, route, call_id, codec, deadline, metadata, idempotent, payload, started } = start;
    let span = crate::trace::server_span(&route.name, call_id, conn.peer, &metadata);
    let call = Arc::new(CallFacts {
        call_id,
        method: route.name.clone(),
        peer: conn.peer,
        deadline,
        metadata,
        idempotent,
        state: CallState::new(codec.id()),
        route: route.index,
        started,
        span: span.clone(),
    });
    let ctx = Context { call: call.clone() };
    let replier = Replier { conn: conn.clone(), call: call.clone(), codec };
    let _entered = span.enter();
    let on_task = route.on_task.load(Ordering::Relaxed);
    let limit = conn.server.config.inline_poll_limit.filter(|_| !on_task);
    let mut held = None;
    let first = CURRENT.sync_scope(Context { call: call.clone() }, || {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut fut = route.handler.call(ctx, IncomingCall { codec, payload, replier });
            if on_task {
                return (fut, Poll::Pending); // not polled here: straight to its task
            }
            // Only the poll is timed (decoding the arguments is not the handler's doing),
            // on a coarse clock: two readings cost less than one of std's Instant.
            let polled_at = limit.map(|_| coarsetime::Instant::now());
            // A no-op waker: if the handler is pending, the task below polls it again at
            // once with its own waker, so nothing registered here is ever relied on.
            let poll = fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            held = polled_at.map(|t| std::time::Duration::from(t.elapsed()));
            (fut, poll)
        }))
    });
    if let (Some(limit), Some(held)) = (limit, held) {
        if held > limit && !route.on_task.swap(true, Ordering::Relaxed) {
            conn.server.metrics.moved_to_task.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                method = &*route.name,
                "the first poll of {} held its connection for {held:?} (over the {limit:?} inline limit): \
                 its calls run on a task of their own from now on; do blocking work after an .await \
                 (spawn_blocking) or register the method with method_on_task / #[meshrpc(on_task)]",
                route.name
            );
        }
    }
    let status = match first {
        Ok((_, Poll::Ready(Ok(())))) => return,
        Ok((_, Poll::Ready(Err(status)))) => status,
        Err(p) => panicked(&route.name, call_id, &panic_message(&*p)),
        Ok((fut, Poll::Pending)) => {
            conn.track(call_id, call.clone());
            if crate::metrics::ENABLED {
                // Only calls that outlive their first poll can be seen in flight.
                conn.server.metrics.method(call.route).enter();
            }
            // The guard exists before the task does: a task dropped before its first
            // poll (runtime shutdown) still releases the slot and its table entry.
            let guard = TaskGuard { conn: conn.clone(), call: call.clone() };
            let scope = Context { call: call.clone() };
            let span = call.span.clone();
            tokio::spawn(run_pending(Pending { conn, call, scope, fut, guard }).instrument(span));
            return;
        }
    };
    if let Some(_answering) = conn.release(&call.state) {
        conn.send_error(call_id, codec.id(), &status);
        conn.finished(&call, status.code());
    }
}

/// A call whose handler did not finish on its first poll.
struct Pending {
    conn: Arc<ConnShared>,
    call: Arc<CallFacts>,
    scope: Context,
    fut: BoxFuture<Result<(), Status>>,
    guard: TaskGuard,
}

/// Releases a pending call's slot and table entry when its task ends, however it ends.
struct TaskGuard {
    conn: Arc<ConnShared>,
    call: Arc<CallFacts>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.conn.untrack(&self.call);
        if crate::metrics::ENABLED {
            self.conn.server.metrics.method(self.call.route).exit();
        }
        // Claimed here only if never answered (the task was dropped).
        if let Some(_answering) = self.conn.release(&self.call.state) {
            self.conn.finished(&self.call, Code::Cancelled);
        }
    }
}

enum Outcome {
    Done(Result<(), Status>),
    Panicked(String),
    TimedOut,
    Cancelled,
}

/// Runs a pending handler to completion, or until its deadline or cancellation.
async fn run_pending(p: Pending) {
    let Pending { conn, call, scope, fut, guard: _guard } = p;
    let (method, deadline) = (&*call.method, call.deadline);
    let (state, call_id) = (&call.state, call.call_id);
    let work = with_context(scope, AssertUnwindSafe(fut).catch_unwind());
    // The handler future lives inside this select: whichever branch wins, it is dropped
    // when the select returns, so a cancelled or timed-out handler stops running.
    let outcome = tokio::select! {
        biased;
        _ = state.cancelled() => Outcome::Cancelled,
        r = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, work).await.ok(),
                None => Some(work.await),
            }
        } => match r {
            None => Outcome::TimedOut,
            Some(Ok(res)) => Outcome::Done(res),
            Some(Err(p)) => Outcome::Panicked(panic_message(&*p)),
        },
    };
    let status = match outcome {
        Outcome::Done(Ok(())) | Outcome::Cancelled => return,
        Outcome::Done(Err(s)) => s,
        Outcome::Panicked(msg) => panicked(method, call_id, &msg),
        Outcome::TimedOut => {
            state.cancel();
            Status::deadline_exceeded(format!("{method} did not finish within the caller's deadline"))
        }
    };
    // Only the one who releases the slot answers: a call never gets two responses.
    if let Some(_answering) = conn.release(state) {
        conn.send_error(call_id, state.codec, &status);
        conn.finished(&call, status.code());
    }
}
