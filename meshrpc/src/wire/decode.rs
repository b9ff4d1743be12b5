//! Frame decoding: [`check`] the length prefix, then [`decode_frame`] the body.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{Frame, GoAway, Kind, Request, Response, Settings, flags};
use super::{COMMON_HEADER, LENGTH_PREFIX, Metadata, WireError};
use crate::status::Code;

/// What [`check`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame of this many bytes (length prefix included) is buffered.
    Complete(usize),
    /// More bytes are needed; the whole frame will be this many bytes once known
    /// (`None` while not even the length prefix has arrived).
    Incomplete(Option<usize>),
}

/// Looks at the length prefix only: rejects frames over `max_frame_size` or under the
/// common header before anything is allocated, and says whether a whole frame is here.
pub fn check(buf: &[u8], max_frame_size: u32) -> Result<Decoded, WireError> {
    if buf.len() < LENGTH_PREFIX {
        return Ok(Decoded::Incomplete(None));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > max_frame_size {
        return Err(WireError::FrameTooLarge { len: u64::from(len), max: max_frame_size });
    }
    if (len as usize) < COMMON_HEADER {
        return Err(WireError::FrameTooShort(len));
    }
    let total = LENGTH_PREFIX + len as usize;
    if buf.len() < total { Ok(Decoded::Incomplete(Some(total))) } else { Ok(Decoded::Complete(total)) }
}

/// Takes one whole frame off the front of `buf` and decodes it; `Ok(None)` if the
/// frame is not complete yet (the buffer is left untouched).
pub fn decode(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, WireError> {
    match check(buf, max_frame_size)? {
        Decoded::Incomplete(_) => Ok(None),
        Decoded::Complete(total) => {
            let mut frame = buf.split_to(total).freeze();
            frame.advance(LENGTH_PREFIX);
            decode_frame(frame).map(Some)
        }
    }
}

struct Reader {
    b: Bytes,
    kind: &'static str,
}

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.b.remaining() < n { Err(WireError::Malformed { kind: self.kind, what }) } else { Ok(()) }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.need(1, what)?;
        Ok(self.b.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.need(2, what)?;
        Ok(self.b.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.need(4, what)?;
        Ok(self.b.get_u32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.need(8, what)?;
        Ok(self.b.get_u64())
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, WireError> {
        self.need(n, what)?;
        Ok(self.b.split_to(n))
    }
    fn utf8(&mut self, n: usize, what: &'static str) -> Result<Bytes, WireError> {
        let b = self.bytes(n, what)?;
        std::str::from_utf8(&b).map_err(|_| WireError::Malformed { kind: self.kind, what })?;
        Ok(b)
    }
    fn message(&mut self) -> Result<String, WireError> {
        let n = self.u16("message length")? as usize;
        let b = self.utf8(n, "message is not valid UTF-8 or runs past the frame")?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    fn metadata(&mut self) -> Result<Metadata, WireError> {
        let count = self.u16("metadata count")?;
        let mut md = Metadata::new();
        for _ in 0..count {
            let kl = self.u8("metadata key length")? as usize;
            let k = self.utf8(kl, "metadata key is not valid UTF-8 or runs past the frame")?;
            let vl = self.u16("metadata value length")? as usize;
            let v = self.bytes(vl, "metadata value runs past the frame")?;
            md.push_unchecked(String::from_utf8_lossy(&k).into_owned(), v);
        }
        Ok(md)
    }
    fn end(&self, what: &'static str) -> Result<(), WireError> {
        if self.b.has_remaining() { Err(WireError::Malformed { kind: self.kind, what }) } else { Ok(()) }
    }
}

fn require_call_id(kind: Kind, call_id: u64, nonzero: bool) -> Result<(), WireError> {
    match (nonzero, call_id == 0) {
        (true, true) => Err(WireError::Malformed {
            kind: kind.name(),
            what: "call id 0 is reserved for connection-level frames",
        }),
        (false, false) => Err(WireError::Malformed {
            kind: kind.name(),
            what: "connection-level frame must have call id 0",
        }),
        _ => Ok(()),
    }
}

/// Decodes one frame body (everything after the length prefix).
pub fn decode_frame(body: Bytes) -> Result<Frame, WireError> {
    let mut r = Reader { b: body, kind: "frame" };
    r.need(COMMON_HEADER, "shorter than the 10-byte frame header")?;
    let kind_byte = r.b.get_u8();
    let flag_bits = r.b.get_u8();
    let call_id = r.b.get_u64();
    let kind = match Kind::from_u8(kind_byte) {
        Some(k) => k,
        None if (Kind::STREAM_RESERVED_START..=Kind::STREAM_RESERVED_END).contains(&kind_byte) => {
            return Err(WireError::ReservedKind(kind_byte));
        }
        None => return Err(WireError::UnknownKind(kind_byte)),
    };
    r.kind = kind.name();
    let has_md = flag_bits & flags::METADATA != 0;
    let stored_flags = flag_bits & !flags::METADATA;
    match kind {
        Kind::Request => {
            require_call_id(kind, call_id, true)?;
            let codec = r.u8("codec")?;
            let micros = r.u64("timeout")?;
            let ml = r.u16("method length")? as usize;
            let method = r.utf8(ml, "method is not valid UTF-8 or runs past the frame")?;
            let metadata = if has_md { r.metadata()? } else { Metadata::new() };
            let timeout = (micros != 0).then(|| Duration::from_micros(micros));
            Ok(Frame::Request(Request {
                call_id,
                flags: stored_flags,
                codec,
                timeout,
                method,
                metadata,
                payload: r.b,
            }))
        }
        Kind::Response => {
            require_call_id(kind, call_id, true)?;
            let codec = r.u8("codec")?;
            let code = Code::from_u8(r.u8("status code")?);
            let message = r.message()?;
            let metadata = if has_md { r.metadata()? } else { Metadata::new() };
            Ok(Frame::Response(Response {
                call_id,
                flags: stored_flags,
                codec,
                code,
                message,
                metadata,
                payload: r.b,
            }))
        }
        Kind::Cancel => {
            require_call_id(kind, call_id, true)?;
            r.end("cancel frame has a body")?;
            Ok(Frame::Cancel { call_id })
        }
        Kind::Ping | Kind::Pong => {
            require_call_id(kind, call_id, false)?;
            let b = r.bytes(8, "ping/pong must carry exactly 8 bytes")?;
            r.end("ping/pong must carry exactly 8 bytes")?;
            let mut data = [0u8; 8];
            data.copy_from_slice(&b);
            Ok(if kind == Kind::Ping { Frame::Ping(data) } else { Frame::Pong(data) })
        }
        Kind::GoAway => {
            require_call_id(kind, call_id, false)?;
            let last_call_id = r.u64("last call id")?;
            let code = Code::from_u8(r.u8("status code")?);
            let message = r.message()?;
            Ok(Frame::GoAway(GoAway { last_call_id, code, message }))
        }
        Kind::Settings => {
            require_call_id(kind, call_id, false)?;
            if r.b.remaining() % 6 != 0 {
                return Err(WireError::Malformed {
                    kind: "settings",
                    what: "body is not a whole number of 6-byte (id, value) pairs",
                });
            }
            let mut s = Settings::default();
            while r.b.has_remaining() {
                let id = r.u16("setting id")?;
                let v = r.u32("setting value")?;
                match id {
                    Settings::PROTOCOL_VERSION => s.protocol_version = Some(v),
                    Settings::MAX_FRAME_SIZE => s.max_frame_size = Some(v),
                    Settings::MAX_CONCURRENT_CALLS => s.max_concurrent_calls = Some(v),
                    Settings::IDLE_TIMEOUT_MS => s.idle_timeout_ms = Some(v),
                    _ => {} // unknown settings are ignored by design
                }
            }
            Ok(Frame::Settings(s))
        }
    }
}
