//! Transport: the per-connection write queue and writer task, and buffered frame reads.
//!
//! Both ends use the same pieces. Callers encode frames straight into the [`Outbox`]
//! (a `Mutex<BytesMut>` held only while encoding, never across an await); the push
//! that makes it non-empty wakes the writer task, which swaps the buffer out and
//! writes everything queued in one syscall. Reads go into one reusable `BytesMut`
//! and every complete frame in it is decoded per read (see [`FrameReader`]). A server's
//! outboxes count their unsent bytes in one [`QueueBudget`].

mod budget;
mod outbox;
mod reader;

pub(crate) use budget::QueueBudget;
pub(crate) use outbox::{HIGH_WATER, Outbox, run_writer};
pub(crate) use reader::{FrameReader, ReadError};
