//! Server memory, measured as the RSS of a separate `meshrpc demo --listen` process:
//! per idle connection, and under a client that pushes requests and never reads.
//! Both raise the open-files soft limit to the hard limit (children inherit it).

mod support;

use std::time::Duration;

use bytes::BytesMut;
use meshrpc::wire::{self, Settings};
use support::listen as start_server;
use support::peer::rss;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn raise_fd_limit(at_least: u64) {
    let got = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(got >= at_least, "RLIMIT_NOFILE can only go to {got}; this test needs {at_least}");
}

/// Opens a connection and completes the handshake (preface + SETTINGS, SETTINGS back).
/// A connection reset while 500 are being opened at once is tried again (twice at most):
/// this test measures memory, and a loaded loopback can drop one in a burst.
async fn handshaken(addr: &str) -> TcpStream {
    let mut last = None;
    for _ in 0..3 {
        match try_handshake(addr).await {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
    }
    panic!("three handshakes with {addr} failed; the last: {last:?}");
}

async fn try_handshake(addr: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    let mut hello = BytesMut::new();
    hello.extend_from_slice(&wire::preface(wire::VERSION));
    wire::encode_settings(
        &mut hello,
        &Settings { max_frame_size: Some(wire::DEFAULT_MAX_FRAME_SIZE), ..Settings::default() },
    );
    s.write_all(&hello).await?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = wire::decode(&mut buf, u32::MAX).expect("valid frame") {
            assert!(matches!(f, wire::Frame::Settings(_)), "SETTINGS first, got {f:?}");
            return Ok(s);
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed during handshake"));
        }
    }
}

async fn assert_serving(addr: &str) {
    let calc = meshrpc::demo::CalculatorClient::connect(addr).await.expect("a new connection is accepted");
    assert_eq!(calc.add(40, 2).await.expect("a call succeeds"), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_at_most_32_kib_of_server_rss() {
    const CONNECTIONS: usize = 10_000;
    raise_fd_limit(CONNECTIONS as u64 + 1_000);
    let (server, addr) = start_server();
    let pid = server.0.id();
    // One connection first, so that one-off start-up allocations are in the baseline.
    let warm = handshaken(&addr).await;
    assert_serving(&addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss(pid);
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS / 500 {
        let batch = (0..500).map(|_| handshaken(&addr));
        conns.extend(futures_util::future::join_all(batch).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(pid);
    let per_conn = (after.saturating_sub(before)) as f64 / CONNECTIONS as f64;
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB with {CONNECTIONS} idle connections: {:.1} KiB per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per_conn / 1024.0
    );
    assert_serving(&addr).await; // still serving with 10,000 idle connections open
    assert!(per_conn <= 32.0 * 1024.0, "{:.1} KiB of server RSS per idle connection", per_conn / 1024.0);
    drop((conns, warm));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_grow_the_server_past_64_mib() {
    const PAYLOAD: usize = 64 * 1024;
    const TOTAL: usize = 1 << 30; // the client tries to push 1 GiB
    let (server, addr) = start_server();
    let pid = server.0.id();
    assert_serving(&addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss(pid);
    let mut s = handshaken(&addr).await;
    // Echo.Echo requests of 64 KiB each: every reply is as large as its request.
    #[derive(serde::Serialize)]
    struct EchoArgs {
        data: meshrpc::Blob,
    }
    let payload =
        rmp_serde::to_vec_named(&EchoArgs { data: meshrpc::Blob::from(vec![0x5a; PAYLOAD]) }).unwrap();
    let mut sent = 0usize;
    let mut peak = before;
    let mut id = 0u64;
    let pushed_all = loop {
        if sent >= TOTAL {
            break true;
        }
        id += 1;
        let mut frame = BytesMut::with_capacity(PAYLOAD + 64);
        let head =
            wire::encode_request_head(&mut frame, id, 0, 1, None, b"Echo.Echo", &wire::Metadata::new());
        frame.extend_from_slice(&payload);
        head.finish(&mut frame, u32::MAX).unwrap();
        match tokio::time::timeout(Duration::from_secs(2), s.write_all(&frame)).await {
            Ok(Ok(())) => sent += frame.len(),
            Ok(Err(_)) => break false, // the server gave up on us
            Err(_) => break false,     // blocked: the server stopped reading
        }
        if id % 256 == 0 {
            peak = peak.max(rss(pid));
        }
    };
    peak = peak.max(rss(pid));
    let growth = peak.saturating_sub(before);
    println!(
        "pushed {:.1} MiB without reading a reply; server RSS grew by {:.1} MiB at most",
        sent as f64 / 1048576.0,
        growth as f64 / 1048576.0
    );
    assert!(!pushed_all, "backpressure stopped the push before 1 GiB");
    assert!(growth <= 64 * 1024 * 1024, "server RSS grew by {:.1} MiB", growth as f64 / 1048576.0);
    assert_serving(&addr).await; // the server kept serving others throughout
}
