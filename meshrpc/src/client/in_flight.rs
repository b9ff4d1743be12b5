//! The client's in-flight table: a slot per call holding its waker and deadline, then
//! its result.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use crate::status::Status;
use crate::wire::Response;

/// One call's slot.
enum Slot {
    Waiting { waker: Option<Waker>, deadline: Option<Instant> },
    Done(Result<Response, Status>),
}

/// Whether the connection takes new calls.
#[derive(Debug, Clone)]
pub(crate) enum State {
    Open,
    /// The server sent GOAWAY: calls up to `last_call_id` will still be answered.
    GoingAway {
        status: Status,
    },
    /// The connection is gone; every call fails with this status.
    Closed(Status),
}

/// Hashes the client's own call ids (sequential, never chosen by a peer) with one
/// multiplication: SipHash was ~2 % of the client's CPU at add c=256 (perf).
#[derive(Default)]
pub(crate) struct CallIdHasher(u64);

impl Hasher for CallIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: spreads sequential ids over the top bits hashbrown uses.
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Calls in flight on one connection.
pub(crate) struct CallTable {
    slots: HashMap<u64, Slot, BuildHasherDefault<CallIdHasher>>,
    state: State,
    /// When the connection's deadline sweeper will next look at the table (`None`: it
    /// sleeps until told). Never later than the earliest deadline of a waiting call.
    next_sweep: Option<Instant>,
}

/// The message of a call the sweeper failed; the call path replaces it with one that
/// names the method.
pub(crate) const SWEPT: &str = "the call did not complete within its deadline";

/// What [`CallTable::insert`] asks of the caller once the lock is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// The sweeper already wakes in time for this call's deadline.
    Unchanged,
    /// This call's deadline is the earliest: wake the sweeper so it re-arms.
    Rearm,
}

impl CallTable {
    pub(crate) fn new() -> CallTable {
        CallTable { slots: HashMap::default(), state: State::Open, next_sweep: None }
    }

    /// Registers a call, unless the connection no longer takes calls.
    pub(crate) fn insert(&mut self, call_id: u64, deadline: Option<Instant>) -> Result<Sweep, Status> {
        match &self.state {
            State::Open => {
                self.slots.insert(call_id, Slot::Waiting { waker: None, deadline });
                let sweep = match (deadline, self.next_sweep) {
                    (Some(d), next) if next.is_none_or(|n| d < n) => {
                        self.next_sweep = Some(d);
                        Sweep::Rearm
                    }
                    _ => Sweep::Unchanged,
                };
                Ok(sweep)
            }
            // Never sent: whatever ended the connection, this call was not processed.
            State::GoingAway { status } | State::Closed(status) => {
                Err(status.clone().with_not_processed(true))
            }
        }
    }

    /// Removes a call (it was cancelled or its future dropped); true if it was waiting.
    pub(crate) fn remove(&mut self, call_id: u64) -> bool {
        matches!(self.slots.remove(&call_id), Some(Slot::Waiting { .. }))
    }

    /// Stores a call's result; returns the waker to wake once the lock is released.
    pub(crate) fn complete(&mut self, call_id: u64, result: Result<Response, Status>) -> Option<Waker> {
        let slot = self.slots.get_mut(&call_id)?;
        match std::mem::replace(slot, Slot::Done(result)) {
            Slot::Waiting { waker, .. } => waker,
            done @ Slot::Done(_) => {
                *slot = done; // a duplicate answer: keep the first
                None
            }
        }
    }

    /// Polls a call's slot: its result once there, else registers the waker.
    pub(crate) fn poll(&mut self, call_id: u64, cx: &mut Context<'_>) -> Poll<Result<Response, Status>> {
        match self.slots.get_mut(&call_id) {
            Some(Slot::Waiting { waker: w, .. }) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(Slot::Done(_)) => match self.slots.remove(&call_id) {
                Some(Slot::Done(r)) => Poll::Ready(r),
                _ => Poll::Ready(Err(Status::internal("call slot changed while polled"))),
            },
            None => Poll::Ready(Err(match &self.state {
                State::Closed(s) => s.clone(),
                _ => Status::internal(format!("call {call_id} is not in flight")),
            })),
        }
    }

    /// The server sent GOAWAY: refuse new calls; fail waiting calls above
    /// `last_call_id` as not processed. Returns their wakers.
    pub(crate) fn go_away(&mut self, last_call_id: u64, status: Status, wakers: &mut Vec<Waker>) {
        if let State::Open = self.state {
            self.state = State::GoingAway { status: status.clone() };
        }
        for (id, slot) in self.slots.iter_mut() {
            if *id > last_call_id
                && let Slot::Waiting { waker: w, .. } = slot
            {
                wakers.extend(w.take());
                *slot = Slot::Done(Err(status.clone()));
            }
        }
    }

    /// The connection is gone: fail every waiting call with `status`.
    pub(crate) fn close(&mut self, status: Status, wakers: &mut Vec<Waker>) {
        if !matches!(self.state, State::Closed(_)) {
            self.state = State::Closed(status.clone());
        }
        for slot in self.slots.values_mut() {
            if let Slot::Waiting { waker: w, .. } = slot {
                wakers.extend(w.take());
                *slot = Slot::Done(Err(status.clone()));
            }
        }
    }

    /// When the sweeper should next look (the earliest deadline it was told of).
    pub(crate) fn next_sweep(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Fails every waiting call whose deadline is at or before `now` with `status`
    /// (pushing its id to `expired` and its waker to `wakers`), and re-arms the sweep
    /// for the earliest deadline left. One pass over the table: with equal timeouts this
    /// runs about once per timeout, not once per call.
    pub(crate) fn sweep(&mut self, now: Instant, expired: &mut Vec<u64>, wakers: &mut Vec<Waker>) {
        let mut next: Option<Instant> = None;
        for (id, slot) in self.slots.iter_mut() {
            let Slot::Waiting { waker, deadline: Some(d) } = slot else { continue };
            if *d <= now {
                expired.push(*id);
                wakers.extend(waker.take());
                *slot = Slot::Done(Err(Status::deadline_exceeded(SWEPT)));
            } else {
                next = Some(next.map_or(*d, |n| n.min(*d)));
            }
        }
        self.next_sweep = next;
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}
