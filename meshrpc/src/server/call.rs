//! One call's task: run the handler under its deadline, cancel signal and a panic
//! catcher, answer failures, and release the call's slot whatever happens.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::connection::ConnShared;
use super::context::with_context;
use super::router::{IncomingCall, Route};
use crate::codec::Codec;
use crate::status::{Code, Status};
use crate::wire::{self, Metadata};

/// Where a call's reply goes: encodes the response frame into the connection's outbox.
pub(crate) struct Replier {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) call_id: u64,
    pub(crate) seq: u64,
    pub(crate) codec: Codec,
}

impl Replier {
    /// Encodes a successful reply. Fails (and writes nothing) if the reply does not
    /// encode or is larger than the client accepts.
    pub(crate) fn send_ok<R: serde::Serialize>(&self, reply: &R) -> Result<(), Status> {
        let max = self.conn.peer_max_frame;
        if self.conn.finish_call(self.call_id, Some(self.seq)).is_none() {
            return Ok(()); // already answered (drain timeout) or cancelled: send nothing
        }
        let mut out = self.conn.outbox.lock();
        let head = wire::encode_response_head(
            &mut out,
            self.call_id,
            0,
            self.codec.id(),
            Code::Ok,
            "",
            &Metadata::new(),
        );
        // A panicking Serialize impl must not leave half a frame in the shared queue.
        let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| self.codec.encode(reply, &mut out)));
        match encoded {
            Ok(Ok(())) => head
                .finish(&mut out, max)
                .map_err(|e| Status::resource_exhausted(format!("the reply is too large to send: {e}"))),
            Ok(Err(e)) => {
                head.abandon(&mut out);
                Err(Status::internal(format!("cannot encode the reply: {e}")))
            }
            Err(_) => {
                head.abandon(&mut out);
                Err(Status::internal("the reply's Serialize implementation panicked"))
            }
        }
    }
}

/// Releases the call's slot when the task ends, however it ends (a no-op if the
/// reply or a CANCEL already released it).
struct SlotGuard {
    conn: Arc<ConnShared>,
    call_id: u64,
    seq: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let _ = self.conn.finish_call(self.call_id, Some(self.seq));
    }
}

/// Everything a call task needs.
pub(crate) struct CallStart {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) route: Route,
    pub(crate) call_id: u64,
    pub(crate) seq: u64,
    pub(crate) codec: Codec,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) idempotent: bool,
    pub(crate) payload: bytes::Bytes,
    pub(crate) cancel: CancellationToken,
}

enum Outcome {
    Done(Result<(), Status>),
    Panicked(String),
    TimedOut,
    Cancelled,
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

/// Runs one call to completion (or until cancelled) and answers it.
pub(crate) async fn run_call(start: CallStart) {
    let CallStart { conn, route, call_id, seq, codec, deadline, metadata, idempotent, payload, cancel } =
        start;
    let _slot = SlotGuard { conn: conn.clone(), call_id, seq };
    let ctx = Context {
        call_id,
        method: route.name.clone(),
        peer: conn.peer,
        deadline,
        metadata,
        cancel: cancel.clone(),
        idempotent,
    };
    let replier = Replier { conn: conn.clone(), call_id, seq, codec };
    let handler = route.handler;
    let scope = ctx.clone();
    let work =
        AssertUnwindSafe(async move { handler.call(ctx, IncomingCall { codec, payload, replier }).await })
            .catch_unwind();
    let work = with_context(scope, work);
    // The handler future lives inside this select: whichever branch wins, it is dropped
    // when the select returns, so a cancelled or timed-out handler stops running.
    let outcome = tokio::select! {
        biased;
        _ = cancel.cancelled() => Outcome::Cancelled,
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
        Outcome::Panicked(msg) => {
            tracing::error!(method = %route.name, call_id, "handler panicked: {msg}");
            Status::internal(format!("the handler of {} panicked: {msg}", route.name))
        }
        Outcome::TimedOut => {
            cancel.cancel();
            Status::deadline_exceeded(format!("{} did not finish within the caller's deadline", route.name))
        }
    };
    // Only the one who releases the slot answers: a call never gets two responses.
    if conn.finish_call(call_id, Some(seq)).is_some() {
        conn.send_error(call_id, codec.id(), &status);
    }
}
