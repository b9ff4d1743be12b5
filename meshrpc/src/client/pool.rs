//! [`Pool`]: a small fixed set of connections to one server, each reconnected on demand
//! with exponential backoff after it drops.
//!
//! The fast path is a short lock to clone the slot's live connection. Only when it is
//! gone does a caller take the slot's async gate and reconnect; callers arriving during
//! the backoff after a failed attempt fail fast with the last error (or, with
//! `wait_until`, wait for the next attempt).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::lookup_host;
use tokio::time::Instant;

use super::config::ClientConfig;
use super::connection::Connection;
use crate::status::Status;

/// Reconnect state of one slot, guarded by the slot's gate.
#[derive(Debug, Default)]
struct Retry {
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<Status>,
    ever_connected: bool,
}

#[derive(Debug, Default)]
struct Slot {
    current: Mutex<Option<Arc<Connection>>>,
    gate: tokio::sync::Mutex<Retry>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        let guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|c| c.is_open()).cloned()
    }
}

/// Connections to one server.
#[derive(Debug)]
pub(crate) struct Pool {
    target: String,
    config: ClientConfig,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    closed: AtomicBool,
    /// Closed because its instance left discovery (not because the client was dropped).
    retired: AtomicBool,
    /// Connections re-established after one dropped.
    pub(crate) reconnects: AtomicU64,
}

impl Pool {
    /// A pool that connects on first use.
    pub(crate) fn new(target: String, config: ClientConfig) -> Pool {
        let n = config.connections.max(1);
        let slots: Box<[Slot]> = (0..n).map(|_| Slot::default()).collect();
        Pool {
            target,
            config,
            slots,
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
        }
    }

    /// Connects every slot once, so a wrong address fails here, not on the first call.
    pub(crate) async fn connect(
        target: String,
        config: ClientConfig,
    ) -> Result<(Pool, Arc<Connection>), Status> {
        let pool = Pool::new(target, config);
        let mut first = None;
        for slot in pool.slots.iter() {
            let c = pool.reconnect(slot, None).await?;
            first.get_or_insert(c);
        }
        let first = first.ok_or_else(|| Status::internal("a pool has at least one connection"))?;
        Ok((pool, first))
    }

    /// The next connection in round-robin order if it is live (the fast path, which
    /// neither waits nor arms a timer), else the index of its slot to reconnect.
    pub(crate) fn pick(&self) -> Result<Arc<Connection>, usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].live().ok_or(i)
    }

    /// Reconnects slot `i` (or returns the connection another caller made meanwhile).
    /// With `wait_until`, waits out backoffs until then instead of failing fast.
    pub(crate) async fn reconnect_slot(
        &self,
        i: usize,
        wait_until: Option<Instant>,
    ) -> Result<Arc<Connection>, Status> {
        self.reconnect(&self.slots[i % self.slots.len()], wait_until).await
    }

    async fn reconnect(&self, slot: &Slot, wait_until: Option<Instant>) -> Result<Arc<Connection>, Status> {
        loop {
            let mut retry = slot.gate.lock().await;
            if let Some(c) = slot.live() {
                return Ok(c); // another caller reconnected while we waited for the gate
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(if self.retired.load(Ordering::Acquire) {
                    // An instance that left discovery: send the call elsewhere.
                    Status::unavailable(format!("{} left discovery", self.target)).with_not_processed(true)
                } else {
                    Status::cancelled("the client is closed").with_not_processed(true)
                });
            }
            let now = Instant::now();
            if let Some(at) = retry.next_attempt.filter(|at| *at > now) {
                let last = retry.last_error.clone().unwrap_or_else(|| Status::unavailable("not connected"));
                match wait_until {
                    Some(w) if at < w => {
                        drop(retry);
                        tokio::time::sleep_until(at).await;
                        continue;
                    }
                    _ => {
                        let ms = (at - now).as_millis();
                        let msg = format!("{} (reconnecting; next attempt in {ms} ms)", last.message());
                        return Err(Status::new(last.code(), msg).with_not_processed(true));
                    }
                }
            }
            match self.dial().await {
                Ok(c) => {
                    if retry.ever_connected {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(target = %self.target, "reconnected");
                    }
                    *retry = Retry { ever_connected: true, ..Retry::default() };
                    *slot.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    retry.failures += 1;
                    let delay = self.config.backoff.delay(retry.failures);
                    tracing::debug!(target = %self.target, failures = retry.failures, ?delay, "connect failed: {e}");
                    retry.next_attempt = Some(Instant::now() + delay);
                    retry.last_error = Some(e.clone());
                    let can_wait = wait_until.is_some_and(|w| Instant::now() + delay < w);
                    if !can_wait {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn dial(&self) -> Result<Arc<Connection>, Status> {
        let addr = lookup_host(self.target.as_str())
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot resolve {}: {e}", self.target)).with_not_processed(true)
            })?
            .next()
            .ok_or_else(|| {
                Status::unavailable(format!("{} resolved to no address", self.target))
                    .with_not_processed(true)
            })?;
        Connection::connect(addr, &self.config).await
    }

    /// Closes every connection; later calls fail with CANCELLED.
    /// Stops reconnecting (live connections stay until [`Pool::close`]).
    pub(crate) fn stop_reconnecting(&self) {
        self.retired.store(true, Ordering::Release);
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in self.slots.iter() {
            if let Some(c) = slot.current.lock().unwrap_or_else(|e| e.into_inner()).take() {
                c.close("the client was dropped");
            }
        }
    }

    /// Live connections and calls in flight across them.
    pub(crate) fn snapshot(&self) -> (usize, usize) {
        self.slots.iter().filter_map(Slot::live).fold((0, 0), |(n, f), c| (n + 1, f + c.in_flight()))
    }
}
