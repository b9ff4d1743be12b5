//! [`FrameReader`]: reads from a socket into one reusable buffer and yields frames.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::wire::{self, Decoded, Frame, WireError};

/// Why reading frames stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The peer closed the connection between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed by peer in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// A socket error.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Frames from a byte stream, decoded from one reusable read buffer.
///
/// The read size adapts: it starts at [`MIN_CHUNK`] (an idle connection holds little
/// memory) and doubles, up to [`READ_CHUNK`], while reads keep filling it (a busy
/// connection reads many frames per syscall).
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame_size: u32,
    chunk: usize,
    /// Bytes read since the last [`FrameReader::take_bytes_read`].
    bytes_read: u64,
}

const READ_CHUNK: usize = 64 * 1024;
const MIN_CHUNK: usize = 4 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `io`; frames over `max_frame_size` are an error.
    pub(crate) fn new(io: R, max_frame_size: u32) -> FrameReader<R> {
        FrameReader { io, buf: BytesMut::new(), max_frame_size, chunk: MIN_CHUNK, bytes_read: 0 }
    }

    /// Decodes the next frame already buffered, without reading.
    pub(crate) fn try_next(&mut self) -> Result<Option<Frame>, WireError> {
        wire::decode(&mut self.buf, self.max_frame_size)
    }

    /// Bytes read since the last call (for the byte counters: one atomic add per read
    /// batch, not per frame).
    pub(crate) fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }

    /// Reads more bytes: returns once at least one more whole frame is buffered.
    /// The length prefix is checked before the buffer grows for a frame.
    pub(crate) async fn fill(&mut self) -> Result<(), ReadError> {
        loop {
            let need = match wire::check(&self.buf, self.max_frame_size)? {
                Decoded::Complete(_) => return Ok(()),
                Decoded::Incomplete(Some(total)) => total - self.buf.len(),
                Decoded::Incomplete(None) => wire::LENGTH_PREFIX - self.buf.len(),
            };
            // Grow only when the spare room is small: then make room for the rest of this
            // frame (already checked against the limit) or one read chunk, if larger.
            let spare = self.buf.capacity() - self.buf.len();
            if spare < need.min(self.chunk) {
                self.buf.reserve(need.max(self.chunk));
            }
            let room = self.buf.capacity() - self.buf.len();
            let n = self.io.read_buf(&mut self.buf).await?;
            self.bytes_read += n as u64;
            self.chunk =
                if n == room { (self.chunk * 2).min(READ_CHUNK) } else { (self.chunk / 2).max(MIN_CHUNK) };
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::Closed
                } else {
                    ReadError::Truncated(self.buf.len())
                });
            }
        }
    }

    /// Reads and drops everything until the peer closes (or the read fails).
    pub(crate) async fn discard_until_eof(&mut self) {
        self.buf.clear();
        loop {
            self.buf.reserve(MIN_CHUNK);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => self.buf.clear(),
            }
        }
    }

    /// Reads the next frame, waiting for bytes as needed.
    pub(crate) async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(f) = self.try_next()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }
}
