//! [`Client`]: calls over a pool of connections to one server, with the deadline bounding
//! the whole chain and calls re-sent after GOAWAY.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::PollSemaphore;
use tracing::Instrument as _;

use super::balanced::Call;
use super::call::{deadline_exceeded, effective_deadline, within};
use super::config::{ClientBuilder, ClientConfig};
use super::options::CallOptions;
use super::pool::Pool;
use crate::balance::Balanced;
use crate::codec::Codec;
use crate::discovery::Registry;
use crate::metrics::{ClientMetrics, Event};
use crate::resilience::RetryBudget;
use crate::status::{Code, Status};
use crate::wire::Response;

/// How many times one call is re-sent on a new connection after the server refused it
/// unprocessed (GOAWAY, draining) before the refusal goes back to the caller.
pub(crate) const MAX_RESENDS: u32 = 5;

/// How long a re-sent call without a deadline waits for a new connection.
const RESEND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Counters of what the client did on its own.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) resent: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) hedges: AtomicU64,
}

/// A snapshot of a client's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls re-sent on a new connection because the server had not processed them
    /// (it sent GOAWAY or was draining). Not retries: they never ran.
    pub resent: u64,
    /// Calls sent again after a failure (discovered clients; within the retry budget).
    pub retries: u64,
    /// Backup attempts sent for hedged calls.
    pub hedges: u64,
    /// Connections re-established after one dropped.
    pub reconnects: u64,
    /// Live connections now.
    pub connections: usize,
    /// Calls in flight now.
    pub in_flight: usize,
}

/// Where a client's calls go.
#[derive(Debug)]
pub(crate) enum Target {
    /// One server, over a small pool of connections.
    Single(Pool),
    /// Every live instance of a discovered service, balanced.
    Balanced(Arc<Balanced>),
}

#[derive(Debug)]
pub(crate) struct ClientInner {
    pub(crate) target: Target,
    pub(crate) config: ClientConfig,
    /// Client-wide concurrency, sized from the server's advertised limit; tower's
    /// `poll_ready` reserves from it.
    pub(crate) limit: Arc<Semaphore>,
    pub(crate) server_max_calls: u32,
    pub(crate) peer: SocketAddr,
    pub(crate) stats: Stats,
    /// Bounds retries and hedges (discovered clients).
    pub(crate) budget: RetryBudget,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if let Target::Single(pool) = &self.target {
            pool.close();
        }
    }
}

impl ClientInner {
    /// (live connections, calls in flight, reconnects) over every pool.
    fn totals(&self) -> (usize, usize, u64) {
        match &self.target {
            Target::Single(pool) => {
                let (c, f) = pool.snapshot();
                (c, f, pool.reconnects.load(Ordering::Relaxed))
            }
            Target::Balanced(b) => b.picker().endpoints.iter().fold((0, 0, 0), |(c, f, r), e| {
                let (ec, ef) = e.pool.snapshot();
                (c + ec, f + ef, r + e.pool.reconnects.load(Ordering::Relaxed))
            }),
        }
    }
}

/// A client of one server: cheap to clone (clones share the connections).
///
/// Calls are multiplexed: any number may be in flight at once, answered in any order.
/// Above the server's advertised concurrency limit, calls wait in the client. A dropped
/// connection is re-established (with backoff) by the next call, and calls the server
/// refused unprocessed because it was going away are re-sent on a new connection.
/// `Client` is also a [`tower::Service`] over [`RawCall`]s.
#[derive(Debug)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
    /// A permit reserved by `poll_ready` for the next `call` (tower).
    pub(crate) ready: Option<OwnedSemaphorePermit>,
    pub(crate) poll_limit: Option<PollSemaphore>,
}

impl Clone for Client {
    fn clone(&self) -> Self {
        Client { inner: self.inner.clone(), ready: None, poll_limit: None }
    }
}

impl Client {
    pub(crate) fn from_inner(inner: ClientInner) -> Client {
        Client { inner: Arc::new(inner), ready: None, poll_limit: None }
    }

    /// Connects with the default configuration.
    pub async fn connect(addr: impl std::fmt::Display) -> Result<Client, Status> {
        ClientBuilder::default().connect(addr).await
    }

    /// A balanced client of every live instance of `service` in `registry`, with the
    /// default strategy (P2C over peak-EWMA latency); see [`ClientBuilder::discover`].
    pub fn discover(service: &str, registry: Arc<dyn Registry>) -> Client {
        ClientBuilder::default().discover(service, registry)
    }

    /// A builder for a client with custom settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The server's address (as first connected).
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// The concurrent-call limit the server advertised per connection.
    pub fn server_max_concurrent_calls(&self) -> u32 {
        self.inner.server_max_calls
    }

    /// True while at least one connection takes new calls.
    pub fn is_open(&self) -> bool {
        self.inner.totals().0 > 0
    }

    /// Calls currently in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.totals().1
    }

    /// Counters: re-sent calls, retries, hedges, reconnects, live connections, calls in flight.
    pub fn stats(&self) -> ClientStats {
        let (connections, in_flight, reconnects) = self.inner.totals();
        ClientStats {
            resent: self.inner.stats.resent.load(Ordering::Relaxed),
            retries: self.inner.stats.retries.load(Ordering::Relaxed),
            hedges: self.inner.stats.hedges.load(Ordering::Relaxed),
            reconnects,
            connections,
            in_flight,
        }
    }

    /// The instances a discovered client balances over, once its first instance set has
    /// arrived from the registry (waiting up to `timeout` for it). Empty for a client of
    /// one server.
    pub async fn instances(&self, timeout: std::time::Duration) -> Vec<crate::discovery::Instance> {
        let Target::Balanced(b) = &self.inner.target else { return Vec::new() };
        let mut rx = b.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|g| *g > 0)).await;
        b.picker()
            .endpoints
            .iter()
            .filter(|e| !e.retired.load(Ordering::Relaxed))
            .map(|e| e.instance.clone())
            .collect()
    }

    /// A discovered client's view of each instance it balances over (calls sent and
    /// answered, load, latency estimate, ejection). Empty for a client of one server.
    pub fn instance_stats(&self) -> Vec<(crate::discovery::Instance, crate::balance::InstanceStats)> {
        let Target::Balanced(b) = &self.inner.target else { return Vec::new() };
        let now = Instant::now();
        b.picker().endpoints.iter().map(|e| (e.instance.clone(), e.stats(now))).collect()
    }

    /// The retry budget this client's retries and hedges draw on.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.inner.budget
    }

    /// Calls `method` (`Service.Method`) with `args`, decoding the reply as `R`.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, Status>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned,
    {
        self.call_with(method, args, &CallOptions::default()).await
    }

    /// Like [`Client::call`], with per-call options (deadline, codec, metadata…).
    pub async fn call_with<A, R>(&self, method: &str, args: &A, opts: &CallOptions) -> Result<R, Status>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned,
    {
        let codec = opts.codec.unwrap_or(self.inner.config.codec);
        let encode = |out: &mut BytesMut| {
            codec.encode(args, out).map_err(|e| {
                Status::invalid_argument(format!("cannot encode the arguments of {method}: {e}"))
            })
        };
        let resp = self.invoke(method, opts, codec, &encode, None).await?;
        let reply_codec = Codec::from_id(resp.codec).unwrap_or(codec);
        reply_codec
            .decode(&resp.payload)
            .map_err(|e| Status::internal(format!("cannot decode the reply of {method}: {e}")))
    }

    /// Calls `method` with an already-encoded payload in `codec` and returns the
    /// encoded reply (e.g. JSON in, JSON out, for the CLI and gateways).
    pub async fn call_raw(
        &self,
        method: &str,
        codec: Codec,
        payload: &[u8],
        opts: &CallOptions,
    ) -> Result<Bytes, Status> {
        let encode = |out: &mut BytesMut| {
            out.extend_from_slice(payload);
            Ok(())
        };
        Ok(self.invoke(method, opts, codec, &encode, None).await?.payload)
    }

    /// One call, recorded: metrics, an `rpc.client` span, and the trace context sent
    /// along (see [`crate::trace`]).
    pub(crate) async fn invoke(
        &self,
        method: &str,
        opts: &CallOptions,
        codec: Codec,
        encode: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<Response, Status> {
        let (deadline, now) = effective_deadline(opts.timeout.or(self.inner.config.default_timeout));
        let call = Call { method, opts, codec, encode, deadline };
        if !crate::metrics::ENABLED {
            return self.invoke_unrecorded(call, reserved, now).await;
        }
        let stats = ClientMetrics::global().method(method);
        // One clock reading serves the deadline and the latency when there is a timeout.
        let started = now.unwrap_or_else(Instant::now);
        stats.start();
        // A call dropped before its result (a select, a fan-out's straggler) still ends.
        let mut recording = Recording { stats, started, done: false };
        let span = crate::trace::client_span(method);
        let parent = crate::trace::TraceContext::current();
        let result = if span.is_disabled() && parent.is_none() {
            // Nobody traces: no span to enter, nothing to add to the request.
            self.invoke_unrecorded(call, reserved, now).await
        } else {
            // Boxed: the untraced path's future stays as small as it was.
            Box::pin(self.invoke_traced(&span, parent, call, reserved, now)).await
        };
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        recording.done = true;
        stats.finish(code, started.elapsed());
        crate::trace::record_code(&span, code);
        result
    }

    /// A call inside a trace: its `rpc.client` span entered while it runs, and the
    /// trace context added to its metadata.
    async fn invoke_traced(
        &self,
        span: &tracing::Span,
        parent: Option<crate::trace::TraceContext>,
        call: Call<'_>,
        reserved: Option<OwnedSemaphorePermit>,
        now: Option<Instant>,
    ) -> Result<Response, Status> {
        let traced;
        let call = match crate::trace::outgoing(span, parent) {
            Some(tc) => {
                let mut o = call.opts.clone();
                // Ours replaces one the caller forwarded (the server reads the first).
                o.metadata.remove(crate::trace::TRACEPARENT);
                traced = o.metadata(crate::trace::TRACEPARENT, tc.to_traceparent());
                Call { opts: &traced, ..call }
            }
            None => call,
        };
        self.invoke_unrecorded(call, reserved, now).instrument(span.clone()).await
    }

    /// One call: a client-wide permit (unless tower reserved one), then a connection
    /// and the call on it, re-sent on a new connection when the server refused it
    /// unprocessed because it was going away; the deadline bounds all of it.
    /// `now` is the clock reading the deadline was taken from, if it was.
    async fn invoke_unrecorded(
        &self,
        call: Call<'_>,
        reserved: Option<OwnedSemaphorePermit>,
        mut now: Option<Instant>,
    ) -> Result<Response, Status> {
        let Call { method, opts, codec, encode, deadline } = call;
        // The deadline bounds the whole chain. Each wait below checks it only on its slow
        // path; the wait for the answer is bounded by the connection's deadline sweeper.
        // Only tower's `poll_ready` reserves from the client-wide limit (`reserved`); a
        // direct call is bounded by its connection's limit alone, which every call
        // honours, so it skips a second semaphore (~3 % of client CPU at add c=256).
        let _permit = reserved;
        let pool = match &self.inner.target {
            Target::Single(pool) => pool,
            Target::Balanced(b) => {
                return self.invoke_balanced(b, call, now).await;
            }
        };
        let mut resent = 0;
        loop {
            let wait = (resent > 0 || opts.wait_for_ready)
                .then(|| deadline.unwrap_or_else(|| Instant::now() + RESEND_WAIT));
            let conn = match pool.pick() {
                Ok(c) => c,
                Err(i) => match within(deadline, pool.reconnect_slot(i, wait)).await {
                    Some(c) => c?,
                    None => return Err(deadline_exceeded(method)),
                },
            };
            // A re-sent call reads the clock again: time has passed since the first try.
            match conn.call(method, opts, codec.id(), deadline, now.take(), encode).await {
                Err(s) if is_resendable(&s) && resent < MAX_RESENDS => {
                    resent += 1;
                    self.inner.stats.resent.fetch_add(1, Ordering::Relaxed);
                    if crate::metrics::ENABLED {
                        ClientMetrics::global().count(crate::metrics::service_of(method), Event::Resend);
                    }
                    tracing::debug!(method, resent, "re-sending a call the server did not process: {s}");
                }
                other => return other,
            }
        }
    }
}

/// A call the server (or the connection, before sending) refused without running it
/// because the connection was going away: safe to send again on a new connection.
/// Overload refusals (RESOURCE_EXHAUSTED) go back to the caller instead.
pub(crate) fn is_resendable(s: &Status) -> bool {
    s.code() == Code::Unavailable && s.not_processed()
}

/// A call through the [`tower::Service`] interface: an encoded payload and its options.
#[derive(Debug, Clone)]
pub struct RawCall {
    /// `Service.Method`.
    pub method: String,
    /// The payload's codec (the reply comes back in the same one).
    pub codec: Codec,
    /// The encoded arguments.
    pub payload: Bytes,
    /// Per-call options.
    pub options: CallOptions,
}

impl RawCall {
    /// A call of `method` with arguments encoded in `codec`.
    pub fn new(method: impl Into<String>, codec: Codec, payload: impl Into<Bytes>) -> RawCall {
        RawCall { method: method.into(), codec, payload: payload.into(), options: CallOptions::new() }
    }

    /// A call of `method` with `args` encoded as JSON.
    pub fn json<A: Serialize>(method: impl Into<String>, args: &A) -> Result<RawCall, Status> {
        let mut out = BytesMut::new();
        Codec::Json.encode(args, &mut out).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(RawCall::new(method, Codec::Json, out.freeze()))
    }
}

impl tower::Service<RawCall> for Client {
    type Response = Bytes;
    type Error = Status;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Bytes, Status>> + Send + 'static>>;

    /// Ready when a call fits within the server's advertised concurrency; the permit is
    /// held for the next `call`.
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Status>> {
        if self.ready.is_some() {
            return std::task::Poll::Ready(Ok(()));
        }
        let limit = self.poll_limit.get_or_insert_with(|| PollSemaphore::new(self.inner.limit.clone()));
        match limit.poll_acquire(cx) {
            std::task::Poll::Ready(Some(permit)) => {
                self.ready = Some(permit);
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(Err(Status::cancelled(
                "the client is closed",
            )
            .with_not_processed(true))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn call(&mut self, req: RawCall) -> Self::Future {
        let permit = self.ready.take();
        let client = self.clone();
        Box::pin(async move {
            let encode = |out: &mut BytesMut| {
                out.extend_from_slice(&req.payload);
                Ok(())
            };
            let resp = client.invoke(&req.method, &req.options, req.codec, &encode, permit).await?;
            Ok(resp.payload)
        })
    }
}

/// Ends a recorded call that was dropped before its result, as CANCELLED (so the
/// in-flight gauge does not keep it).
struct Recording {
    stats: &'static crate::metrics::CallStats,
    started: Instant,
    done: bool,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.done {
            self.stats.finish(Code::Cancelled, self.started.elapsed());
        }
    }
}
