//! The call path: wait for a concurrency permit, register the call, encode the request
//! into the write queue, then wait for the reader to fill the call's slot.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::TryAcquireError;
use tokio::time::Instant;

use super::connection::Connection;
use super::in_flight::{SWEPT, Sweep};
use super::options::CallOptions;
use crate::server::current_deadline;
use crate::status::{Code, Status};
use crate::wire::{self, Response, flags};

/// Removes the call's slot if its future is dropped before the answer arrived, and
/// tells the server (CANCEL) so it drops the handler.
struct InFlightGuard<'a> {
    conn: &'a Connection,
    call_id: u64,
    done: bool,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let was_waiting = self.conn.table().remove(self.call_id);
        if was_waiting && !self.conn.outbox.is_dead() {
            wire::encode_cancel(&mut self.conn.outbox.lock(), self.call_id);
        }
    }
}

/// A call that ran out of time on the client's side.
pub(crate) fn deadline_exceeded(method: &str) -> Status {
    Status::deadline_exceeded(format!("{method} did not complete within its deadline"))
}

/// Runs `fut` until `deadline` (`None` once it passed). Only the slow paths (waiting for
/// a permit or a connection) use it: a call's wait for its answer is bounded by the
/// connection's deadline sweeper instead of a timer of its own.
pub(crate) async fn within<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// The effective deadline: the call's own timeout, capped by the deadline of the
/// server call we are running inside (so nested calls inherit what is left). Also
/// returns the clock reading it used, if it read the clock, so the call path can tell
/// the server its budget without reading it again (~1.5 % of client CPU at c=256).
pub(crate) fn effective_deadline(timeout: Option<Duration>) -> (Option<Instant>, Option<Instant>) {
    let now = timeout.map(|_| Instant::now());
    let own = timeout.zip(now).map(|(t, now)| now + t);
    let deadline = match (own, current_deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (deadline, now)
}

impl Connection {
    /// Sends one call on this connection and waits for its response frame (an error
    /// status is `Err`). `encode` appends the payload; `deadline` is told to the server
    /// as the remaining budget (the caller enforces it), counted from `now` if the caller
    /// just read the clock.
    pub(crate) async fn call(
        &self,
        method: &str,
        opts: &CallOptions,
        codec: u8,
        deadline: Option<Instant>,
        mut now: Option<Instant>,
        encode: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    ) -> Result<Response, Status> {
        if method.len() > usize::from(u16::MAX) {
            return Err(Status::invalid_argument("the method name is longer than 65,535 bytes"));
        }
        // Calls above the server's advertised limit wait here, within their deadline.
        let _permit = match self.limit.try_acquire() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(self.closed_status()),
            Err(TryAcquireError::NoPermits) => match within(deadline, self.limit.acquire()).await {
                Some(Ok(p)) => {
                    now = None; // it waited: `now` is stale
                    p
                }
                Some(Err(_)) => return Err(self.closed_status()),
                None => return Err(deadline_exceeded(method)),
            },
        };
        // Backpressure: while the server reads nothing, calls wait (within their
        // deadline) instead of queueing requests without bound.
        if self.outbox.unsent() >= crate::transport::HIGH_WATER {
            match within(deadline, self.outbox.wait_drained()).await {
                Some(()) if self.outbox.is_dead() => return Err(self.closed_status()),
                Some(()) => now = None, // it waited: `now` is stale
                None => return Err(deadline_exceeded(method)),
            }
        }
        let call_id;
        let sweep;
        {
            let remaining = deadline.map(|d| d.saturating_duration_since(now.unwrap_or_else(Instant::now)));
            let flag_bits = if opts.idempotent { flags::IDEMPOTENT } else { 0 };
            let mut out = self.outbox.lock();
            // The id is taken and the slot registered under the write lock, so requests go
            // out in increasing id order (GOAWAY's `last_call_id` relies on it) and the
            // slot exists before the writer can send the request. Lock order: outbox, then
            // table; nothing takes them the other way round.
            call_id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sweep = self.table().insert(call_id, deadline)?;
            let head = wire::encode_request_head(
                &mut out,
                call_id,
                flag_bits,
                codec,
                remaining,
                method.as_bytes(),
                &opts.metadata,
            );
            let start = head.start();
            // A panicking Serialize must not leave half a frame in the shared queue.
            let encoded = match std::panic::catch_unwind(AssertUnwindSafe(|| encode(&mut out))) {
                Ok(r) => r,
                Err(panic) => {
                    out.truncate(start);
                    drop(out);
                    self.table().remove(call_id);
                    std::panic::resume_unwind(panic);
                }
            };
            let encoded = encoded.and_then(|()| {
                head.finish(&mut out, self.server_max_frame).map_err(|e| {
                    Status::resource_exhausted(format!("cannot send {method}: the request is too large: {e}"))
                })
            });
            if let Err(status) = encoded {
                // `finish` removed an oversized frame itself; a failed encode leaves a partial one.
                out.truncate(start);
                drop(out);
                self.table().remove(call_id);
                return Err(status.with_not_processed(true));
            }
        }
        if sweep == Sweep::Rearm {
            self.sweep_rearm.notify_one();
        }
        let mut guard = InFlightGuard { conn: self, call_id, done: false };
        let result = poll_fn(|cx| self.table().poll(call_id, cx)).await;
        guard.done = true;
        match result {
            // The connection's sweeper failed it (and sent CANCEL): say which call.
            Err(s) if s.code() == Code::DeadlineExceeded && s.message() == SWEPT => {
                Err(deadline_exceeded(method))
            }
            other => other,
        }
    }

    /// Why a call could not even be sent (always `not_processed`).
    fn closed_status(&self) -> Status {
        let status = match self.table().state() {
            super::in_flight::State::Closed(s) | super::in_flight::State::GoingAway { status: s } => {
                s.clone()
            }
            super::in_flight::State::Open => {
                Status::unavailable(format!("connection to {} is closed", self.peer))
            }
        };
        status.with_not_processed(true)
    }
}
