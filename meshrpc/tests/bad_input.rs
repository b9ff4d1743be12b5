//! Bad input: each case gets a clear answer (or only its own connection is dropped),
//! and a call on a second connection proves the server keeps serving.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use meshrpc::wire::{self, Frame};
use meshrpc::{Code, Codec};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn expect_goaway(frame: Option<Frame>, code: Code, needle: &str) {
    match frame {
        Some(Frame::GoAway(g)) => {
            assert_eq!(g.code, code, "{}", g.message);
            assert!(g.message.contains(needle), "GOAWAY message {:?} should mention {needle:?}", g.message);
        }
        other => panic!("expected GOAWAY {code}, got {other:?}"),
    }
}

async fn expect_response(raw: &mut RawClient, call_id: u64, code: Code) -> wire::Response {
    match raw.next_frame().await {
        Some(Frame::Response(r)) => {
            assert_eq!(r.call_id, call_id);
            assert_eq!(r.code, code, "{}", r.message);
            r
        }
        other => panic!("expected a response to call {call_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn random_garbage_is_refused_and_the_server_keeps_serving() {
    let (server, _) = start(|b| b).await;
    let mut s = RawClient::connect_bare(server.local_addr()).await;
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let _ = s.write_all(&garbage).await;
    let mut buf = BytesMut::new();
    expect_goaway(read_frame(&mut s, &mut buf).await, Code::InvalidArgument, "magic");
    expect_closed(&mut s).await;
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn wrong_magic_is_refused_with_a_clear_goaway() {
    let (server, _) = start(|b| b).await;
    let mut s = RawClient::connect_bare(server.local_addr()).await;
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = BytesMut::new();
    expect_goaway(read_frame(&mut s, &mut buf).await, Code::InvalidArgument, "not a meshrpc connection");
    expect_closed(&mut s).await;
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn wrong_version_is_refused_with_unimplemented() {
    let (server, _) = start(|b| b).await;
    let mut s = RawClient::connect_bare(server.local_addr()).await;
    s.write_all(&wire::preface(7)).await.unwrap();
    let mut buf = BytesMut::new();
    expect_goaway(
        read_frame(&mut s, &mut buf).await,
        Code::Unimplemented,
        "protocol version 7 is not supported",
    );
    expect_closed(&mut s).await;
    // And the typed client reports it clearly.
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_truncated_frame_drops_only_that_connection() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    let mut frame = BytesMut::new();
    wire::encode_frame(&mut frame, &Frame::Cancel { call_id: 1 });
    raw.send(&[0, 0, 0, 100]).await; // announces 100 bytes
    raw.send(&frame[4..]).await; // sends 10
    raw.stream.shutdown().await.unwrap(); // and hangs up mid-frame
    expect_closed(&mut raw.stream).await;
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_four_gib_length_prefix_is_refused_without_allocating() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.send(&[0xff, 0xff, 0xff, 0xff, 0x01, 0x00]).await;
    expect_goaway(
        raw.next_frame().await,
        Code::ResourceExhausted,
        "exceeds the maximum frame size of 16777216",
    );
    expect_closed(&mut raw.stream).await;
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn an_oversized_frame_lets_calls_in_flight_on_that_connection_finish() {
    let (server, _) = start(|b| b.max_frame_size(64 * 1024)).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    assert_eq!(raw.settings.max_frame_size, Some(64 * 1024));
    raw.request(1, Codec::MessagePack.id(), "Test.Sleep", msgpack(&SleepArgs { ms: 200 })).await;
    raw.send(&(200_000u32).to_be_bytes()).await;
    expect_goaway(raw.next_frame().await, Code::ResourceExhausted, "exceeds the maximum frame size of 65536");
    let r = expect_response(&mut raw, 1, Code::Ok).await;
    assert_eq!(
        Codec::MessagePack.decode::<u64>(&r.payload).unwrap(),
        200,
        "the call in flight still completed"
    );
    expect_closed(&mut raw.stream).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn unknown_method_gets_not_found_on_a_connection_that_keeps_working() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.request(1, Codec::Json.id(), "Nope.Missing", b"{}".to_vec()).await;
    let r = expect_response(&mut raw, 1, Code::NotFound).await;
    assert!(r.message.contains("Nope.Missing"));
    assert_eq!(r.codec, Codec::Json.id());
    raw.request(2, Codec::Json.id(), "Calculator.Add", br#"{"a":1,"b":2}"#.to_vec()).await;
    let r = expect_response(&mut raw, 2, Code::Ok).await;
    assert_eq!(&r.payload[..], b"3");
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn an_undecodable_payload_gets_invalid_argument_naming_the_decode_error() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.request(1, Codec::MessagePack.id(), "Calculator.Add", vec![0xc1, 0xff, 0x00]).await;
    let r = expect_response(&mut raw, 1, Code::InvalidArgument).await;
    assert!(
        r.message.contains("Calculator.Add") && r.message.contains("msgpack decoding failed"),
        "{}",
        r.message
    );
    raw.request(2, Codec::Json.id(), "Calculator.Add", br#"{"a":"ten","b":5}"#.to_vec()).await;
    let r = expect_response(&mut raw, 2, Code::InvalidArgument).await;
    assert!(r.message.contains("json decoding failed: invalid type"), "{}", r.message);
    raw.request(3, 0x07, "Calculator.Add", vec![]).await;
    let r = expect_response(&mut raw, 3, Code::Unimplemented).await;
    assert!(r.message.contains("unknown (0x07)"), "{}", r.message);
    raw.request(4, Codec::Json.id(), "Calculator.Add", br#"{"a":1,"b":1}"#.to_vec()).await;
    assert_eq!(&expect_response(&mut raw, 4, Code::Ok).await.payload[..], b"2");
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_handler_panic_answers_internal_and_the_connection_keeps_serving() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.request(1, Codec::MessagePack.id(), "Test.Panic", msgpack(&())).await;
    let r = expect_response(&mut raw, 1, Code::Internal).await;
    assert!(r.message.contains("boom on purpose"));
    raw.request(2, Codec::Json.id(), "Calculator.Add", br#"{"a":2,"b":2}"#.to_vec()).await;
    assert_eq!(&expect_response(&mut raw, 2, Code::Ok).await.payload[..], b"4");
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_peer_that_connects_and_sends_nothing_is_closed_after_the_handshake_timeout() {
    let (server, _) = start(|b| b.handshake_timeout(Duration::from_millis(300))).await;
    let mut silent = RawClient::connect_bare(server.local_addr()).await;
    assert_serving(server.local_addr()).await; // served while the silent one waits
    let t0 = tokio::time::Instant::now();
    expect_closed(&mut silent).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn a_client_that_speaks_before_settings_is_refused() {
    let (server, _) = start(|b| b).await;
    let mut s = RawClient::connect_bare(server.local_addr()).await;
    s.write_all(&wire::preface(wire::VERSION)).await.unwrap();
    let mut b = BytesMut::new();
    wire::encode_frame(&mut b, &Frame::Ping([0; 8]));
    s.write_all(&b).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(read_frame(&mut s, &mut buf).await, Some(Frame::Settings(_))));
    expect_goaway(read_frame(&mut s, &mut buf).await, Code::InvalidArgument, "first frame must be SETTINGS");
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn frames_a_client_may_not_send_are_a_protocol_error() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    let mut stream_kind = BytesMut::new();
    wire::encode_frame(&mut stream_kind, &Frame::Cancel { call_id: 5 });
    stream_kind[4] = 0x10;
    raw.send(&stream_kind).await;
    expect_goaway(raw.next_frame().await, Code::Unimplemented, "reserved for streams");
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test]
async fn pings_are_answered_with_the_same_bytes() {
    let (server, _) = start(|b| b).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.send_frame(&Frame::Ping(*b"12345678")).await;
    assert_eq!(raw.next_frame().await, Some(Frame::Pong(*b"12345678")));
    server.shutdown().await;
    assert_no_stray_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_held_back_then_dropped_while_others_are_served() {
    let (server, _) = start(|b| b.write_stall_timeout(Duration::from_millis(1500))).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    // Push 32 MiB of echo requests (64 KiB each) and never read a reply.
    let payload = msgpack(&EchoArgs { data: vec![7u8; 64 * 1024].into() });
    let pusher = tokio::spawn(async move {
        let mut sent = 0usize;
        for id in 1..=512u64 {
            let mut b = BytesMut::new();
            let head = wire::encode_request_head(
                &mut b,
                id,
                0,
                Codec::MessagePack.id(),
                None,
                b"Echo.Echo",
                &wire::Metadata::new(),
            );
            b.extend_from_slice(&payload);
            head.finish(&mut b, u32::MAX).unwrap();
            match tokio::time::timeout(Duration::from_secs(60), raw.stream.write_all(&b)).await {
                Ok(Ok(())) => sent += b.len(),
                Ok(Err(_)) => return (sent, true), // the server dropped us
                Err(_) => return (sent, false),
            }
        }
        (sent, false)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_serving(server.local_addr()).await;
    // Backpressure: the server stopped reading long before 32 MiB, then dropped the
    // stalled peer after the write-stall timeout (1.5 s) plus the flush wait (1.5 s).
    let (sent, dropped) = tokio::time::timeout(Duration::from_secs(10), pusher)
        .await
        .expect("the server dropped the stalled peer within 10 s")
        .unwrap();
    assert!(dropped, "the pusher ended because the server closed the connection");
    assert!(sent < 24 * 1024 * 1024, "the server kept reading {sent} bytes from a peer that reads nothing");
    assert_serving(server.local_addr()).await;
    server.shutdown().await;
    assert_no_stray_panics();
}

/// A client that reads a large reply slowly but steadily is making progress: the
/// write-stall timeout (200 ms here) does not drop it, though writing the reply takes
/// several times that (more than the loopback's socket buffers hold).
#[tokio::test]
async fn a_client_reading_a_large_reply_slowly_is_not_dropped_as_stalled() {
    const SIZE: usize = 12 << 20;
    let (server, _) = start(|b| b.write_stall_timeout(Duration::from_millis(200))).await;
    let mut raw = RawClient::connect(server.local_addr()).await;
    raw.request(
        1,
        Codec::MessagePack.id(),
        "Echo.Echo",
        msgpack(&EchoArgs { data: meshrpc::Blob::from(vec![9; SIZE]) }),
    )
    .await;
    // Read at most 1 MiB every 100 ms: the reply takes over a second to come out.
    let (started, mut buf) = (tokio::time::Instant::now(), BytesMut::new());
    let reply = loop {
        if let Some(frame) = wire::decode(&mut buf, u32::MAX).expect("a valid frame") {
            break frame;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut chunk = vec![0; 1 << 20];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.stream.read(&mut chunk))
            .await
            .expect("the server keeps writing")
            .expect("read");
        assert!(n > 0, "the server closed the connection after {:?}", started.elapsed());
        buf.extend_from_slice(&chunk[..n]);
    };
    let Frame::Response(r) = reply else { panic!("expected the reply, got {reply:?}") };
    assert_eq!(r.code, Code::Ok, "{}", r.message);
    let echoed: meshrpc::Blob = rmp_serde::from_slice(&r.payload).expect("a Blob");
    assert_eq!(echoed.len(), SIZE);
    assert!(started.elapsed() > Duration::from_millis(600), "the reply came out in {:?}", started.elapsed());
    server.shutdown().await;
}
