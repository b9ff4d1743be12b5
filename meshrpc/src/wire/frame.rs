//! [`Frame`] and its kinds: the decoded form of every message on the wire.

use std::time::Duration;

use bytes::Bytes;

use super::Metadata;
use crate::status::Code;

/// Frame flag bits (the second byte of every frame body). Unknown bits are ignored.
pub mod flags {
    /// A metadata block follows the kind header (requests and responses).
    /// Set by the encoder from the metadata itself; never stored in a decoded frame's flags.
    pub const METADATA: u8 = 0x01;
    /// Response: the call was refused before any handler ran; re-sending it is safe.
    pub const NOT_PROCESSED: u8 = 0x02;
    /// Request: the caller declares the method idempotent (safe to retry or hedge).
    pub const IDEMPOTENT: u8 = 0x04;
}

/// The kind byte that opens every frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A call: method, deadline, metadata, payload.
    Request = 0x01,
    /// The answer to a call: status, metadata, payload.
    Response = 0x02,
    /// The caller gave up on a call; the server drops its handler.
    Cancel = 0x03,
    /// Keepalive probe; the peer answers with a PONG carrying the same 8 bytes.
    Ping = 0x04,
    /// Answer to a PING.
    Pong = 0x05,
    /// The sender will accept no calls above `last_call_id`, then close.
    GoAway = 0x06,
    /// Connection settings (sent once by each side during the handshake).
    Settings = 0x07,
}

impl Kind {
    /// First byte of the kinds reserved for streams (0x10..=0x1f).
    pub const STREAM_RESERVED_START: u8 = 0x10;
    /// Last byte of the kinds reserved for streams.
    pub const STREAM_RESERVED_END: u8 = 0x1f;

    /// The kind for a byte, if it is one this version knows.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0x01 => Kind::Request,
            0x02 => Kind::Response,
            0x03 => Kind::Cancel,
            0x04 => Kind::Ping,
            0x05 => Kind::Pong,
            0x06 => Kind::GoAway,
            0x07 => Kind::Settings,
            _ => return None,
        })
    }

    /// Lower-case name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Response => "response",
            Kind::Cancel => "cancel",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
            Kind::GoAway => "goaway",
            Kind::Settings => "settings",
        }
    }
}

/// A request frame: one call of `Service.Method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The caller's id for this call, unique among its calls in flight; never 0.
    pub call_id: u64,
    /// Flag bits other than [`flags::METADATA`] (e.g. [`flags::IDEMPOTENT`]).
    pub flags: u8,
    /// The payload codec id (see [`crate::codec::Codec`]); the response uses the same.
    pub codec: u8,
    /// The caller's remaining time budget when it sent the frame; `None` = no deadline.
    pub timeout: Option<Duration>,
    /// `Service.Method`, UTF-8 (validated by the decoder).
    pub method: Bytes,
    /// Request metadata.
    pub metadata: Metadata,
    /// The encoded arguments.
    pub payload: Bytes,
}

impl Request {
    /// The method name as text.
    pub fn method_str(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or("")
    }
}

/// A response frame: the outcome of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The call id of the request this answers.
    pub call_id: u64,
    /// Flag bits other than [`flags::METADATA`] (e.g. [`flags::NOT_PROCESSED`]).
    pub flags: u8,
    /// The codec of the payload (the request's codec).
    pub codec: u8,
    /// The status code; [`Code::Ok`] means the payload holds the reply.
    pub code: Code,
    /// The status message (empty on success).
    pub message: String,
    /// Response metadata.
    pub metadata: Metadata,
    /// The encoded reply (empty on error).
    pub payload: Bytes,
}

/// A GOAWAY frame: calls above `last_call_id` were not and will not be processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// The highest call id the sender accepted (0 = none).
    pub last_call_id: u64,
    /// Why: [`Code::Ok`] for a graceful shutdown or idle close, an error code otherwise.
    pub code: Code,
    /// A human-readable reason.
    pub message: String,
}

/// SETTINGS: each side's limits, exchanged during the handshake.
///
/// On the wire a list of `(id: u16, value: u32)` pairs; unknown ids are ignored, so
/// later versions can add settings without breaking older peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Id 1: the protocol version the sender speaks.
    pub protocol_version: Option<u32>,
    /// Id 2: the largest frame (length prefix value) the sender accepts.
    pub max_frame_size: Option<u32>,
    /// Id 3: the most calls the sender (a server) runs at once on this connection.
    pub max_concurrent_calls: Option<u32>,
    /// Id 4: the sender closes the connection (with GOAWAY) after this many ms with no calls.
    pub idle_timeout_ms: Option<u32>,
}

impl Settings {
    /// Setting id of [`Settings::protocol_version`].
    pub const PROTOCOL_VERSION: u16 = 1;
    /// Setting id of [`Settings::max_frame_size`].
    pub const MAX_FRAME_SIZE: u16 = 2;
    /// Setting id of [`Settings::max_concurrent_calls`].
    pub const MAX_CONCURRENT_CALLS: u16 = 3;
    /// Setting id of [`Settings::idle_timeout_ms`].
    pub const IDLE_TIMEOUT_MS: u16 = 4;
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// See [`Request`].
    Request(Request),
    /// See [`Response`].
    Response(Response),
    /// The caller gave up on this call id.
    Cancel {
        /// The call to cancel.
        call_id: u64,
    },
    /// A keepalive probe with 8 opaque bytes.
    Ping([u8; 8]),
    /// The answer to a ping, echoing its bytes.
    Pong([u8; 8]),
    /// See [`GoAway`].
    GoAway(GoAway),
    /// See [`Settings`].
    Settings(Settings),
}
