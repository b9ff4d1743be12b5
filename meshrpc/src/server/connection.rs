//! One server connection: handshake, then a read loop that dispatches calls, answers
//! pings and cancels, enforces limits, and ends with GOAWAY and a bounded drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use super::builder::ServerShared;
use super::call::{CallStart, CallState, start_call};
use super::context::CallFacts;
use super::handshake::{self, frame_name};
use super::shed::Sheddable;
use crate::codec::{self, Codec};
use crate::status::{Code, Status};
use crate::transport::{FrameReader, Outbox, ReadError, run_writer};
use crate::wire::{self, Frame, GoAway, Metadata, Request, Settings, flags};

/// Held while a claimed call's response is being queued; dropping it marks the call
/// answered (and wakes the reader when it was the last one).
pub(crate) struct Answering<'a> {
    conn: &'a ConnShared,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if self.conn.unanswered.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.idle.notify_one();
        }
    }
}

/// State shared by a connection's reader and its call tasks.
pub(crate) struct ConnShared {
    pub(crate) outbox: Outbox,
    pub(crate) peer: SocketAddr,
    /// The largest frame the client accepts (from its SETTINGS).
    pub(crate) peer_max_frame: u32,
    /// Calls whose handlers run in their own task (the ones a CANCEL can reach). Calls
    /// that finish on their first poll are never here.
    calls: Mutex<HashMap<u64, Arc<CallFacts>>>,
    /// How many calls `calls` holds, readable without the lock (usually 0: then the
    /// duplicate-id check on every request needs no lock at all).
    tracked: AtomicUsize,
    in_flight: AtomicUsize,
    /// Admitted calls whose response is not queued yet (see [`ConnShared::release`]).
    unanswered: AtomicUsize,
    /// Notified when the last unanswered call's response is queued.
    idle: Notify,
    pub(crate) server: Arc<ServerShared>,
    /// The highest call id received (the reader stores it; a shed GOAWAY reads it).
    last_call_id: AtomicU64,
}

impl ConnShared {
    /// Claims a call's answer: `Some` for the first claim only, and whoever gets it is
    /// the one that answers (reply, error, drain cut-off), so a call never gets two
    /// answers; a CANCEL claims without answering.
    ///
    /// The concurrency slot is freed at once, *before* the response is queued, so a
    /// client that sends its next call as soon as it has an answer never finds the
    /// limit still taken. The call counts as unanswered (which keeps a draining or idle
    /// connection open) until the returned guard drops, after the response is queued.
    pub(crate) fn release(&self, state: &CallState) -> Option<Answering<'_>> {
        if !state.claim_answer() {
            return None;
        }
        self.server.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        Some(Answering { conn: self })
    }

    /// Records a call's end (after its answer was claimed): metrics and span status.
    pub(crate) fn finished(&self, call: &CallFacts, code: Code) {
        if crate::metrics::ENABLED {
            self.server.metrics.method(call.route).finish(code, call.started.elapsed());
            crate::trace::record_code(&call.span, code);
        }
    }

    /// Registers a call that runs in its own task, so a CANCEL can reach it.
    pub(crate) fn track(&self, call_id: u64, call: Arc<CallFacts>) {
        if self.calls.lock().unwrap_or_else(|e| e.into_inner()).insert(call_id, call).is_none() {
            self.tracked.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Forgets a finished task's call (unless the id now belongs to another call).
    pub(crate) fn untrack(&self, call: &Arc<CallFacts>) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.get(&call.call_id).is_some_and(|c| Arc::ptr_eq(c, call)) {
            calls.remove(&call.call_id);
            self.tracked.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Takes a pending call out of the table (for CANCEL and the drain cut-off).
    fn take_tracked(&self, call_id: u64) -> Option<Arc<CallFacts>> {
        let taken = self.calls.lock().unwrap_or_else(|e| e.into_inner()).remove(&call_id);
        if taken.is_some() {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
        }
        taken
    }

    /// Whether `call_id` is already in flight (only pending calls can be).
    fn is_tracked(&self, call_id: u64) -> bool {
        self.tracked.load(Ordering::Acquire) > 0
            && self
                .calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&call_id)
                .is_some_and(|c| !c.state.is_answered())
    }

    /// Answers `call_id` with an error status (flagged `not_processed` if the status is).
    pub(crate) fn send_error(&self, call_id: u64, codec: u8, status: &Status) {
        let f = if status.not_processed() { flags::NOT_PROCESSED } else { 0 };
        let mut out = self.outbox.lock();
        let head = wire::encode_response_head(
            &mut out,
            call_id,
            f,
            codec,
            status.code(),
            status.message(),
            &Metadata::new(),
        );
        // An error frame is small: the message is capped at 64 KiB and the peer's
        // limit is at least 16 KiB, so only a pathological message can fail here.
        if head.finish(&mut out, self.peer_max_frame).is_err() {
            let head =
                wire::encode_response_head(&mut out, call_id, f, codec, status.code(), "", &Metadata::new());
            let _ = head.finish(&mut out, self.peer_max_frame);
        }
    }

    fn send_goaway(&self, last_call_id: u64, code: Code, message: String) {
        wire::encode_goaway(&mut self.outbox.lock(), &GoAway { last_call_id, code, message });
    }

    /// Gives up every call still running: each is claimed (its slots freed at once) and
    /// cancelled, which drops its handler. With `answer`, it is answered that status
    /// (the drain cut-off); without, it is counted CANCELLED and answered nothing (the
    /// peer is gone, or the connection was dropped).
    fn give_up_calls(&self, answer: Option<&Status>) {
        let ids: Vec<u64> = self.calls.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for call in ids.into_iter().filter_map(|id| self.take_tracked(id)) {
            // Claim the answer first: once cancelled, the call's own task would release
            // the slot without answering.
            let ours = self.release(&call.state);
            call.state.cancel();
            if let Some(_answering) = ours {
                match answer {
                    Some(status) => {
                        self.send_error(call.call_id, call.state.codec, status);
                        self.finished(&call, status.code());
                    }
                    None => self.finished(&call, Code::Cancelled),
                }
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admitted calls whose response is not queued yet (drain and idle wait for 0).
    fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::Acquire)
    }
}

impl Sheddable for ConnShared {
    fn unsent(&self) -> usize {
        self.outbox.unsent()
    }

    fn is_gone(&self) -> bool {
        self.outbox.is_dead()
    }

    /// Frees the queued replies, tries a GOAWAY `RESOURCE_EXHAUSTED` without waiting,
    /// and closes: the reader sees the outbox die and the connection task ends.
    fn shed(&self, message: String) {
        let mut words = bytes::BytesMut::new();
        let last_call_id = self.last_call_id.load(Ordering::Relaxed);
        wire::encode_goaway(&mut words, &GoAway { last_call_id, code: Code::ResourceExhausted, message });
        self.outbox.abandon(Some(words.freeze()));
    }
}

/// Serves one accepted TCP connection to the end.
pub(crate) async fn serve_connection(server: Arc<ServerShared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let cfg = &server.config;
    let ours = Settings {
        protocol_version: Some(u32::from(wire::VERSION)),
        max_frame_size: Some(cfg.max_frame_size),
        max_concurrent_calls: Some(cfg.max_concurrent_calls_per_connection),
        idle_timeout_ms: cfg.idle_timeout.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
    };
    let hs = handshake::accept(rd, &mut wr, &ours, cfg.max_frame_size);
    let (reader, theirs) = match tokio::time::timeout(cfg.handshake_timeout, hs).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out after {:?}", cfg.handshake_timeout);
            return;
        }
    };
    server.metrics.connection_opened();
    let _counted = ConnectionCounted(&server.metrics);
    let conn = Arc::new(ConnShared {
        outbox: Outbox::with_budget(server.queue.clone()),
        peer,
        peer_max_frame: theirs
            .max_frame_size
            .unwrap_or(wire::DEFAULT_MAX_FRAME_SIZE)
            .max(wire::MIN_MAX_FRAME_SIZE),
        calls: Mutex::new(HashMap::new()),
        tracked: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        unanswered: AtomicUsize::new(0),
        idle: Notify::new(),
        server: server.clone(),
        last_call_id: AtomicU64::new(0),
    });
    let _listed = server.connections.add(&conn);
    let mut writer = {
        let conn = conn.clone();
        tokio::spawn(async move {
            // However the writer ends (even by a panic), the reader (or the drain) is
            // woken: it may be waiting for calls while the peer is gone.
            let _wake = WakeReader(&conn);
            run_writer(&conn.outbox, wr, &conn.server.metrics.sent).await
        })
    };
    // However this task ends, the writer ends with it (it may be blocked on a peer that
    // reads nothing), and the calls still running are given up.
    let _ending = Ending { conn: &conn, writer: writer.abort_handle() };
    let mut lp = ReadLoop {
        conn: conn.clone(),
        last_accepted: 0,
        draining: false,
        drain_deadline: None,
        idle_since: None,
        batch_read_at: None,
        eof: false,
    };
    let mut reader = reader;
    let graceful = async {
        if let End::PeerGone = lp.run(&mut reader).await {
            // A dropped connection's writer ends at once; give it the moment it needs
            // to try its GOAWAY before the connection's end aborts it.
            let _ = tokio::time::timeout(WRITER_END, &mut writer).await;
            return;
        }
        lp.drain().await;
        if conn.outbox.is_dead() {
            return; // the peer vanished while its calls drained
        }
        conn.outbox.close();
        // Flush what is queued (the writer then half-closes: FIN); a client that reads
        // nothing cannot hold us forever.
        if tokio::time::timeout(server.config.write_stall_timeout, &mut writer).await.is_err() {
            tracing::debug!(%peer, "dropping the connection: queued replies were not read in time");
            return;
        }
        // Linger: read and discard until the client hangs up (it does once it has its
        // answers), so that closing with its late requests unread never turns into a
        // reset, which can destroy the GOAWAY and replies still on their way to it.
        let linger = LINGER.min(server.config.drain_timeout);
        let _ = tokio::time::timeout(linger, reader.discard_until_eof()).await;
    };
    tokio::select! {
        _ = graceful => {}
        _ = server.kill.cancelled() => {}
    }
}

/// Longest wait for a dead outbox's writer to finish (it only tries one last write).
const WRITER_END: std::time::Duration = std::time::Duration::from_millis(100);

/// Wakes a connection's reader when dropped (the writer's end).
struct WakeReader<'a>(&'a ConnShared);

impl Drop for WakeReader<'_> {
    fn drop(&mut self) {
        self.0.idle.notify_one();
    }
}

/// Ends a connection's other parts when its task ends, however it ends: stops the
/// writer (freeing its queued bytes) and gives up the calls still running.
struct Ending<'a> {
    conn: &'a ConnShared,
    writer: tokio::task::AbortHandle,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.writer.abort();
        self.conn.outbox.abandon(None);
        self.conn.give_up_calls(None);
    }
}

/// Counts a connection as closed when dropped, however its task ends.
struct ConnectionCounted<'a>(&'a crate::metrics::ServerMetrics);

impl Drop for ConnectionCounted<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// While calls drain after the client's EOF: how often a PING probes whether it is gone.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(400);

/// Longest wait, after the last reply is flushed, for the client to close its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

struct ReadLoop {
    conn: Arc<ConnShared>,
    /// The highest call id received: the GOAWAY's `last_call_id`.
    last_accepted: u64,
    /// GOAWAY sent: refuse new calls, finish the ones in flight, then close.
    draining: bool,
    /// When calls still in flight are cut off once draining.
    drain_deadline: Option<Instant>,
    /// Since when no call has been in flight (for the idle timeout).
    idle_since: Option<Instant>,
    /// When the frames being handled were read: every request of one read gets its
    /// deadline from one clock reading (clock reads were ~3 % of server CPU at c=256).
    batch_read_at: Option<Instant>,
    /// The client closed its sending side (EOF): it may have closed entirely.
    eof: bool,
}

/// Why the read loop stopped taking frames.
enum Stop {
    Continue,
    Stop,
}

/// How the read loop ended.
enum End {
    /// No more requests will be read; the peer may still read what we send (drain,
    /// flush, close).
    Finished,
    /// The peer cannot be written to any more (the write failed: it reset or closed
    /// the connection, or the server dropped it): nothing is flushed, nothing waited for.
    PeerGone,
}

impl ReadLoop {
    async fn run<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>) -> End {
        let conn = self.conn.clone();
        let server = conn.server.clone();
        let cfg = &server.config;
        // Frames that came in with the client's SETTINGS are handled first.
        if let Stop::Stop = self.handle_buffered(reader) {
            return End::Finished;
        }
        loop {
            // Checked on every turn: each branch below that can finish at once (a dead
            // outbox drains "at once") must not bring us back here to spin.
            if conn.outbox.is_dead() {
                tracing::debug!(peer = %conn.peer, "connection ended: its replies can no longer be sent");
                return End::PeerGone;
            }
            let in_flight = conn.unanswered();
            if self.draining && in_flight == 0 {
                return End::Finished;
            }
            if in_flight == 0 {
                self.idle_since.get_or_insert_with(Instant::now);
            } else {
                self.idle_since = None;
            }
            if conn.outbox.unsent() >= crate::transport::HIGH_WATER {
                // Backpressure: the client is not reading its replies; stop reading its
                // requests until the queue drains, and give up on a peer stalled too long.
                // `wait_drained` also returns when the outbox dies (checked above).
                let progress = conn.outbox.written();
                tokio::select! {
                    _ = conn.outbox.wait_drained() => {}
                    _ = server.drain.cancelled(), if !self.draining => {
                        self.start_draining(Code::Ok, "the server is shutting down".to_string());
                    }
                    _ = sleep_until(self.drain_deadline.unwrap_or_else(Instant::now)), if self.drain_deadline.is_some() => return End::Finished,
                    _ = tokio::time::sleep(cfg.write_stall_timeout) => {
                        // A client reading slowly (a large reply on a slow link) is not stalled.
                        if conn.outbox.written() == progress {
                            tracing::warn!(peer = %conn.peer, "closing connection: client read nothing for {:?}", cfg.write_stall_timeout);
                            return End::Finished;
                        }
                    }
                }
                continue;
            }
            let idle_at = match (cfg.idle_timeout, self.idle_since) {
                (Some(t), Some(s)) if !self.draining => Some(s + t),
                _ => None,
            };
            tokio::select! {
                biased;
                _ = server.drain.cancelled(), if !self.draining => {
                    self.start_draining(Code::Ok, "the server is shutting down".to_string());
                    continue;
                }
                r = reader.fill() => match r {
                    Ok(()) => {}
                    Err(ReadError::Wire(e)) => {
                        self.protocol_error(e.to_status());
                        return End::Finished;
                    }
                    Err(e @ ReadError::Io(_)) => {
                        tracing::debug!(peer = %conn.peer, "connection lost: {e}");
                        return End::PeerGone;
                    }
                    Err(e) => {
                        // End of requests (a half-close, or a close we learn of when we
                        // write): calls in flight finish, unless the writer finds the
                        // peer gone (the drain probes it).
                        tracing::debug!(peer = %conn.peer, "connection ended: {e}");
                        self.eof = true;
                        return End::Finished;
                    }
                },
                // Also notified when the writer ends (the peer may be gone: checked above).
                _ = conn.idle.notified() => continue,
                _ = sleep_until(self.drain_deadline.unwrap_or_else(Instant::now)), if self.drain_deadline.is_some() => return End::Finished,
                _ = sleep_until(idle_at.unwrap_or_else(Instant::now)), if idle_at.is_some() => {
                    let t = cfg.idle_timeout.unwrap_or_default();
                    conn.send_goaway(self.last_accepted, Code::Ok, format!("closing the connection after {t:?} with no calls"));
                    return End::Finished;
                }
            }
            if crate::metrics::ENABLED {
                server.metrics.received.fetch_add(reader.take_bytes_read(), Ordering::Relaxed);
            }
            if let Stop::Stop = self.handle_buffered(reader) {
                return End::Finished;
            }
        }
    }

    fn start_draining(&mut self, code: Code, message: String) {
        self.draining = true;
        // Counted from the first GOAWAY; a later one (a protocol error while draining)
        // does not extend it.
        self.drain_deadline.get_or_insert(Instant::now() + self.conn.server.config.drain_timeout);
        self.conn.send_goaway(self.last_accepted, code, message);
    }

    fn protocol_error(&mut self, status: Status) {
        tracing::debug!(peer = %self.conn.peer, "protocol error: {status}");
        self.start_draining(status.code(), status.message().to_string());
    }

    fn handle_buffered<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>) -> Stop {
        self.batch_read_at = None;
        loop {
            match reader.try_next() {
                Ok(Some(frame)) => {
                    if let Stop::Stop = self.handle(frame) {
                        return Stop::Stop;
                    }
                }
                Ok(None) => return Stop::Continue,
                Err(e) => {
                    self.protocol_error(e.to_status());
                    return Stop::Stop;
                }
            }
        }
    }

    fn handle(&mut self, frame: Frame) -> Stop {
        match frame {
            Frame::Request(req) => return self.request(req),
            Frame::Cancel { call_id } => {
                if let Some(call) = self.conn.take_tracked(call_id) {
                    // Claimed without an answer: the caller gave up on it.
                    if let Some(_answering) = self.conn.release(&call.state) {
                        self.conn.finished(&call, Code::Cancelled);
                    }
                    call.state.cancel();
                }
            }
            Frame::Ping(data) => wire::encode_pong(&mut self.conn.outbox.lock(), data),
            Frame::Pong(_) | Frame::Settings(_) | Frame::GoAway(_) => {}
            other @ Frame::Response(_) => {
                let msg = format!("protocol error: a client may not send {} frames", frame_name(&other));
                self.protocol_error(Status::invalid_argument(msg));
                return Stop::Stop;
            }
        }
        Stop::Continue
    }

    fn request(&mut self, req: Request) -> Stop {
        let conn = &self.conn;
        let server = &conn.server;
        let call_id = req.call_id;
        self.last_accepted = self.last_accepted.max(call_id);
        conn.last_call_id.store(self.last_accepted, Ordering::Relaxed);
        if conn.is_tracked(call_id) {
            // Answering it would also answer the original call: a connection error.
            self.protocol_error(Status::invalid_argument(format!(
                "protocol error: call id {call_id} is already in flight on this connection"
            )));
            return Stop::Stop;
        }
        let route = server.router.get(&req.method);
        // Refusals are counted under the method (or `<unknown>`), outside the histogram.
        let refuse = |status: Status| {
            if crate::metrics::ENABLED {
                let stats =
                    route.map_or_else(|| server.metrics.unknown(), |r| server.metrics.method(r.index));
                stats.refuse(status.code());
            }
            conn.send_error(call_id, req.codec, &status.with_not_processed(true));
        };
        let Some(codec) = Codec::from_id(req.codec) else {
            refuse(Status::unimplemented(format!(
                "codec {} is not supported by this server; use msgpack (0x01), json (0x02) or binary (0x03)",
                codec::describe_id(req.codec)
            )));
            return Stop::Continue;
        };
        let Some(route) = route else {
            refuse(server.router.not_found(req.method_str()));
            return Stop::Continue;
        };
        if route.exempt {
            server.in_flight.fetch_add(1, Ordering::AcqRel);
        } else if !self.admit(&refuse) {
            return Stop::Continue; // refused; the connection itself goes on
        }
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.unanswered.fetch_add(1, Ordering::AcqRel);
        self.idle_since = None;
        let read_at = *self.batch_read_at.get_or_insert_with(Instant::now);
        start_call(CallStart {
            conn: conn.clone(),
            route,
            call_id,
            codec,
            started: read_at,
            deadline: req.timeout.map(|t| read_at + t),
            metadata: req.metadata,
            idempotent: req.flags & flags::IDEMPOTENT != 0,
            payload: req.payload,
        });
        Stop::Continue
    }

    /// Draining and limit checks for a call (built-in exempt methods skip them): false
    /// when the call was refused (and answered). On success the server-wide in-flight
    /// count already includes the call.
    fn admit(&self, refuse: &dyn Fn(Status)) -> bool {
        let conn = &self.conn;
        let server = &conn.server;
        if self.draining {
            refuse(Status::unavailable("the server is shutting down; send this call to another instance"));
            return false;
        }
        let per_conn = server.config.max_concurrent_calls_per_connection as usize;
        if conn.in_flight() >= per_conn {
            refuse(Status::resource_exhausted(format!(
                "this connection already has {per_conn} calls in flight, the limit the server advertised"
            )));
            return false;
        }
        let max = server.config.max_concurrent_calls;
        if server.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            server.in_flight.fetch_sub(1, Ordering::AcqRel);
            refuse(Status::resource_exhausted(format!(
                "the server is at its limit of {max} calls in flight"
            )));
            return false;
        }
        true
    }

    /// After the read loop: let calls in flight finish within the drain timeout, then
    /// cancel the rest (answering them UNAVAILABLE) so the connection can close.
    async fn drain(&mut self) {
        let conn = &self.conn;
        let deadline =
            self.drain_deadline.unwrap_or_else(|| Instant::now() + conn.server.config.drain_timeout);
        while conn.unanswered() > 0 {
            let notified = conn.idle.notified();
            if conn.unanswered() == 0 {
                break;
            }
            if conn.outbox.is_dead() {
                return; // nobody to answer: the connection's end gives the calls up
            }
            // After EOF the client may be gone entirely, which only a write can tell: a
            // PING every PROBE_EVERY makes the second write after its reset fail, so
            // calls nobody can receive are given up within about a second, not when
            // they end. (`idle` is also notified when the writer ends: checked above.)
            let wake = if self.eof { deadline.min(Instant::now() + PROBE_EVERY) } else { deadline };
            if tokio::time::timeout_at(wake, notified).await.is_err() {
                if wake < deadline {
                    wire::encode_ping(&mut conn.outbox.lock(), [0; 8]);
                    continue;
                }
                conn.give_up_calls(Some(&Status::unavailable(
                    "the server stopped this call: it did not finish within the drain timeout",
                )));
                break;
            }
        }
    }
}
