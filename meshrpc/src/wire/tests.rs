use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::status::Code;

fn metadata_strategy() -> impl Strategy<Value = Metadata> {
    prop::collection::vec(("[a-z\\-]{1,20}", prop::collection::vec(any::<u8>(), 0..40)), 0..4).prop_map(
        |pairs| {
            let mut md = Metadata::new();
            for (k, v) in pairs {
                md.insert(k, v).expect("small pair fits");
            }
            md
        },
    )
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    let flag_bits = any::<u8>().prop_map(|f| f & !flags::METADATA);
    let request = (
        1u64..,
        flag_bits.clone(),
        any::<u8>(),
        prop::option::of(1u64..10_000_000_000),
        "[A-Za-z]{1,12}\\.[A-Za-z]{1,12}",
        metadata_strategy(),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(call_id, flags, codec, t, method, metadata, payload)| {
            Frame::Request(Request {
                call_id,
                flags,
                codec,
                timeout: t.map(Duration::from_micros),
                method: Bytes::from(method),
                metadata,
                payload: Bytes::from(payload),
            })
        });
    let response = (
        1u64..,
        flag_bits,
        any::<u8>(),
        0u8..17,
        ".{0,40}",
        metadata_strategy(),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(call_id, flags, codec, code, message, metadata, payload)| {
            Frame::Response(Response {
                call_id,
                flags,
                codec,
                code: Code::from_u8(code),
                message,
                metadata,
                payload: Bytes::from(payload),
            })
        });
    let settings = (
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(a, b, c, d)| {
            Frame::Settings(Settings {
                protocol_version: a,
                max_frame_size: b,
                max_concurrent_calls: c,
                idle_timeout_ms: d,
            })
        });
    prop_oneof![
        request,
        response,
        (1u64..).prop_map(|call_id| Frame::Cancel { call_id }),
        any::<[u8; 8]>().prop_map(Frame::Ping),
        any::<[u8; 8]>().prop_map(Frame::Pong),
        (any::<u64>(), 0u8..17, ".{0,40}").prop_map(|(last_call_id, c, message)| {
            Frame::GoAway(GoAway { last_call_id, code: Code::from_u8(c), message })
        }),
        settings,
    ]
}

fn encoded(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(&mut buf, frame);
    buf
}

proptest! {
    #[test]
    fn frames_round_trip(frames in prop::collection::vec(frame_strategy(), 1..5)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            encode_frame(&mut buf, f);
        }
        for f in &frames {
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).expect("valid").expect("complete");
            prop_assert_eq!(&got, f);
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_strict_prefix_is_incomplete(frame in frame_strategy()) {
        let full = encoded(&frame);
        for n in 0..full.len() {
            let mut prefix = BytesMut::from(&full[..n]);
            prop_assert!(matches!(check(&prefix, DEFAULT_MAX_FRAME_SIZE), Ok(Decoded::Incomplete(_))));
            prop_assert_eq!(decode(&mut prefix, DEFAULT_MAX_FRAME_SIZE), Ok(None));
            prop_assert_eq!(prefix.len(), n, "an incomplete frame leaves the buffer untouched");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_decode_stream(&data);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_prefix_never_panic(body in prop::collection::vec(any::<u8>(), 10..300)) {
        let mut data = (body.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(&body);
        fuzz_decode_stream(&data);
    }
}

#[test]
fn oversized_length_is_rejected_before_allocating() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x01][..]);
    let err = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap_err();
    assert_eq!(err, WireError::FrameTooLarge { len: 0xffff_ffff, max: DEFAULT_MAX_FRAME_SIZE });
    assert_eq!(err.to_status().code(), Code::ResourceExhausted);
    assert!(buf.capacity() < 1024, "no buffer was reserved for the frame");
}

#[test]
fn bad_frames_are_typed_errors() {
    let mut short = BytesMut::from(&[0, 0, 0, 3, 1, 2, 3][..]);
    assert_eq!(decode(&mut short, 1 << 20), Err(WireError::FrameTooShort(3)));
    let mut unknown = encoded(&Frame::Cancel { call_id: 7 });
    unknown[4] = 0x42;
    assert_eq!(decode(&mut unknown, 1 << 20), Err(WireError::UnknownKind(0x42)));
    let mut stream = encoded(&Frame::Cancel { call_id: 7 });
    stream[4] = 0x10;
    assert_eq!(decode(&mut stream, 1 << 20), Err(WireError::ReservedKind(0x10)));
    let mut zero_id = encoded(&Frame::Cancel { call_id: 7 });
    zero_id[5..14].copy_from_slice(&[0; 9]);
    assert!(matches!(decode(&mut zero_id, 1 << 20), Err(WireError::Malformed { .. })));
}

#[test]
fn finish_removes_a_frame_over_the_limit() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let p = encode_request_head(&mut buf, 1, 0, 1, None, b"A.B", &Metadata::new());
    buf.extend_from_slice(&[0u8; 100]);
    let err = p.finish(&mut buf, 50).unwrap_err();
    assert_eq!(err.max, 50);
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn tiny_timeouts_stay_nonzero() {
    let f = Frame::Request(Request {
        call_id: 1,
        flags: 0,
        codec: 1,
        timeout: Some(Duration::from_nanos(10)),
        method: Bytes::from_static(b"A.B"),
        metadata: Metadata::new(),
        payload: Bytes::new(),
    });
    let mut buf = encoded(&f);
    let Some(Frame::Request(r)) = decode(&mut buf, 1 << 20).unwrap() else { panic!("request") };
    assert_eq!(r.timeout, Some(Duration::from_micros(1)));
}
