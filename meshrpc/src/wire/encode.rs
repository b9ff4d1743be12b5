//! Frame encoding into a caller-owned [`BytesMut`] (usually a connection's write queue).
//!
//! Requests and responses are written in two steps so that the payload can be
//! serialized straight into the output buffer with no intermediate copy:
//! `encode_*_head` writes a length placeholder and the header and returns a
//! [`PendingFrame`]; the caller appends the payload and calls [`PendingFrame::finish`],
//! which patches the length (or removes the frame again if it is over the limit).

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::frame::{Frame, GoAway, Kind, Settings, flags};
use super::{COMMON_HEADER, LENGTH_PREFIX, MAX_MESSAGE_LEN, Metadata};
use crate::status::Code;

/// A frame whose header is written and whose payload is being appended.
#[derive(Debug)]
#[must_use = "a pending frame must be finished or abandoned"]
pub struct PendingFrame {
    start: usize,
}

/// A frame came out larger than the peer accepts; it was removed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds the peer's maximum frame size of {max} bytes")]
pub struct FrameSizeExceeded {
    /// The frame's length (length-prefix value).
    pub len: u64,
    /// The peer's limit.
    pub max: u32,
}

impl PendingFrame {
    fn begin(buf: &mut BytesMut, kind: Kind, flags: u8, call_id: u64) -> PendingFrame {
        let start = buf.len();
        buf.reserve(LENGTH_PREFIX + COMMON_HEADER + 32);
        buf.put_u32(0);
        buf.put_u8(kind as u8);
        buf.put_u8(flags);
        buf.put_u64(call_id);
        PendingFrame { start }
    }

    /// Patches the length prefix; if the frame exceeds `max`, removes it and errs.
    pub fn finish(self, buf: &mut BytesMut, max: u32) -> Result<(), FrameSizeExceeded> {
        let len = (buf.len() - self.start - LENGTH_PREFIX) as u64;
        if len > u64::from(max) {
            buf.truncate(self.start);
            return Err(FrameSizeExceeded { len, max });
        }
        buf[self.start..self.start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Removes the partly written frame (e.g. when payload serialization failed).
    pub fn abandon(self, buf: &mut BytesMut) {
        buf.truncate(self.start);
    }

    /// Where the frame starts in the buffer.
    pub fn start(&self) -> usize {
        self.start
    }
}

fn put_message(buf: &mut BytesMut, message: &str) {
    let mut end = message.len().min(MAX_MESSAGE_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_u16(end as u16);
    buf.put_slice(&message.as_bytes()[..end]);
}

fn put_metadata(buf: &mut BytesMut, metadata: &Metadata) {
    buf.put_u16(metadata.len() as u16);
    for (k, v) in metadata.iter() {
        buf.put_u8(k.len() as u8);
        buf.put_slice(k.as_bytes());
        buf.put_u16(v.len() as u16);
        buf.put_slice(v);
    }
}

fn with_metadata_flag(flags: u8, metadata: &Metadata) -> u8 {
    if metadata.is_empty() { flags & !flags::METADATA } else { flags | flags::METADATA }
}

/// Timeout on the wire: whole microseconds, at least 1 so that a tiny budget is not "none".
fn timeout_micros(timeout: Option<Duration>) -> u64 {
    match timeout {
        None => 0,
        Some(d) => u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1),
    }
}

/// Writes a request's length placeholder and header; append the payload, then `finish`.
///
/// `method` must be at most 65,535 bytes (callers validate it).
#[allow(clippy::too_many_arguments)]
pub fn encode_request_head(
    buf: &mut BytesMut,
    call_id: u64,
    flag_bits: u8,
    codec: u8,
    timeout: Option<Duration>,
    method: &[u8],
    metadata: &Metadata,
) -> PendingFrame {
    let f = with_metadata_flag(flag_bits, metadata);
    let p = PendingFrame::begin(buf, Kind::Request, f, call_id);
    buf.put_u8(codec);
    buf.put_u64(timeout_micros(timeout));
    buf.put_u16(method.len() as u16);
    buf.put_slice(method);
    if !metadata.is_empty() {
        put_metadata(buf, metadata);
    }
    p
}

/// Writes a response's length placeholder and header; append the payload, then `finish`.
pub fn encode_response_head(
    buf: &mut BytesMut,
    call_id: u64,
    flag_bits: u8,
    codec: u8,
    code: Code,
    message: &str,
    metadata: &Metadata,
) -> PendingFrame {
    let f = with_metadata_flag(flag_bits, metadata);
    let p = PendingFrame::begin(buf, Kind::Response, f, call_id);
    buf.put_u8(codec);
    buf.put_u8(code as u8);
    put_message(buf, message);
    if !metadata.is_empty() {
        put_metadata(buf, metadata);
    }
    p
}

fn finish_unbounded(p: PendingFrame, buf: &mut BytesMut) {
    // Connection-level frames are tiny; u32::MAX cannot be exceeded by them.
    let _ = p.finish(buf, u32::MAX);
}

/// Writes a CANCEL frame for `call_id`.
pub fn encode_cancel(buf: &mut BytesMut, call_id: u64) {
    let p = PendingFrame::begin(buf, Kind::Cancel, 0, call_id);
    finish_unbounded(p, buf);
}

/// Writes a PING frame with 8 opaque bytes.
pub fn encode_ping(buf: &mut BytesMut, data: [u8; 8]) {
    let p = PendingFrame::begin(buf, Kind::Ping, 0, 0);
    buf.put_slice(&data);
    finish_unbounded(p, buf);
}

/// Writes a PONG frame echoing a ping's bytes.
pub fn encode_pong(buf: &mut BytesMut, data: [u8; 8]) {
    let p = PendingFrame::begin(buf, Kind::Pong, 0, 0);
    buf.put_slice(&data);
    finish_unbounded(p, buf);
}

/// Writes a GOAWAY frame.
pub fn encode_goaway(buf: &mut BytesMut, goaway: &GoAway) {
    let p = PendingFrame::begin(buf, Kind::GoAway, 0, 0);
    buf.put_u64(goaway.last_call_id);
    buf.put_u8(goaway.code as u8);
    put_message(buf, &goaway.message);
    finish_unbounded(p, buf);
}

/// Writes a SETTINGS frame: the present settings as `(id, value)` pairs in id order.
pub fn encode_settings(buf: &mut BytesMut, settings: &Settings) {
    let p = PendingFrame::begin(buf, Kind::Settings, 0, 0);
    let pairs = [
        (Settings::PROTOCOL_VERSION, settings.protocol_version),
        (Settings::MAX_FRAME_SIZE, settings.max_frame_size),
        (Settings::MAX_CONCURRENT_CALLS, settings.max_concurrent_calls),
        (Settings::IDLE_TIMEOUT_MS, settings.idle_timeout_ms),
    ];
    for (id, value) in pairs {
        if let Some(v) = value {
            buf.put_u16(id);
            buf.put_u32(v);
        }
    }
    finish_unbounded(p, buf);
}

/// Writes any frame (convenience for tests and tools; the hot paths use the head functions).
pub fn encode_frame(buf: &mut BytesMut, frame: &Frame) {
    match frame {
        Frame::Request(r) => {
            let p = encode_request_head(buf, r.call_id, r.flags, r.codec, r.timeout, &r.method, &r.metadata);
            buf.put_slice(&r.payload);
            finish_unbounded(p, buf);
        }
        Frame::Response(r) => {
            let p = encode_response_head(buf, r.call_id, r.flags, r.codec, r.code, &r.message, &r.metadata);
            buf.put_slice(&r.payload);
            finish_unbounded(p, buf);
        }
        Frame::Cancel { call_id } => encode_cancel(buf, *call_id),
        Frame::Ping(d) => encode_ping(buf, *d),
        Frame::Pong(d) => encode_pong(buf, *d),
        Frame::GoAway(g) => encode_goaway(buf, g),
        Frame::Settings(s) => encode_settings(buf, s),
    }
}
