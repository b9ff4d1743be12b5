//! [`WireError`]: why bytes are not a valid frame.

use crate::status::{Code, Status};

/// Why a buffer does not hold a valid frame. Every variant is a connection-level error:
/// the receiver answers with a GOAWAY carrying [`WireError::to_status`], then closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix exceeds the receiver's maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge {
        /// The length the prefix announced.
        len: u64,
        /// The receiver's limit.
        max: u32,
    },
    /// The length prefix is shorter than the common header.
    #[error("frame length {0} is shorter than the 10-byte frame header")]
    FrameTooShort(u32),
    /// The kind byte names no known frame kind.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The kind is reserved for streams, which this version does not implement.
    #[error("frame kind 0x{0:02x} is reserved for streams and not supported by protocol version 1")]
    ReservedKind(u8),
    /// A field runs past the end of the frame or is otherwise inconsistent.
    #[error("malformed {kind} frame: {what}")]
    Malformed {
        /// The frame kind being decoded.
        kind: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// The connection did not start with the `MRPC` magic bytes.
    #[error("not a meshrpc connection: expected magic bytes \"MRPC\", got {0:02x?}")]
    BadMagic([u8; 4]),
    /// The peer speaks a protocol version this side does not.
    #[error("protocol version {got} is not supported; this side speaks version {supported}")]
    UnsupportedVersion {
        /// The version the peer sent.
        got: u16,
        /// The version this side speaks.
        supported: u16,
    },
}

impl WireError {
    /// The status sent in the GOAWAY that answers this error.
    pub fn to_status(&self) -> Status {
        let code = match self {
            WireError::FrameTooLarge { .. } => Code::ResourceExhausted,
            WireError::UnsupportedVersion { .. } | WireError::ReservedKind(_) => Code::Unimplemented,
            _ => Code::InvalidArgument,
        };
        Status::new(code, format!("protocol error: {self}"))
    }
}
