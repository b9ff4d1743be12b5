//! The call path of a discovered client: pick an instance, call it, learn from the
//! answer (latency, failures), retry elsewhere within the budget, hedge if asked.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::call::{deadline_exceeded, within};
use super::handle::{Client, MAX_RESENDS, Target, is_resendable};
use super::options::CallOptions;
use crate::balance::{Balanced, Endpoint, Picker, counts_as_failure};
use crate::codec::Codec;
use crate::discovery::Instance;
use crate::fanout;
use crate::metrics::{ClientMetrics, Event};
use crate::resilience::SAME_INSTANCE_BACKOFF;
use crate::status::{Code, Status};
use crate::wire::Response;

/// How long a call without a deadline waits for a first instance to appear.
const NO_INSTANCE_WAIT: Duration = Duration::from_secs(5);

/// At most this many retries of one call (the budget bounds them across calls; this
/// stops one doomed call from spending it alone).
const MAX_RETRIES: u32 = 3;

/// At most this many attempts of one hedged call.
const MAX_HEDGES: usize = 3;

/// Counts a call in flight on an endpoint for as long as it lives (also when dropped).
struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    fn new(e: &'a Endpoint) -> InFlight<'a> {
        e.in_flight.fetch_add(1, Ordering::AcqRel);
        e.calls.fetch_add(1, Ordering::Relaxed);
        InFlight(e)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every attempt of one call shares: the method, its options and codec, the
/// payload encoder, and the deadline over the whole chain.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) method: &'a str,
    pub(crate) opts: &'a CallOptions,
    pub(crate) codec: Codec,
    pub(crate) encode: &'a (dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    pub(crate) deadline: Option<Instant>,
}

/// Whether a failed call may be sent again: anything the server never processed, and
/// idempotent calls, on unavailability and overload only.
fn retryable(s: &Status, opts: &CallOptions) -> bool {
    matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) && (s.not_processed() || opts.idempotent)
}

impl Client {
    /// One call of a discovered client (see the module docs).
    pub(crate) async fn invoke_balanced(
        &self,
        b: &Arc<Balanced>,
        call: Call<'_>,
        now: Option<Instant>,
    ) -> Result<Response, Status> {
        match call.opts.hedge {
            Some(after) if call.opts.idempotent => self.hedged(b, call, after).await,
            _ => self.balanced_attempts(b, call, now, None).await,
        }
    }

    /// A hedged call: up to [`MAX_HEDGES`] staggered attempts, each on its own instance
    /// where possible; backups draw on the retry budget.
    async fn hedged(&self, b: &Arc<Balanced>, call: Call<'_>, after: Duration) -> Result<Response, Status> {
        let Call { method, deadline, .. } = call;
        let n = b.picker().endpoints.len().clamp(1, MAX_HEDGES);
        let used = std::sync::Mutex::new(Vec::new());
        let used = &used;
        let attempts = (0..n).map(|k| {
            Box::pin(async move {
                if k > 0 {
                    self.count_calls(&b.picker().endpoints);
                    if !self.inner.budget.try_retry() {
                        return Err(Status::unavailable("hedge not sent: the retry budget is spent"));
                    }
                    self.inner.stats.hedges.fetch_add(1, Ordering::Relaxed);
                    self.count_event(method, Event::Hedge);
                }
                self.balanced_attempts(b, call, None, Some(used)).await
            })
        });
        let mut group = fanout::hedged(after, attempts);
        if let Some(d) = deadline {
            group = group.deadline_at(d);
        }
        match group.run().await {
            Ok((_, r)) => Ok(r),
            Err(s) if s.code() == Code::DeadlineExceeded => Err(deadline_exceeded(method)),
            Err(s) => Err(s),
        }
    }

    /// Picks, calls, and retries within the budget; `hedge` holds the instances a hedged
    /// call's earlier attempts went to (this one avoids them while others are left).
    async fn balanced_attempts(
        &self,
        b: &Arc<Balanced>,
        call: Call<'_>,
        mut now: Option<Instant>,
        hedge: Option<&std::sync::Mutex<Vec<Arc<Endpoint>>>>,
    ) -> Result<Response, Status> {
        let Call { method, opts, deadline, .. } = call;
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let (mut resent, mut retries) = (0, 0);
        let mut changes = None;
        let key = opts.hash_key.as_deref();
        loop {
            let picker = b.picker();
            let pick = match hedge {
                // A hedge's attempt avoids the instances earlier attempts went to.
                Some(used) => {
                    let mut used = used.lock().unwrap_or_else(|e| e.into_inner());
                    let avoid: Vec<Arc<Endpoint>> = used.iter().chain(tried.iter()).cloned().collect();
                    let i = picker.pick(key, &avoid, Instant::now());
                    if let Some(i) = i {
                        used.push(picker.endpoints[i].clone());
                    }
                    i
                }
                None => picker.pick(key, &tried, Instant::now()),
            };
            let Some(i) = pick else {
                // No instance (yet): wait for the set to change, within the deadline. The
                // first time, subscribe and look again: a set that arrived in between
                // would not count as a change.
                if changes.is_none() {
                    changes = Some(b.subscribe());
                    continue;
                }
                let Some(rx) = changes.as_mut() else { continue };
                let until = deadline.unwrap_or_else(|| Instant::now() + NO_INSTANCE_WAIT);
                match tokio::time::timeout_at(until, rx.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => {
                        return Err(Status::unavailable(format!(
                            "no live instance of service {:?} (waited for one until the deadline)",
                            b.service
                        ))
                        .with_not_processed(true));
                    }
                }
            };
            let ep = picker.endpoints[i].clone();
            let (result, reached) = self.endpoint_call(b, &picker, i, call, now.take()).await;
            let status = match result {
                Ok(r) => return Ok(r),
                Err(s) => s,
            };
            if reached && is_resendable(&status) && resent < MAX_RESENDS {
                // The server refused it unprocessed while going away (GOAWAY, draining):
                // a re-send, preferably elsewhere, not a retry.
                resent += 1;
                self.inner.stats.resent.fetch_add(1, Ordering::Relaxed);
                tried.push(ep);
                continue;
            }
            if !retryable(&status, opts)
                || retries >= MAX_RETRIES
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Err(status);
            }
            retries += 1;
            self.count_calls(&picker.endpoints);
            if !self.inner.budget.try_retry() {
                return Err(Status::new(
                    status.code(),
                    format!("{} (not retried: the retry budget is spent)", status.message()),
                ));
            }
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.count_event(method, Event::Retry);
            tracing::debug!(method, instance = %ep.instance.id, "retrying elsewhere after: {status}");
            tried.push(ep);
            let live = picker.endpoints.iter().filter(|e| !e.retired.load(Ordering::Relaxed)).count();
            if tried.len() >= live {
                // Every instance failed this call: back off, then start over.
                tried.clear();
                let pause = Instant::now() + SAME_INSTANCE_BACKOFF;
                if deadline.is_some_and(|d| d <= pause) {
                    return Err(status);
                }
                tokio::time::sleep_until(pause).await;
            }
        }
    }

    /// One attempt on endpoint `i` of `picker`, learning from the outcome (latency,
    /// passive health). The flag says whether a connection was reached (false: the
    /// instance could not be connected to).
    async fn endpoint_call(
        &self,
        b: &Balanced,
        picker: &Picker,
        i: usize,
        call: Call<'_>,
        now: Option<Instant>,
    ) -> (Result<Response, Status>, bool) {
        let Call { method, opts, codec, encode, deadline } = call;
        let ep = &picker.endpoints[i];
        let _counted = InFlight::new(ep);
        let t0 = Instant::now();
        let conn = match ep.pool.pick() {
            Ok(c) => Ok(c),
            Err(slot) => match within(deadline, ep.pool.reconnect_slot(slot, None)).await {
                Some(c) => c,
                None => Err(deadline_exceeded(method)),
            },
        };
        let (r, reached) = match conn {
            Ok(conn) => (conn.call(method, opts, codec.id(), deadline, now, encode).await, true),
            Err(s) => (Err(s), false),
        };
        let t1 = Instant::now();
        ep.observe(t1 - t0, t1, &r.as_ref().map(|_| ()));
        // A refusal while the server was going away (GOAWAY, draining) is not a failure
        // of the instance; a connection that could not be made is.
        if let Err(s) = &r
            && counts_as_failure(s)
            && !(reached && s.not_processed())
        {
            b.failed(picker, i, t1);
        }
        (r, reached)
    }

    /// Counts a retry or hedge in the process's client metrics, under the service.
    fn count_event(&self, method: &str, event: Event) {
        if crate::metrics::ENABLED {
            ClientMetrics::global().count(crate::metrics::service_of(method), event);
        }
    }

    /// Feeds the calls made since the last retry into the budget.
    fn count_calls(&self, endpoints: &[Arc<Endpoint>]) {
        let total: u64 = endpoints.iter().map(|e| e.calls.load(Ordering::Relaxed)).sum();
        self.inner.budget.record_total(total);
    }

    /// Calls `method` on every live instance at once (a discovered client; a client of
    /// one server calls that one) and returns each instance's result. One failing never
    /// cancels the others; the call options' timeout bounds the whole broadcast.
    pub async fn broadcast<A, R>(
        &self,
        method: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Vec<(Instance, Result<R, Status>)>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send,
    {
        let codec = opts.codec.unwrap_or(self.inner.config.codec);
        let mut payload = BytesMut::new();
        if let Err(e) = codec.encode(args, &mut payload) {
            let status = Status::invalid_argument(format!("cannot encode the arguments of {method}: {e}"));
            return vec![(Instance::new("", "", self.inner.peer.to_string()), Err(status))];
        }
        let payload = payload.freeze();
        let encode = |out: &mut BytesMut| {
            out.extend_from_slice(&payload);
            Ok(())
        };
        let deadline = opts.timeout.or(self.inner.config.default_timeout).map(|t| Instant::now() + t);
        let decode = |r: Result<Response, Status>| {
            r.and_then(|resp| {
                Codec::from_id(resp.codec)
                    .unwrap_or(codec)
                    .decode::<R>(&resp.payload)
                    .map_err(|e| Status::internal(format!("cannot decode the reply of {method}: {e}")))
            })
        };
        match &self.inner.target {
            Target::Single(_) => {
                let addr = self.inner.peer.to_string();
                let r = self.invoke(method, opts, codec, &encode, None).await;
                vec![(Instance::new("", addr.clone(), addr), decode(r))]
            }
            Target::Balanced(b) => {
                let picker = b.picker();
                let call = Call { method, opts, codec, encode: &encode, deadline };
                let live: Vec<usize> = (0..picker.endpoints.len())
                    .filter(|&i| !picker.endpoints[i].retired.load(Ordering::Relaxed))
                    .collect();
                let calls = live.iter().map(|&i| {
                    let picker = &picker;
                    async move { self.endpoint_call(b, picker, i, call, None).await.0 }
                });
                let mut group = fanout::all(calls);
                if let Some(d) = deadline {
                    group = group.deadline_at(d);
                }
                let results = group.run().await;
                live.iter()
                    .map(|&i| picker.endpoints[i].instance.clone())
                    .zip(results.into_iter().map(decode))
                    .collect()
            }
        }
    }
}
