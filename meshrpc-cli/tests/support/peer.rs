//! A hostile or careless peer on a real socket, and what the tests read off a child
//! process (/proc and its /metrics).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use meshrpc::wire::{self, Settings};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm in parentheses") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// The share of one core process `pid` used over the next `over`.
pub fn cpu_share(pid: u32, over: Duration) -> f64 {
    let tck = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
    let tck: f64 = String::from_utf8_lossy(&tck.stdout).trim().parse().unwrap_or(100.0);
    let (a, t) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(over);
    let ticks = cpu_ticks(pid) - a;
    ticks as f64 / tck / t.elapsed().as_secs_f64()
}

/// Resident set size of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

/// The value of an unlabelled metric on the admin endpoint's `/metrics` page.
pub async fn metric(http: &reqwest::Client, dashboard: &str, name: &str) -> f64 {
    let url = format!("{dashboard}metrics");
    let page = tokio::time::timeout(Duration::from_secs(5), async {
        http.get(&url).send().await.expect("GET /metrics").text().await.expect("its body")
    })
    .await
    .unwrap_or_else(|_| panic!("{url} did not answer within 5 s: the server is wedged"));
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} on {url}"))
}

/// Polls until every `(metric, value)` holds, for at most `within`; the last readings
/// if they never all held.
pub async fn settle(
    http: &reqwest::Client,
    dashboard: &str,
    want: &[(&str, f64)],
    within: Duration,
) -> Result<(), String> {
    let until = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for (name, value) in want {
            let v = metric(http, dashboard, name).await;
            if v != *value {
                seen.push(format!("{name} = {v} (want {value})"));
            }
        }
        if seen.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(seen.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a connection and sends the preface and SETTINGS; reads nothing back.
pub async fn connect(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut hello = BytesMut::new();
    hello.extend_from_slice(&wire::preface(wire::VERSION));
    wire::encode_settings(
        &mut hello,
        &Settings { max_frame_size: Some(wire::DEFAULT_MAX_FRAME_SIZE), ..Settings::default() },
    );
    s.write_all(&hello).await.expect("send the preface");
    s
}

/// One REQUEST frame: `method` with JSON arguments, no deadline.
pub fn request(id: u64, method: &str, json: &str) -> BytesMut {
    let mut frame = BytesMut::with_capacity(json.len() + 64);
    let head =
        wire::encode_request_head(&mut frame, id, 0, 2, None, method.as_bytes(), &wire::Metadata::new());
    frame.extend_from_slice(json.as_bytes());
    head.finish(&mut frame, u32::MAX).expect("the frame fits");
    frame
}

/// One `Echo.Echo` REQUEST frame in MessagePack carrying `n` bytes (binary, so a
/// 12 MiB echo fits the 16 MiB frame limit both ways).
pub fn echo_msgpack(id: u64, n: usize) -> BytesMut {
    #[derive(serde::Serialize)]
    struct EchoArgs {
        data: meshrpc::Blob,
    }
    let payload =
        rmp_serde::to_vec_named(&EchoArgs { data: meshrpc::Blob::from(vec![0x5a; n]) }).expect("encode");
    let mut frame = BytesMut::with_capacity(n + 64);
    let head = wire::encode_request_head(&mut frame, id, 0, 1, None, b"Echo.Echo", &wire::Metadata::new());
    frame.extend_from_slice(&payload);
    head.finish(&mut frame, u32::MAX).expect("the frame fits");
    frame
}

/// `Echo.Echo` arguments in JSON carrying `n` bytes (base64 of zeros).
pub fn echo_json(n: usize) -> String {
    format!("{{\"data\":\"{}\"}}", "A".repeat(n.div_ceil(3) * 4))
}

/// Pipelines `frame`s (ids from `*next_id`) without reading until the server stops
/// taking bytes for `stall`; returns the bytes that went in.
pub async fn push_until_stalled(
    s: &mut TcpStream,
    next_id: &mut u64,
    method: &str,
    json: &str,
    stall: Duration,
    cap: usize,
) -> usize {
    push_frames_until_stalled(s, next_id, |id| request(id, method, json), stall, cap).await
}

/// Like [`push_until_stalled`], with frames made by `frame(id)`.
pub async fn push_frames_until_stalled(
    s: &mut TcpStream,
    next_id: &mut u64,
    frame: impl Fn(u64) -> BytesMut,
    stall: Duration,
    cap: usize,
) -> usize {
    let mut sent = 0;
    while sent < cap {
        *next_id += 1;
        let frame = frame(*next_id);
        match tokio::time::timeout(stall, s.write_all(&frame)).await {
            Ok(Ok(())) => sent += frame.len(),
            Ok(Err(_)) | Err(_) => break, // stalled (possibly mid-frame) or dropped
        }
    }
    sent
}

/// How a peer goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `close()`: FIN (a reset if unread bytes were waiting for it).
    Close,
    /// `SO_LINGER` 0, then close: an immediate reset.
    Reset,
    /// `shutdown(SHUT_WR)`, a pause, then close.
    HalfClose,
}

/// Every ending.
pub const ENDINGS: [Ending; 3] = [Ending::Close, Ending::Reset, Ending::HalfClose];

/// Ends the connection the chosen way.
pub async fn end(mut s: TcpStream, how: Ending) {
    match how {
        Ending::Close => drop(s),
        Ending::Reset => {
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
            drop(s);
        }
        Ending::HalfClose => {
            let _ = s.shutdown().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(s);
        }
    }
}
