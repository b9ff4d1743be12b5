//! Shared test helpers: test services, server start-up, and a raw-frame client.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod chain;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meshrpc::wire::{self, Frame, Metadata, Request, Settings};
use meshrpc::{Blob, Context, ServerBuilder, ServerHandle, Service, Status};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct AddArgs {
    pub a: i64,
    pub b: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct SleepArgs {
    pub ms: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct EchoArgs {
    pub data: Blob,
}

/// Sends `()` on drop: proves a server-side handler future was dropped.
pub struct DropSignal(pub Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Test services: `Calculator.Add`, `Echo.Echo`, `Test.Sleep`, `Test.Panic`,
/// `Test.Context`, plus a concurrency gauge for `Test.Sleep`.
pub struct TestServices {
    pub running: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
}

impl TestServices {
    pub fn new() -> TestServices {
        TestServices { running: Arc::new(AtomicUsize::new(0)), peak: Arc::new(AtomicUsize::new(0)) }
    }

    pub fn add_to(&self, b: ServerBuilder) -> ServerBuilder {
        let calc = Service::new("Calculator")
            .method("Add", |_ctx: Context, a: AddArgs| async move { Ok::<_, Status>(a.a + a.b) });
        let echo = Service::new("Echo")
            .method("Echo", |_ctx: Context, a: EchoArgs| async move { Ok::<_, Status>(a.data) });
        let (running, peak) = (self.running.clone(), self.peak.clone());
        let test = Service::new("Test")
            .method("Sleep", move |_ctx: Context, a: SleepArgs| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(a.ms)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Status>(a.ms)
                }
            })
            .method("Panic", |_ctx: Context, _a: ()| async move {
                if true {
                    panic!("boom on purpose");
                }
                Ok::<_, Status>(())
            })
            .method("Fail", |_ctx: Context, msg: String| async move {
                Err::<(), _>(Status::failed_precondition(msg))
            })
            .method("Context", |ctx: Context, _a: ()| async move {
                Ok::<_, Status>(
                    serde_json::json!({
                        "call_id": ctx.call_id(),
                        "method": ctx.method(),
                        "peer": ctx.peer_addr().to_string(),
                        "remaining_ms": ctx.remaining().map(|d| d.as_millis() as u64),
                        "user": ctx.metadata().get_str("user"),
                    })
                    .to_string(),
                )
            });
        b.add_service(calc).add_service(echo).add_service(test)
    }
}

static STRAY_PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records every panic whose message is not a deliberate "on purpose" one, so that a
/// panic inside a server or client task (which the runtime would swallow) fails tests.
pub fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.to_string();
            if !msg.contains("on purpose") {
                STRAY_PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
            }
            previous(info);
        }));
    });
}

/// Fails if any task panicked unexpectedly so far in this test binary.
pub fn assert_no_stray_panics() {
    // Copied out first: the assert's own panic runs the hook, which takes this lock.
    let panics = STRAY_PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(panics.is_empty(), "unexpected panics in server or client tasks: {panics:?}");
}

/// Starts a server with the test services on a free loopback port.
pub async fn start(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> (ServerHandle, TestServices) {
    watch_panics();
    let svcs = TestServices::new();
    let b = configure(svcs.add_to(meshrpc::Server::builder()));
    let server = b.bind("127.0.0.1:0").await.expect("bind a loopback port");
    (server.spawn(), svcs)
}

/// A client that speaks raw frames, for bad-input tests.
pub struct RawClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub settings: Settings,
}

impl RawClient {
    /// Connects without any handshake.
    pub async fn connect_bare(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr).await.expect("connect")
    }

    /// Connects and completes the handshake.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut hello = BytesMut::new();
        hello.extend_from_slice(&wire::preface(wire::VERSION));
        wire::encode_settings(
            &mut hello,
            &Settings { max_frame_size: Some(wire::DEFAULT_MAX_FRAME_SIZE), ..Settings::default() },
        );
        stream.write_all(&hello).await.expect("write hello");
        let mut raw = RawClient { stream, buf: BytesMut::new(), settings: Settings::default() };
        match raw.next_frame().await {
            Some(Frame::Settings(s)) => raw.settings = s,
            other => panic!("expected SETTINGS, got {other:?}"),
        }
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send_frame(&mut self, frame: &Frame) {
        let mut b = BytesMut::new();
        wire::encode_frame(&mut b, frame);
        self.send(&b).await;
    }

    pub async fn request(&mut self, call_id: u64, codec: u8, method: &str, payload: Vec<u8>) {
        self.send_frame(&Frame::Request(Request {
            call_id,
            flags: 0,
            codec,
            timeout: None,
            method: Bytes::from(method.to_string()),
            metadata: Metadata::new(),
            payload: Bytes::from(payload),
        }))
        .await;
    }

    /// The next frame, or `None` at EOF; panics after 5 s of silence.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        read_frame(&mut self.stream, &mut self.buf).await
    }
}

pub async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    loop {
        if let Some(f) = wire::decode(buf, u32::MAX).expect("server sent a valid frame") {
            return Some(f);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(buf))
            .await
            .expect("server answered within 5 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
    }
}

/// Reads until EOF (or a reset); panics if the server keeps the connection open 5 s.
pub async fn expect_closed(stream: &mut TcpStream) {
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server did not close the connection within 5 s"),
        }
    }
}

pub fn msgpack<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("encode")
}

/// Proves the server still serves: a fresh typed call on a new connection.
pub async fn assert_serving(addr: SocketAddr) {
    let c = meshrpc::Client::connect(addr).await.expect("a second connection is accepted");
    let sum: i64 = c.call("Calculator.Add", &AddArgs { a: 40, b: 2 }).await.expect("a call on it succeeds");
    assert_eq!(sum, 42);
    assert_no_stray_panics();
}

/// A TCP proxy to `upstream` whose existing connections can be frozen (they stop
/// forwarding in both directions, like a link that went half-open), while connections
/// accepted afterwards forward normally.
pub struct FreezableProxy {
    pub addr: SocketAddr,
    frozen_below: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    pub async fn start(upstream: SocketAddr) -> FreezableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen_below = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let fb = frozen_below.clone();
        let task = tokio::spawn(async move {
            let mut generation = 0u64;
            while let Ok((inbound, _)) = listener.accept().await {
                generation += 1;
                let Ok(outbound) = TcpStream::connect(upstream).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, generation, fb.clone()));
                tokio::spawn(pump(ro, wi, generation, fb.clone()));
            }
        });
        FreezableProxy { addr, frozen_below, task }
    }

    /// Freezes every connection accepted so far.
    pub fn freeze_existing(&self) {
        self.frozen_below.store(u64::MAX, Ordering::SeqCst);
    }

    /// Lets connections accepted from now on forward normally (frozen ones stay frozen).
    pub fn thaw_new(&self, accepted_so_far: u64) {
        self.frozen_below.store(accepted_so_far + 1, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: u64,
    frozen_below: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if generation < frozen_below.load(Ordering::SeqCst) {
            // Frozen: swallow everything and never answer, keeping the sockets open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
