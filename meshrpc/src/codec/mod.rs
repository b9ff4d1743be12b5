//! Payload codecs: how arguments and replies become bytes.
//!
//! | id | codec | used by |
//! |---|---|---|
//! | `0x01` | [`Codec::MessagePack`] (default): structs as maps, bytes as `bin` | Rust clients |
//! | `0x02` | [`Codec::Json`]: bytes as base64 strings | CLI, gateway, other languages |
//! | `0x03` | [`Codec::Binary`]: positional (postcard), Rust-only, fastest | Rust clients that opt in |
//!
//! The server always answers in the codec it was called with. [`Blob`] is the byte
//! type that maps to MessagePack `bin` and to a base64 JSON string.

mod blob;

use bytes::{BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

pub use blob::Blob;

/// A payload codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack with structs as maps (the default).
    #[default]
    MessagePack,
    /// JSON (UTF-8), bytes as base64.
    Json,
    /// Positional binary ([postcard](https://docs.rs/postcard)): compact and fast, but
    /// both sides must use the same Rust types (field order matters, names do not travel).
    Binary,
}

/// A payload did not encode or decode.
#[derive(Debug, thiserror::Error)]
#[error("{codec} {op} failed: {message}")]
pub struct CodecError {
    codec: &'static str,
    op: &'static str,
    message: String,
}

impl Codec {
    /// The codec's id byte on the wire.
    pub fn id(self) -> u8 {
        match self {
            Codec::MessagePack => 0x01,
            Codec::Json => 0x02,
            Codec::Binary => 0x03,
        }
    }

    /// The codec for an id byte, if this build supports it.
    pub fn from_id(id: u8) -> Option<Codec> {
        match id {
            0x01 => Some(Codec::MessagePack),
            0x02 => Some(Codec::Json),
            0x03 => Some(Codec::Binary),
            _ => None,
        }
    }

    /// A short name: `msgpack` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::MessagePack => "msgpack",
            Codec::Json => "json",
            Codec::Binary => "binary",
        }
    }

    /// Serializes `value` onto the end of `out`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T, out: &mut BytesMut) -> Result<(), CodecError> {
        let res = match self {
            Codec::MessagePack => {
                rmp_serde::encode::write_named(&mut out.writer(), value).map_err(|e| e.to_string())
            }
            Codec::Json => serde_json::to_writer(out.writer(), value).map_err(|e| e.to_string()),
            Codec::Binary => postcard::to_io(value, out.writer()).map(drop).map_err(|e| e.to_string()),
        };
        res.map_err(|message| CodecError { codec: self.name(), op: "encoding", message })
    }

    /// Deserializes a whole payload.
    pub fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, CodecError> {
        let res = match self {
            Codec::MessagePack => rmp_serde::from_slice(payload).map_err(|e| e.to_string()),
            Codec::Json => serde_json::from_slice(payload).map_err(|e| e.to_string()),
            Codec::Binary => postcard::from_bytes(payload).map_err(|e| e.to_string()),
        };
        res.map_err(|message| CodecError { codec: self.name(), op: "decoding", message })
    }
}

/// The human-readable name of any codec id, known or not (for error messages).
pub fn describe_id(id: u8) -> String {
    match Codec::from_id(id) {
        Some(c) => format!("{} (0x{id:02x})", c.name()),
        None => format!("unknown (0x{id:02x})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Args {
        a: i64,
        b: i64,
        data: Blob,
    }

    #[test]
    fn msgpack_writes_structs_as_maps_and_bytes_as_bin() {
        let mut out = BytesMut::new();
        let v = Args { a: 10, b: 5, data: Blob::from(&b"hi"[..]) };
        Codec::MessagePack.encode(&v, &mut out).unwrap();
        // fixmap(3), "a", 10, "b", 5, "data", bin8(2) "hi"
        let expected: &[u8] =
            &[0x83, 0xa1, b'a', 0x0a, 0xa1, b'b', 0x05, 0xa4, b'd', b'a', b't', b'a', 0xc4, 0x02, b'h', b'i'];
        assert_eq!(&out[..], expected);
        assert_eq!(Codec::MessagePack.decode::<Args>(&out).unwrap(), v);
    }

    #[test]
    fn json_writes_bytes_as_base64() {
        let mut out = BytesMut::new();
        let v = Args { a: 10, b: 5, data: Blob::from(&b"hi"[..]) };
        Codec::Json.encode(&v, &mut out).unwrap();
        assert_eq!(&out[..], br#"{"a":10,"b":5,"data":"aGk="}"#);
        assert_eq!(Codec::Json.decode::<Args>(&out).unwrap(), v);
    }

    #[test]
    fn decode_errors_name_codec_and_cause() {
        let err = Codec::Json.decode::<Args>(b"{\"a\":1}").unwrap_err().to_string();
        assert!(err.starts_with("json decoding failed: missing field"), "{err}");
        let err = Codec::MessagePack.decode::<Args>(&[0xc1]).unwrap_err().to_string();
        assert!(err.starts_with("msgpack decoding failed"), "{err}");
    }

    #[test]
    fn ids_round_trip() {
        for c in [Codec::MessagePack, Codec::Json, Codec::Binary] {
            assert_eq!(Codec::from_id(c.id()), Some(c));
        }
        assert_eq!(Codec::from_id(0x04), None);
        assert_eq!(describe_id(3), "binary (0x03)");
        assert_eq!(describe_id(9), "unknown (0x09)");
    }

    #[test]
    fn binary_is_positional_and_round_trips() {
        let mut out = BytesMut::new();
        let v = Args { a: 10, b: 5, data: Blob::from(&b"hi"[..]) };
        Codec::Binary.encode(&v, &mut out).unwrap();
        // zigzag varints 10 → 20, 5 → 10, then a length-prefixed byte string.
        assert_eq!(&out[..], &[20, 10, 2, b'h', b'i']);
        assert_eq!(Codec::Binary.decode::<Args>(&out).unwrap(), v);
        let err = Codec::Binary.decode::<Args>(&[20]).unwrap_err().to_string();
        assert!(err.starts_with("binary decoding failed"), "{err}");
    }
}
