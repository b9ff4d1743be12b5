//! docs/PROTOCOL.md's worked example, read out of the document and checked against the
//! encoder and the decoder both ways, so the spec and the code cannot drift apart.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meshrpc::Codec;
use meshrpc::wire::{self, Frame, Metadata, Request, Response, Settings};
use serde::{Deserialize, Serialize};

const SPEC: &str = include_str!("../../docs/PROTOCOL.md");

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct AddArgs {
    a: i64,
    b: i64,
}

/// The bytes of the fenced block whose info string is `hex NAME` (comments after `#`).
fn hex_block(name: &str) -> Vec<u8> {
    let fence = format!("```hex {name}");
    let start = SPEC.find(&fence).unwrap_or_else(|| panic!("PROTOCOL.md has no ```hex {name} block"));
    let body = &SPEC[start + fence.len()..];
    let body = &body[..body.find("```").expect("the block is closed")];
    let mut out = Vec::new();
    for line in body.lines() {
        let data = line.split('#').next().unwrap_or("");
        for pair in data.split_whitespace() {
            out.push(
                u8::from_str_radix(pair, 16)
                    .unwrap_or_else(|_| panic!("{pair:?} in the {name} block is not a hex byte")),
            );
        }
    }
    out
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    wire::encode_frame(&mut b, frame);
    b.to_vec()
}

fn decode(bytes: &[u8]) -> Frame {
    let mut b = BytesMut::from(bytes);
    let f = wire::decode(&mut b, wire::DEFAULT_MAX_FRAME_SIZE).expect("valid").expect("complete");
    assert!(b.is_empty(), "exactly one frame");
    f
}

#[test]
fn the_worked_example_is_in_the_order_the_spec_promises() {
    let positions: Vec<usize> = ["preface", "settings", "request", "response"]
        .iter()
        .map(|n| SPEC.find(&format!("```hex {n}")).expect("block present"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert!(
        SPEC.rfind("## Worked example").unwrap() < positions[0],
        "the blocks are in the Worked example section"
    );
}

#[test]
fn preface_matches() {
    assert_eq!(hex_block("preface"), wire::preface(wire::VERSION).to_vec());
    assert_eq!(&hex_block("preface")[..4], &wire::MAGIC);
}

#[test]
fn client_settings_match_both_ways() {
    let frame = Frame::Settings(Settings {
        protocol_version: Some(1),
        max_frame_size: Some(wire::DEFAULT_MAX_FRAME_SIZE),
        ..Settings::default()
    });
    let doc = hex_block("settings");
    assert_eq!(encode(&frame), doc, "encoder output differs from PROTOCOL.md");
    assert_eq!(decode(&doc), frame, "decoder reads PROTOCOL.md differently");
}

#[test]
fn request_matches_both_ways() {
    let mut payload = BytesMut::new();
    Codec::MessagePack.encode(&AddArgs { a: 10, b: 5 }, &mut payload).unwrap();
    let frame = Frame::Request(Request {
        call_id: 1,
        flags: 0,
        codec: Codec::MessagePack.id(),
        timeout: Some(Duration::from_secs(1)),
        method: Bytes::from_static(b"Calculator.Add"),
        metadata: Metadata::new(),
        payload: payload.freeze(),
    });
    let doc = hex_block("request");
    assert_eq!(encode(&frame), doc, "encoder output differs from PROTOCOL.md");
    let Frame::Request(r) = decode(&doc) else { panic!("a request") };
    assert_eq!(Frame::Request(r.clone()), frame);
    assert_eq!(Codec::MessagePack.decode::<AddArgs>(&r.payload).unwrap(), AddArgs { a: 10, b: 5 });
}

#[test]
fn response_matches_both_ways() {
    let mut payload = BytesMut::new();
    Codec::MessagePack.encode(&15i64, &mut payload).unwrap();
    let frame = Frame::Response(Response {
        call_id: 1,
        flags: 0,
        codec: Codec::MessagePack.id(),
        code: meshrpc::Code::Ok,
        message: String::new(),
        metadata: Metadata::new(),
        payload: payload.freeze(),
    });
    let doc = hex_block("response");
    assert_eq!(encode(&frame), doc, "encoder output differs from PROTOCOL.md");
    let Frame::Response(r) = decode(&doc) else { panic!("a response") };
    assert_eq!(Frame::Response(r.clone()), frame);
    assert_eq!(Codec::MessagePack.decode::<i64>(&r.payload).unwrap(), 15);
}

#[test]
fn every_status_code_is_documented() {
    for code in meshrpc::Code::ALL {
        assert!(SPEC.contains(code.as_str()), "PROTOCOL.md does not mention {code}");
    }
}
