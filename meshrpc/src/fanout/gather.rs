//! Scatter-gather over any futures: [`all`], [`quorum`], [`first_ok`] and [`hedged`].
//!
//! The futures run concurrently inside the awaiting task (no spawn per call); one
//! deadline bounds the group, and whatever is still running when the group is decided
//! is dropped, which cancels it (an RPC call sends CANCEL to its server).

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::status::Status;

/// The boxed future a gather builder turns into with `.await`.
pub type GatherFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a straggler cut off by the group's deadline reports.
fn straggler() -> Status {
    Status::deadline_exceeded("still running when the fan-out's deadline passed; cancelled")
}

/// A future tagged with its position in the group.
async fn indexed<F, T, E>(i: usize, f: F) -> (usize, Result<T, Status>)
where
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    (i, f.await.map_err(Into::into))
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Shared builder state: the futures and the group's deadline.
/// `'a` is how long the futures may borrow (what `.await` boxes them for).
struct Group<'a, F> {
    futs: Vec<F>,
    deadline: Option<Instant>,
    _borrows: PhantomData<&'a ()>,
}

impl<F> std::fmt::Debug for Group<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("calls", &self.futs.len()).field("deadline", &self.deadline).finish()
    }
}

impl<F> Group<'_, F> {
    fn new(futs: impl IntoIterator<Item = F>) -> Self {
        Group { futs: futs.into_iter().collect(), deadline: None, _borrows: PhantomData }
    }
}

macro_rules! deadline_setters {
    () => {
        /// Bounds the whole group: whatever has not finished `timeout` from now is cancelled.
        pub fn deadline(mut self, timeout: Duration) -> Self {
            self.group.deadline = Some(Instant::now() + timeout);
            self
        }

        /// Bounds the whole group by an absolute deadline.
        pub fn deadline_at(mut self, at: Instant) -> Self {
            self.group.deadline = Some(at);
            self
        }
    };
}

/// `.await` on a builder: its `run()`, boxed (so the builder names its future type).
macro_rules! into_future {
    ($builder:ident, $output:ty) => {
        impl<'a, F, T, E> IntoFuture for $builder<'a, F>
        where
            F: Future<Output = Result<T, E>> + Send + 'a,
            T: Send + 'a,
            E: Into<Status> + Send + 'a,
        {
            type Output = $output;
            type IntoFuture = GatherFuture<'a, Self::Output>;

            fn into_future(self) -> Self::IntoFuture {
                Box::pin(self.run())
            }
        }
    };
}

/// Runs every future at once and waits for all of them: see [`all`].
#[must_use = "a fan-out does nothing until awaited"]
#[derive(Debug)]
pub struct All<'a, F> {
    group: Group<'a, F>,
}

/// Runs every future at once and returns every result, in the order given. One failing
/// never cancels the others; with a deadline, those still running then are cancelled
/// and reported as `DEADLINE_EXCEEDED`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use meshrpc::{Status, fanout};
///
/// let slow = async { tokio::time::sleep(Duration::from_secs(5)).await; Ok::<i32, Status>(3) };
/// let results = fanout::all([
///     Box::pin(async { Ok::<i32, Status>(1) }) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>,
///     Box::pin(async { Err(Status::unavailable("down")) }),
///     Box::pin(slow),
/// ])
/// .deadline(Duration::from_millis(50))
/// .await;
/// assert_eq!(results[0].as_ref().ok(), Some(&1));
/// assert_eq!(results[1].as_ref().unwrap_err().code(), meshrpc::Code::Unavailable);
/// assert_eq!(results[2].as_ref().unwrap_err().code(), meshrpc::Code::DeadlineExceeded);
/// # }
/// ```
pub fn all<'a, I, F, T, E>(futs: I) -> All<'a, F>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    All { group: Group::new(futs) }
}

impl<F, T, E> All<'_, F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    deadline_setters!();

    /// Runs the group (what `.await` does; this form also takes futures that are not `Send`).
    pub async fn run(self) -> Vec<Result<T, Status>> {
        let Group { futs, deadline, .. } = self.group;
        let mut results: Vec<Option<Result<T, Status>>> = futs.iter().map(|_| None).collect();
        let mut running: FuturesUnordered<_> =
            futs.into_iter().enumerate().map(|(i, f)| indexed(i, f)).collect();
        let expiry = until(deadline);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                next = running.next() => match next {
                    Some((i, r)) => results[i] = Some(r),
                    None => break,
                },
                _ = &mut expiry => break,
            }
        }
        drop(running); // cancels the stragglers
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(straggler()))).collect()
    }
}

into_future!(All, Vec<Result<T, Status>>);

/// Waits for `k` successes: see [`quorum`].
#[must_use = "a fan-out does nothing until awaited"]
#[derive(Debug)]
pub struct Quorum<'a, F> {
    group: Group<'a, F>,
    k: usize,
}

/// Runs every future at once and returns as soon as `k` of them succeeded (each as
/// `(index, value)`, in the order they finished), cancelling the rest. Fails as soon as
/// `k` successes are out of reach (more than `n - k` failed), with the failures listed,
/// or at the deadline with `DEADLINE_EXCEEDED`.
pub fn quorum<'a, I, F, T, E>(k: usize, futs: I) -> Quorum<'a, F>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    Quorum { group: Group::new(futs), k }
}

impl<F, T, E> Quorum<'_, F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    deadline_setters!();

    /// Runs the group (what `.await` does; this form also takes futures that are not `Send`).
    pub async fn run(self) -> Result<Vec<(usize, T)>, Status> {
        let Group { futs, deadline, .. } = self.group;
        let (n, k) = (futs.len(), self.k);
        if k > n {
            return Err(Status::invalid_argument(format!("a quorum of {k} cannot be met by {n} calls")));
        }
        let mut ok = Vec::with_capacity(k);
        let mut failed: Vec<(usize, Status)> = Vec::new();
        if k == 0 {
            return Ok(ok);
        }
        let mut running: FuturesUnordered<_> =
            futs.into_iter().enumerate().map(|(i, f)| indexed(i, f)).collect();
        let expiry = until(deadline);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                next = running.next() => match next {
                    Some((i, Ok(v))) => {
                        ok.push((i, v));
                        if ok.len() == k {
                            return Ok(ok); // dropping `running` cancels the rest
                        }
                    }
                    Some((i, Err(s))) => {
                        failed.push((i, s));
                        if failed.len() > n - k {
                            return Err(out_of_reach(k, n, ok.len(), &failed));
                        }
                    }
                    None => return Err(out_of_reach(k, n, ok.len(), &failed)),
                },
                _ = &mut expiry => {
                    return Err(Status::deadline_exceeded(format!(
                        "quorum of {k} of {n} not reached by the deadline: {} succeeded, {} failed",
                        ok.len(),
                        failed.len()
                    )));
                }
            }
        }
    }
}

into_future!(Quorum, Result<Vec<(usize, T)>, Status>);

/// The status of a fan-out that can no longer succeed: the code of the first failure,
/// and every failure in the message.
fn out_of_reach(k: usize, n: usize, succeeded: usize, failed: &[(usize, Status)]) -> Status {
    let code = failed.first().map_or(crate::status::Code::Unavailable, |(_, s)| s.code());
    let list: Vec<String> = failed.iter().take(8).map(|(i, s)| format!("#{i}: {s}")).collect();
    let more = if failed.len() > 8 { format!(" and {} more", failed.len() - 8) } else { String::new() };
    Status::new(
        code,
        format!(
            "{k} of {n} successes are out of reach ({succeeded} succeeded, {} failed): {}{more}",
            failed.len(),
            list.join("; ")
        ),
    )
}

/// The first success: see [`first_ok`].
#[must_use = "a fan-out does nothing until awaited"]
#[derive(Debug)]
pub struct FirstOk<'a, F> {
    inner: Quorum<'a, F>,
}

/// Runs every future at once and returns the first success as `(index, value)`,
/// cancelling the rest; fails once every one has failed (listing why) or at the deadline.
pub fn first_ok<'a, I, F, T, E>(futs: I) -> FirstOk<'a, F>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    FirstOk { inner: quorum(1, futs) }
}

impl<F, T, E> FirstOk<'_, F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    /// Bounds the whole group: whatever has not finished `timeout` from now is cancelled.
    pub fn deadline(self, timeout: Duration) -> Self {
        FirstOk { inner: self.inner.deadline(timeout) }
    }

    /// Bounds the whole group by an absolute deadline.
    pub fn deadline_at(self, at: Instant) -> Self {
        FirstOk { inner: self.inner.deadline_at(at) }
    }

    /// Runs the group (what `.await` does; this form also takes futures that are not `Send`).
    pub async fn run(self) -> Result<(usize, T), Status> {
        if self.inner.group.futs.is_empty() {
            return Err(Status::invalid_argument("first_ok over no calls"));
        }
        let mut won = self.inner.run().await?;
        won.pop().ok_or_else(|| Status::internal("a quorum of one returned nothing"))
    }
}

into_future!(FirstOk, Result<(usize, T), Status>);

/// Staggered attempts, first success wins: see [`hedged`].
#[must_use = "a fan-out does nothing until awaited"]
#[derive(Debug)]
pub struct Hedged<'a, F> {
    group: Group<'a, F>,
    delay: Duration,
}

/// Starts the first future; whenever `delay` passes without a success (or the latest
/// attempt fails), starts the next one. Returns the first success as `(index, value)`
/// and cancels the attempts still running; futures never started are never polled. Only
/// hedge work that is safe to do twice (idempotent calls).
pub fn hedged<'a, I, F, T, E>(delay: Duration, futs: I) -> Hedged<'a, F>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    Hedged { group: Group::new(futs), delay }
}

impl<F, T, E> Hedged<'_, F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Status>,
{
    deadline_setters!();

    /// Runs the attempts (what `.await` does; this form also takes futures that are not `Send`).
    pub async fn run(self) -> Result<(usize, T), Status> {
        let Group { futs, deadline, .. } = self.group;
        let n = futs.len();
        if n == 0 {
            return Err(Status::invalid_argument("hedged over no attempts"));
        }
        let mut waiting = futs.into_iter().enumerate();
        let mut running = FuturesUnordered::new();
        let mut failed: Vec<(usize, Status)> = Vec::new();
        let expiry = until(deadline);
        tokio::pin!(expiry);
        let next_hedge = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(next_hedge);
        let mut more = true;
        loop {
            tokio::select! {
                _ = &mut next_hedge, if more => {
                    match waiting.next() {
                        Some((i, f)) => {
                            running.push(indexed(i, f));
                            next_hedge.as_mut().reset(Instant::now() + self.delay);
                        }
                        None => more = false,
                    }
                }
                Some((i, r)) = running.next() => match r {
                    Ok(v) => return Ok((i, v)),
                    Err(s) => {
                        failed.push((i, s));
                        if failed.len() == n {
                            return Err(out_of_reach(1, n, 0, &failed));
                        }
                        // A failed attempt starts the next one at once.
                        next_hedge.as_mut().reset(Instant::now());
                    }
                },
                _ = &mut expiry => {
                    return Err(Status::deadline_exceeded(format!(
                        "no attempt succeeded by the deadline ({} started, {} failed)",
                        n - waiting.len(),
                        failed.len()
                    )));
                }
            }
        }
    }
}

into_future!(Hedged, Result<(usize, T), Status>);
