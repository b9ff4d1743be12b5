//! The client's side of a vanishing peer: a server that stops reading while the client
//! pushes, then dies (close, reset, half-close). The client runs in a child process
//! (this test binary run again, as `client_process`), so its CPU time can be measured
//! apart from the tests: afterwards every call has failed, the process is idle, it
//! holds no connection and no call, and a fresh connection elsewhere works.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use meshrpc::wire::{self, Settings};
use meshrpc::{Blob, Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHILD_ENV: &str = "MESHRPC_TEST_CLIENT_OF";
/// How many connections the client process opens (its pool size).
const CONNS_ENV: &str = "MESHRPC_TEST_CLIENT_CONNECTIONS";

/// The client process: eight callers per connection (`MESHRPC_TEST_CLIENT_CONNECTIONS`)
/// push 256 KiB `Echo.Echo` calls at the address in `MESHRPC_TEST_CLIENT_OF` until
/// their calls fail, then it answers commands on stdin:
/// `stats`, `call ADDR` (a fresh client's `Calculator.Add` there).
#[test]
#[ignore = "the client process of the client_side_* tests, which run it as a child"]
fn client_process() {
    let addr = std::env::var(CHILD_ENV).expect("run by the client_side_* tests");
    let conns: usize = std::env::var(CONNS_ENV).ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let client = Client::builder().connections(conns).connect(addr.as_str()).await.expect("connect");
        println!("CONNECTED");
        let callers = (0..8 * conns).map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = client
                        .call::<_, Blob>("Echo.Echo", &Args { data: Blob::from(vec![7; 256 << 10]) })
                        .await
                    {
                        return e;
                    }
                }
            })
        });
        let errors = futures_util::future::join_all(callers).await;
        let codes: Vec<String> =
            errors.iter().map(|e| format!("{:?}", e.as_ref().map(|s| s.code()))).collect();
        println!("FAILED {}", codes.join(","));
        let mut lines = BufReader::new(std::io::stdin()).lines();
        while let Some(Ok(line)) = tokio::task::block_in_place(|| lines.next()) {
            if line == "stats" {
                let s = client.stats();
                println!("STATS in_flight={} connections={}", s.in_flight, s.connections);
            } else if let Some(other) = line.strip_prefix("call ") {
                let fresh = Client::connect(other).await.expect("a fresh connection");
                let sum: i64 = fresh.call("Calculator.Add", &AddArgs { a: 40, b: 2 }).await.expect("a call");
                println!("CALLED {sum}");
            }
        }
    });
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Args {
    data: Blob,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

struct ChildClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for ChildClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildClient {
    fn start(server: &str, connections: usize) -> ChildClient {
        let mut child = Command::new(std::env::current_exe().expect("this test binary"))
            .args(["--ignored", "--exact", "client_process", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, server)
            .env(CONNS_ENV, connections.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the client process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        ChildClient { child, stdin, lines }
    }

    /// The next line the child prints that holds `prefix`, from `prefix` on, within
    /// `within` (the test harness may have printed on the same line before it).
    fn expect(&self, prefix: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(prefix) => {
                    return line[line.find(prefix).unwrap_or(0)..].to_string();
                }
                Ok(_) => continue,
                Err(_) => panic!("the client process printed no {prefix:?} line within {within:?}"),
            }
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{command}").expect("write to the client process");
        stdin.flush().expect("flush");
    }
}

/// A server that completes the handshake, reads one chunk, then stops reading.
async fn stalling_server(listener: &TcpListener) -> TcpStream {
    let (mut s, _) = listener.accept().await.expect("the client connects");
    let mut hello = [0u8; 6];
    s.read_exact(&mut hello).await.expect("the preface");
    let mut settings = BytesMut::new();
    wire::encode_settings(
        &mut settings,
        &Settings {
            protocol_version: Some(1),
            max_frame_size: Some(wire::DEFAULT_MAX_FRAME_SIZE),
            max_concurrent_calls: Some(1024),
            idle_timeout_ms: None,
        },
    );
    s.write_all(&settings).await.expect("our SETTINGS");
    let mut chunk = vec![0; 64 << 10];
    let _ = s.read(&mut chunk).await;
    s
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

async fn client_side(how: &str, connections: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = ChildClient::start(&addr, connections);
    let mut servers = Vec::new();
    for _ in 0..connections {
        servers.push(stalling_server(&listener).await);
    }
    drop(listener); // no reconnect
    client.expect("CONNECTED", Duration::from_secs(20));
    // Let the client fill every buffer between it and us, and back up behind them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for mut server in servers {
        match how {
            "close" => drop(server),
            "reset" => {
                socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO)).unwrap();
                drop(server);
            }
            _ => {
                server.shutdown().await.unwrap();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    drop(server);
                });
            }
        }
    }
    let failed = client.expect("FAILED", Duration::from_secs(10));
    assert_eq!(
        failed.matches("Ok(Unavailable)").count(),
        8 * connections,
        "{how}, {connections} connection(s): every caller fails UNAVAILABLE: {failed}"
    );
    // Idle: CPU time of the client process over 2 s, from /proc.
    let pid = client.child.id();
    let (a, t) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let share = (cpu_ticks(pid) - a) as f64 / 100.0 / t.elapsed().as_secs_f64();
    assert!(
        share < 0.05,
        "{how}: the client process used {:.0} % of a core after the server died",
        share * 100.0
    );
    client.send("stats");
    let stats = client.expect("STATS", Duration::from_secs(5));
    assert_eq!(stats, "STATS in_flight=0 connections=0", "{how}, {connections} connection(s)");
    let real = Server::builder();
    let real = meshrpc::demo::services("fresh").into_iter().fold(real, |b, s| b.add_service(s));
    let real = real.bind("127.0.0.1:0").await.unwrap().spawn();
    client.send(&format!("call {}", real.local_addr()));
    assert_eq!(client.expect("CALLED", Duration::from_secs(5)), "CALLED 42", "{how}");
    real.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_a_server_that_stops_reading_then_closes() {
    client_side("close", 1).await;
    client_side("close", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_a_server_that_stops_reading_then_resets() {
    client_side("reset", 1).await;
    client_side("reset", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_a_server_that_stops_reading_then_half_closes() {
    client_side("half-close", 1).await;
    client_side("half-close", 8).await;
}

/// A large reply that arrives slowly but steadily keeps the connection alive: the
/// keepalive (200 ms interval, 200 ms timeout here) counts any bytes from the server,
/// not only whole frames. The server answers no PING, and the reply takes ~1.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_a_slow_large_reply_is_not_taken_for_a_dead_server() {
    const SIZE: usize = 2 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut s = stalling_server(&listener).await;
        // The reply to call 1, written 64 KiB every 50 ms.
        let mut reply = BytesMut::new();
        let head =
            wire::encode_response_head(&mut reply, 1, 0, 1, meshrpc::Code::Ok, "", &wire::Metadata::new());
        reply.extend_from_slice(&rmp_serde::to_vec(&Blob::from(vec![3; SIZE])).unwrap());
        head.finish(&mut reply, u32::MAX).unwrap();
        for chunk in reply.chunks(64 << 10) {
            s.write_all(chunk).await.expect("the client keeps the connection");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    });
    let client = Client::builder()
        .keepalive(Some(Duration::from_millis(200)), Duration::from_millis(200))
        .connect(addr)
        .await
        .unwrap();
    let t = Instant::now();
    let got: Blob =
        client.call("Echo.Echo", &Args { data: Blob::from(vec![3; 8]) }).await.expect("the slow reply");
    assert_eq!(got.len(), SIZE);
    assert!(t.elapsed() > Duration::from_millis(1000), "the reply came in {:?}", t.elapsed());
    drop(server.await.unwrap());
}
