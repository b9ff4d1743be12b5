//! Shared helpers for the CLI tests: run `meshrpc demo --listen` as a child process.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
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
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run meshrpc demo --listen");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("read the first line");
    let port: u16 = first
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the first line is `PORT n`, got {first:?}"));
    (Running(child), format!("127.0.0.1:{port}"))
}
