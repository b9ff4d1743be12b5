//! Shared helpers for the CLI tests: run `meshrpc demo --listen` as a child process.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// The `meshrpc` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meshrpc");

/// Kills the child when the test ends, pass or fail.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `meshrpc demo --listen 127.0.0.1:0` and returns it with its address, read
/// from the `PORT n` line it prints first.
pub fn listen() -> (Running, String) {
    spawn_with_port(&["demo", "--listen", "127.0.0.1:0", "--traffic", "0"])
}

/// Starts `meshrpc ARGS…` (a command that listens on port 0 and prints `PORT n` first)
/// and returns it with its address.
pub fn spawn_with_port(args: &[&str]) -> (Running, String) {
    let (child, addr, _) = spawn_reading(args, false);
    (child, addr)
}

/// Starts `meshrpc ARGS…` and reads its first line, `PORT n`, and if `dashboard` its
/// second, `DASHBOARD url`: the child, its address, and the URL (empty if not read).
fn spawn_reading(args: &[&str], dashboard: bool) -> (Running, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("run meshrpc {args:?}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    let first = next();
    let port: u16 = first
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the first line of meshrpc {args:?} is `PORT n`, got {first:?}"));
    let url = if dashboard {
        let second = next();
        second
            .strip_prefix("DASHBOARD ")
            .unwrap_or_else(|| {
                panic!("the second line of meshrpc {args:?} is `DASHBOARD url`, got {second:?}")
            })
            .trim()
            .to_string()
    } else {
        String::new()
    };
    (Running(child), format!("127.0.0.1:{port}"), url)
}

/// Starts a dev registry (`meshrpc registry --listen ADDR`; port 0 for any).
pub fn registry(listen: &str) -> (Running, String) {
    spawn_with_port(&["registry", "--listen", listen])
}

/// Starts a demo replica announced in the dev registry at `registry`.
pub fn replica(registry: &str) -> (Running, String) {
    spawn_with_port(&["demo", "--listen", "127.0.0.1:0", "--registry", registry, "--traffic", "0"])
}

/// Starts `meshrpc ARGS…` and returns it with its address (`PORT n`) and its dashboard
/// URL (the `DASHBOARD http://…/` line).
pub fn spawn_with_dashboard(args: &[&str]) -> (Running, String, String) {
    spawn_reading(args, true)
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address").port()
}

/// Runs `meshrpc ARGS…` to completion.
pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap_or_else(|e| panic!("run meshrpc {args:?}: {e}"))
}

/// Sends SIGTERM (a graceful stop) and waits for the process to exit.
pub fn terminate(r: &mut Running) {
    let _ = Command::new("kill").args(["-TERM", &r.0.id().to_string()]).status();
    let _ = r.0.wait();
}
pub mod peer;
