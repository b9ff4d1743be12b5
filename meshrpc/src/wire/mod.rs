//! The wire protocol: frame layout, encoding and decoding, limits. No I/O.
//!
//! `docs/PROTOCOL.md` is the normative spec; this module is its implementation and a
//! test (`tests/protocol_doc.rs`) checks the document's worked example against it.
//!
//! Decoding follows "check, then parse": [`check`] looks only at the length prefix
//! (rejecting an oversized frame before any buffer is reserved) and says whether a
//! whole frame is buffered; [`decode`] then parses it into a [`Frame`] whose byte
//! fields are zero-copy [`bytes::Bytes`] slices of the read buffer.

mod decode;
mod encode;
mod error;
mod frame;
mod metadata;

pub use decode::{Decoded, check, decode, decode_frame};
pub use encode::{
    FrameSizeExceeded, PendingFrame, encode_cancel, encode_frame, encode_goaway, encode_ping, encode_pong,
    encode_request_head, encode_response_head, encode_settings,
};
pub use error::WireError;
pub use frame::{Frame, GoAway, Kind, Request, Response, Settings, flags};
pub use metadata::Metadata;

/// The four bytes every connection starts with: ASCII `MRPC`.
pub const MAGIC: [u8; 4] = *b"MRPC";
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// Length of the client's preface: [`MAGIC`] then the version as a big-endian u16.
pub const PREFACE_LEN: usize = 6;
/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;
/// Bytes every frame body starts with: kind (1), flags (1), call id (8).
pub const COMMON_HEADER: usize = 10;
/// The default (and recommended) maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024 * 1024;
/// The smallest maximum frame size a peer may advertise: 16 KiB.
pub const MIN_MAX_FRAME_SIZE: u32 = 16 * 1024;
/// The longest status or GOAWAY message carried; longer ones are cut at a char boundary.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// The client's preface: magic and version.
pub fn preface(version: u16) -> [u8; PREFACE_LEN] {
    let v = version.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

#[cfg(test)]
mod tests;

/// The body shared by the fuzz target (`meshrpc/fuzz`) and the property tests: decode
/// arbitrary bytes as a stream of frames; every frame that decodes must re-encode to
/// bytes that decode to the same frame. Panics only on a real bug.
#[doc(hidden)]
pub fn fuzz_decode_stream(data: &[u8]) {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(frame)) = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE) {
        let mut out = bytes::BytesMut::new();
        encode_frame(&mut out, &frame);
        let again = decode(&mut out, u32::MAX).expect("re-encoded frame decodes");
        assert_eq!(again.as_ref(), Some(&frame), "frame survives a round trip");
        assert!(out.is_empty(), "re-encoding produced exactly one frame");
    }
}
