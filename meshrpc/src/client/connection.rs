//! One client connection: handshake, the reader task, keepalive, and closing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::ClientConfig;
use super::in_flight::{CallTable, State};
use crate::status::{Code, Status};
use crate::transport::{FrameReader, Outbox, ReadError, run_writer};
use crate::wire::{self, Frame, Settings};

/// The most calls a client queues on one connection when the server advertises more.
const MAX_CLIENT_CONCURRENCY: u32 = 1 << 20;

/// A live connection to one server.
pub(crate) struct Connection {
    pub(crate) outbox: Outbox,
    table: Mutex<CallTable>,
    pub(crate) next_id: AtomicU64,
    /// Permits = the server's advertised concurrent-call limit; calls above it wait here.
    pub(crate) limit: Semaphore,
    pub(crate) peer: SocketAddr,
    /// The largest frame the server accepts.
    pub(crate) server_max_frame: u32,
    /// The server's advertised concurrent-call limit.
    pub(crate) server_max_calls: u32,
    /// When bytes last arrived from the server (any bytes, not only whole frames).
    heard: Arc<Heard>,
    /// False once the call table stops taking calls (GOAWAY or closed): lets the pool
    /// pick a connection without the table's lock, which the reader holds per batch.
    accepting: AtomicBool,
    /// Wakes the deadline sweeper when a call's deadline is earlier than its alarm.
    pub(crate) sweep_rearm: Notify,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).finish_non_exhaustive()
    }
}

fn unavailable(msg: String) -> Status {
    Status::unavailable(msg)
}

impl Connection {
    /// Dials `addr`, performs the handshake and starts the reader, writer and keepalive tasks.
    pub(crate) async fn connect(addr: SocketAddr, cfg: &ClientConfig) -> Result<Arc<Connection>, Status> {
        let cannot =
            |e: String| unavailable(format!("cannot connect to {addr}: {e}")).with_not_processed(true);
        let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(cannot(e.to_string())),
            Err(_) => return Err(cannot(format!("no answer within {:?}", cfg.connect_timeout))),
        };
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let heard = Arc::new(Heard { started: Instant::now(), last_us: AtomicU64::new(0) });
        let rd = Hearing { inner: rd, heard: heard.clone() };
        let handshake = async {
            let mut hello = BytesMut::new();
            hello.extend_from_slice(&wire::preface(wire::VERSION));
            wire::encode_settings(
                &mut hello,
                &Settings {
                    protocol_version: Some(u32::from(wire::VERSION)),
                    max_frame_size: Some(cfg.max_frame_size),
                    ..Settings::default()
                },
            );
            wr.write_all(&hello).await.map_err(|e| cannot(e.to_string()))?;
            let mut reader = FrameReader::new(rd, cfg.max_frame_size);
            match reader.next().await {
                Ok(Frame::Settings(s)) => Ok((reader, s)),
                Ok(Frame::GoAway(g)) => {
                    Err(Status::new(g.code, format!("{addr} refused the connection: {}", g.message))
                        .with_not_processed(true))
                }
                Ok(_) => {
                    Err(cannot("the server's first frame was not SETTINGS: is this a meshrpc server?".into()))
                }
                Err(e) => Err(cannot(format!("handshake failed: {e}"))),
            }
        };
        let (reader, settings) = match tokio::time::timeout(cfg.handshake_timeout, handshake).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(cannot(format!(
                    "no handshake answer within {:?}: is this a meshrpc server?",
                    cfg.handshake_timeout
                )));
            }
        };
        if let Some(v) = settings.protocol_version
            && v != u32::from(wire::VERSION)
        {
            return Err(Status::unimplemented(format!(
                "{addr} speaks protocol version {v}; this client speaks {}",
                wire::VERSION
            )));
        }
        let server_max_calls = settings.max_concurrent_calls.unwrap_or(100).clamp(1, MAX_CLIENT_CONCURRENCY);
        let conn = Arc::new(Connection {
            outbox: Outbox::default(),
            table: Mutex::new(CallTable::new()),
            next_id: AtomicU64::new(1),
            limit: Semaphore::new(server_max_calls as usize),
            peer: addr,
            server_max_frame: settings
                .max_frame_size
                .unwrap_or(wire::DEFAULT_MAX_FRAME_SIZE)
                .max(wire::MIN_MAX_FRAME_SIZE),
            server_max_calls,
            heard,
            accepting: AtomicBool::new(true),
            sweep_rearm: Notify::new(),
            shutdown: CancellationToken::new(),
        });
        {
            let conn = conn.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    run_writer(&conn.outbox, wr, &crate::metrics::ClientMetrics::global().sent).await
                {
                    // The reader sees the same failure once it has read what the server
                    // sent before it (a GOAWAY among it decides which calls were not
                    // processed); this only makes sure nothing waits on a dead socket.
                    tracing::debug!(peer = %conn.peer, "write failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    conn.fail(unavailable(format!("connection to {} lost: write failed: {e}", conn.peer)));
                }
            });
        }
        tokio::spawn(read_loop(conn.clone(), reader));
        tokio::spawn(sweep_deadlines(conn.clone()));
        if let Some(interval) = cfg.keepalive_interval {
            tokio::spawn(keepalive(conn.clone(), interval, cfg.keepalive_timeout));
        }
        Ok(conn)
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, CallTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while the connection takes new calls.
    pub(crate) fn is_open(&self) -> bool {
        self.accepting.load(Ordering::Acquire) && !self.outbox.is_dead()
    }

    /// Calls in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.table().len()
    }

    /// The GOAWAY status once the server sent GOAWAY and no call is left in flight.
    fn finished_going_away(&self) -> Option<Status> {
        let table = self.table();
        match table.state() {
            State::GoingAway { status } if table.len() == 0 => Some(status.clone()),
            _ => None,
        }
    }

    fn now_us(&self) -> u64 {
        self.heard.now_us()
    }

    /// Fails every call in flight with `status` and closes the connection.
    pub(crate) fn fail(&self, status: Status) {
        let mut wakers = Vec::new();
        self.table().close(status, &mut wakers);
        self.accepting.store(false, Ordering::Release);
        self.limit.close();
        self.shutdown.cancel();
        // Every call has its answer (or failure) now, so nothing queued matters: the
        // writer stops even in the middle of a write to a server that reads nothing,
        // and the queued bytes are freed.
        self.outbox.abandon(None);
        for w in wakers {
            w.wake();
        }
    }

    /// Closes the connection on purpose (e.g. the client was dropped).
    pub(crate) fn close(&self, why: &str) {
        self.fail(
            Status::cancelled(format!("connection to {} closed: {why}", self.peer)).with_not_processed(true),
        );
    }
}

/// Counts an open connection in the client metrics while its reader runs.
struct Counted;

impl Counted {
    fn new() -> Counted {
        crate::metrics::ClientMetrics::global().connection_opened();
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::ClientMetrics::global().connection_closed();
    }
}

/// When the server was last heard from, for the keepalive.
#[derive(Debug)]
struct Heard {
    started: Instant,
    /// Microseconds since `started` at the last read that brought bytes.
    last_us: AtomicU64,
}

impl Heard {
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The read half, noting every read that brings bytes: a large reply arriving slowly
/// keeps the connection alive though no whole frame has arrived for a while.
struct Hearing {
    inner: OwnedReadHalf,
    heard: Arc<Heard>,
}

impl AsyncRead for Hearing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.last_us.store(self.heard.now_us(), Ordering::Release);
        }
        polled
    }
}

async fn read_loop(conn: Arc<Connection>, mut reader: FrameReader<Hearing>) {
    let _counted = Counted::new();
    let mut wakers: Vec<Waker> = Vec::new();
    let mut pings: Vec<[u8; 8]> = Vec::new();
    let peer = conn.peer;
    let failure = loop {
        tokio::select! {
            biased;
            _ = conn.shutdown.cancelled() => return,
            r = reader.fill() => if let Err(e) = r {
                break match e {
                    ReadError::Wire(e) => unavailable(format!("connection to {peer} broken: the server sent an invalid frame: {e}")),
                    e => unavailable(format!("connection to {peer} lost: {e}")),
                };
            },
        }
        if crate::metrics::ENABLED {
            crate::metrics::ClientMetrics::global()
                .received
                .fetch_add(reader.take_bytes_read(), std::sync::atomic::Ordering::Relaxed);
        }
        let mut fatal = None;
        {
            let mut table = conn.table();
            loop {
                match reader.try_next() {
                    Ok(Some(Frame::Response(r))) => {
                        let call_id = r.call_id;
                        let result = if r.code == Code::Ok {
                            Ok(r)
                        } else {
                            let not_processed = r.flags & wire::flags::NOT_PROCESSED != 0;
                            Err(Status::new(r.code, r.message).with_not_processed(not_processed))
                        };
                        wakers.extend(table.complete(call_id, result));
                    }
                    // Answered after the table lock is released (lock order: outbox, then table).
                    Ok(Some(Frame::Ping(d))) => pings.push(d),
                    Ok(Some(Frame::GoAway(g))) => {
                        let why = if g.message.is_empty() { g.code.to_string() } else { g.message.clone() };
                        let status =
                            unavailable(format!("{peer} is going away ({why}); the call was not processed"))
                                .with_not_processed(true);
                        table.go_away(g.last_call_id, status, &mut wakers);
                        conn.accepting.store(false, Ordering::Release);
                    }
                    Ok(Some(Frame::Pong(_) | Frame::Settings(_))) => {}
                    Ok(Some(Frame::Request(_) | Frame::Cancel { .. })) => {
                        fatal = Some(unavailable(format!(
                            "connection to {peer} broken: the server sent a client-only frame"
                        )));
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        fatal = Some(unavailable(format!(
                            "connection to {peer} broken: the server sent an invalid frame: {e}"
                        )));
                        break;
                    }
                }
            }
        }
        for w in wakers.drain(..) {
            w.wake();
        }
        for d in pings.drain(..) {
            wire::encode_pong(&mut conn.outbox.lock(), d);
        }
        if let Some(f) = fatal {
            break f;
        }
        // After GOAWAY, hang up as soon as the last answer is in: the server is waiting
        // for that to close the connection cleanly.
        if let Some(status) = conn.finished_going_away() {
            break status;
        }
    };
    conn.fail(failure);
}

/// Fails calls whose deadline passed and tells the server (CANCEL). One task per
/// connection instead of a timer per call: a tokio timer registered and cleared on every
/// call was ~13 % of the client's CPU at add c=256 (perf, docs/BENCHMARKS.md). The task
/// sleeps until the earliest deadline it knows of; a call with an earlier one wakes it.
async fn sweep_deadlines(conn: Arc<Connection>) {
    let mut expired = Vec::new();
    let mut wakers = Vec::new();
    loop {
        let alarm = conn.table().next_sweep();
        let fired = tokio::select! {
            biased;
            _ = conn.shutdown.cancelled() => return,
            _ = conn.sweep_rearm.notified() => false,
            _ = async {
                match alarm {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        if !fired {
            continue; // a nearer deadline arrived: re-arm
        }
        conn.table().sweep(Instant::now(), &mut expired, &mut wakers);
        // CANCEL is queued before the callers wake: a caller's next call must reach the
        // server after the CANCEL that frees the expired call's slot there.
        if !expired.is_empty() && !conn.outbox.is_dead() {
            let mut out = conn.outbox.lock();
            for id in expired.iter() {
                wire::encode_cancel(&mut out, *id);
            }
        }
        expired.clear();
        for w in wakers.drain(..) {
            w.wake();
        }
    }
}

/// Pings when nothing was read for `interval`; fails the connection if nothing at all
/// (pong or otherwise) arrives within `timeout` of the ping.
async fn keepalive(conn: Arc<Connection>, interval: Duration, timeout: Duration) {
    loop {
        tokio::select! {
            _ = conn.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let idle_us = conn.now_us().saturating_sub(conn.heard.last_us.load(Ordering::Acquire));
        if Duration::from_micros(idle_us) < interval {
            continue;
        }
        let sent_at = conn.now_us();
        wire::encode_ping(&mut conn.outbox.lock(), sent_at.to_be_bytes());
        tokio::select! {
            _ = conn.shutdown.cancelled() => return,
            _ = tokio::time::sleep(timeout) => {}
        }
        if conn.heard.last_us.load(Ordering::Acquire) < sent_at {
            conn.fail(unavailable(format!(
                "connection to {} presumed dead: no answer to a keepalive ping within {timeout:?}",
                conn.peer
            )));
            return;
        }
    }
}
