//! [`Outbox`]: a connection's write queue, and [`run_writer`], the task that drains it.
//!
//! An outbox ends in one of two ways: closed (the writer flushes what is queued, shuts
//! the write side down and exits) or dead (the write failed, or the connection was
//! abandoned): then nothing queued will ever be sent, so the queued bytes are freed at
//! once, later pushes are discarded, and everyone waiting on the outbox is woken.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::budget::QueueBudget;

/// Above this many unsent bytes (queued, or taken by the writer and not yet written),
/// readers stop reading new requests until the writer has sent enough (backpressure
/// against a peer that does not read its replies).
pub(crate) const HIGH_WATER: usize = 1 << 20;

/// A connection's write queue: frames are encoded into it under a short lock.
#[derive(Debug)]
pub(crate) struct Outbox {
    buf: Mutex<Queue>,
    /// Bytes queued, readable without the lock.
    queued: AtomicUsize,
    /// Bytes the writer has taken from the queue and not yet written.
    writing: AtomicUsize,
    /// Bytes written so far (progress: a slow reader is not a stalled one).
    written: AtomicU64,
    /// The budget these bytes are counted in (a server's, across its connections).
    budget: Option<Arc<QueueBudget>>,
    /// Wakes the writer when the queue becomes non-empty, closes or dies.
    wake_writer: Notify,
    /// Wakes waiters when the unsent bytes drop below [`HIGH_WATER`] or the outbox dies.
    drained: Notify,
    /// No more frames will be written (the writer exits after flushing what is queued).
    closed: AtomicBool,
    /// Nothing queued will be sent any more (the writer failed, exited or was cut off).
    /// Set under the queue's lock, so a push either sees it or is freed by it.
    dead: AtomicBool,
    /// Set by [`Outbox::abandon`]: the writer stops, even in the middle of a write.
    cut: Notify,
    /// A last frame the writer tries once, without waiting, when abandoned (GOAWAY).
    last_words: Mutex<Option<Bytes>>,
}

/// Queued frames, and how many of their bytes are counted in the budget.
#[derive(Debug, Default)]
struct Queue {
    bytes: BytesMut,
    /// Bytes of `bytes` counted in the budget: all of them once the queue holds at
    /// least [`COUNT_FROM`], none below. The writer counts a batch when it takes it.
    counted: usize,
}

/// A queue this small is not counted in the budget until the writer takes it: the
/// fast path (replies written as soon as they are queued) then touches no shared
/// counter per reply, only per batch. So the budget can miss up to this much per
/// connection (64 KiB).
const COUNT_FROM: usize = 64 * 1024;

/// The locked queue; encode frames into it, then drop it (the wake happens on drop).
pub(crate) struct OutboxGuard<'a> {
    outbox: &'a Outbox,
    buf: MutexGuard<'a, Queue>,
    len_at_lock: usize,
}

impl std::ops::Deref for OutboxGuard<'_> {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.buf.bytes
    }
}

impl std::ops::DerefMut for OutboxGuard<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf.bytes
    }
}

impl Drop for OutboxGuard<'_> {
    fn drop(&mut self) {
        let outbox = self.outbox;
        if outbox.dead.load(Ordering::Acquire) {
            // Nothing will be sent: what was just encoded is dropped, not held. (`die`
            // emptied the queue under this lock, so it holds only this guard's frames.)
            self.buf.bytes.clear();
            return;
        }
        let len = self.buf.bytes.len();
        outbox.queued.store(len, Ordering::Release);
        if let Some(budget) = &outbox.budget {
            let count = if len >= COUNT_FROM { len } else { 0 };
            if count != self.buf.counted {
                budget.adjust(self.buf.counted, count);
                self.buf.counted = count;
            }
        }
        if self.len_at_lock == 0 && len > 0 {
            outbox.wake_writer.notify_one();
        }
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(None)
    }
}

impl Outbox {
    /// An outbox whose unsent bytes are counted in `budget`.
    pub(crate) fn with_budget(budget: Arc<QueueBudget>) -> Outbox {
        Outbox::new(Some(budget))
    }

    fn new(budget: Option<Arc<QueueBudget>>) -> Outbox {
        Outbox {
            buf: Mutex::default(),
            queued: AtomicUsize::new(0),
            writing: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            budget,
            wake_writer: Notify::new(),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            cut: Notify::new(),
            last_words: Mutex::new(None),
        }
    }

    /// Locks the queue for encoding. A poisoned lock (a panic while encoding) is
    /// recovered: encoders truncate partial frames before anything can panic past them.
    pub(crate) fn lock(&self) -> OutboxGuard<'_> {
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let len_at_lock = buf.bytes.len();
        OutboxGuard { outbox: self, buf, len_at_lock }
    }

    /// Bytes waiting to be written, including those the writer is writing now.
    pub(crate) fn unsent(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.writing.load(Ordering::Acquire)
    }

    /// Bytes written to the socket so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// True once the writer can no longer send anything.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Waits until fewer than [`HIGH_WATER`] bytes are unsent, or the outbox died.
    pub(crate) async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.unsent() < HIGH_WATER || self.is_dead() {
                return;
            }
            notified.await;
        }
    }

    /// Asks the writer to flush what is queued, shut the write side down, and exit.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_writer.notify_one();
    }

    /// Gives up on the connection: frees everything queued, stops the writer even in
    /// the middle of a write, and has it try `last_words` once without waiting (only at
    /// a frame boundary, so the peer never sees it inside another frame).
    pub(crate) fn abandon(&self, last_words: Option<Bytes>) {
        if let Some(words) = last_words {
            // Only the first words stay: a later abandon (the connection's end) has none.
            self.last_words.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(words);
        }
        self.die();
        self.cut.notify_waiters();
    }

    /// Marks the outbox dead, frees what is queued and wakes everyone waiting on it.
    fn die(&self) {
        {
            let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            self.dead.store(true, Ordering::Release);
            if let Some(budget) = &self.budget {
                budget.adjust(buf.counted, 0);
            }
            *buf = Queue::default();
            self.queued.store(0, Ordering::Release);
        }
        self.drained.notify_waiters();
        self.wake_writer.notify_one();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Whatever is still counted (a writer that never ran) leaves the budget.
        if let Some(budget) = &self.budget {
            let queue = self.buf.get_mut().unwrap_or_else(|e| e.into_inner());
            let held = queue.counted + *self.writing.get_mut();
            budget.adjust(held, 0);
        }
    }
}

/// Ends the writer's hold on the outbox however the writer ends (returns, fails, or
/// its task is aborted): the bytes it was writing leave the budget, the outbox dies.
struct WriterExit<'a>(&'a Outbox);

impl Drop for WriterExit<'_> {
    fn drop(&mut self) {
        let outbox = self.0;
        let writing = outbox.writing.swap(0, Ordering::AcqRel);
        if let Some(budget) = &outbox.budget {
            budget.adjust(writing, 0);
        }
        outbox.die();
    }
}

/// Why a batch was not written whole.
enum Interrupted {
    Failed(std::io::Error),
    /// Abandoned; `at_boundary` when nothing of the batch had been written.
    Cut {
        at_boundary: bool,
    },
}

/// Writes everything pushed into `outbox` to `io` until the outbox is closed, a write
/// fails or the outbox is abandoned (`Ok` but for a failed write). Each wake-up writes
/// all frames queued so far in as few syscalls as the socket allows. Bytes written are
/// added to `sent`.
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(
    outbox: &Outbox,
    mut io: W,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let _exit = WriterExit(outbox);
    let mut spare = BytesMut::new();
    let ended = loop {
        if outbox.is_dead() {
            break Interrupted::Cut { at_boundary: true };
        }
        if outbox.queued.load(Ordering::Acquire) == 0 {
            if outbox.closed.load(Ordering::Acquire) {
                let _ = io.shutdown().await;
                return Ok(());
            }
            outbox.wake_writer.notified().await;
            // Let the other tasks woken in this batch queue their frames before we take
            // the buffer: without this the writer runs first (tokio's LIFO slot) and
            // writes one frame per syscall (measured: 1.0 frame/write at c=256, ~29 with it).
            tokio::task::yield_now().await;
            continue;
        }
        {
            let mut guard = outbox.buf.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut guard.bytes, &mut spare);
            // The whole batch is counted while the writer holds it.
            if let Some(budget) = &outbox.budget {
                budget.adjust(guard.counted, spare.len());
            }
            guard.counted = 0;
            outbox.writing.store(spare.len(), Ordering::Release);
            outbox.queued.store(0, Ordering::Release);
        }
        if spare.is_empty() {
            continue;
        }
        if let Err(why) = write_batch(outbox, &mut io, &spare).await {
            break why;
        }
        if crate::metrics::ENABLED {
            sent.fetch_add(spare.len() as u64, Ordering::Relaxed);
        }
        spare.clear();
        // Do not let one huge reply pin a huge buffer for the connection's lifetime.
        if spare.capacity() > 4 * HIGH_WATER {
            spare = BytesMut::new();
        }
    };
    drop(spare);
    match ended {
        Interrupted::Failed(e) => Err(e),
        Interrupted::Cut { at_boundary } => {
            let words = outbox.last_words.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let (true, Some(words)) = (at_boundary, words) {
                // One try, never a wait: the peer is most likely not reading. (If the
                // socket takes only part of it, the peer sees a cut frame, then the close.)
                let _ = io.write(&words).now_or_never();
            }
            Ok(()) // given up on purpose: not an I/O failure
        }
    }
}

/// Writes `batch` whole, unless the write fails or the outbox is abandoned meanwhile.
async fn write_batch<W: AsyncWrite + Unpin>(
    outbox: &Outbox,
    io: &mut W,
    batch: &[u8],
) -> Result<(), Interrupted> {
    let mut pos = 0;
    while pos < batch.len() {
        let cut = outbox.cut.notified();
        if outbox.is_dead() {
            return Err(Interrupted::Cut { at_boundary: pos == 0 });
        }
        // Biased: the cut is only polled (registered) when the write has to wait.
        let n = tokio::select! {
            biased;
            r = io.write(&batch[pos..]) => r.map_err(Interrupted::Failed)?,
            _ = cut => return Err(Interrupted::Cut { at_boundary: pos == 0 }),
        };
        if n == 0 {
            return Err(Interrupted::Failed(std::io::ErrorKind::WriteZero.into()));
        }
        pos += n;
        // Progress per piece, so a peer that reads slowly but steadily (a large reply
        // over a slow link) is seen making progress, and backpressure lifts as soon as
        // less than HIGH_WATER is left, not when the whole batch is out.
        let before = outbox.writing.fetch_sub(n, Ordering::AcqRel);
        outbox.written.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(budget) = &outbox.budget {
            budget.adjust(n, 0);
        }
        if before - n + outbox.queued.load(Ordering::Acquire) < HIGH_WATER {
            outbox.drained.notify_waiters();
        }
    }
    Ok(())
}
