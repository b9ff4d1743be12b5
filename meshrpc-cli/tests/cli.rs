//! The `meshrpc` binary, run as a user runs it.

mod support;

use std::process::Command;

use support::{BIN, listen};

fn call(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(["call", "--addr", addr]).args(args).output().expect("run meshrpc call")
}

#[test]
fn demo_runs_the_scenarios_and_exits_zero() {
    let out = Command::new(BIN).arg("demo").output().expect("run meshrpc demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Result: 15"), "{stdout}");
    assert!(stdout.contains("Counter.Value = 1000 after 1000 calls"), "{stdout}");
    assert!(stdout.contains("UNAVAILABLE"), "the down server's error is reported: {stdout}");
    assert_eq!(stdout.matches("Hello, Alice!").count(), 2, "both live servers answered: {stdout}");
    assert!(stdout.contains("All RPC calls completed."), "{stdout}");
    // Scenario 4: discovery, balancing, a crash that costs no call, the registry dropping it.
    assert!(
        stdout.contains("300 concurrent Calculator.Add calls through the balanced client: 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("300 more calls: 0 failed"), "{stdout}");
    assert!(stdout.contains("2 instances listed"), "{stdout}");
}

#[test]
fn call_prints_the_reply_as_json() {
    let (_server, addr) = listen();
    let out = call(&addr, &["Calculator.Add", r#"{"a":10,"b":5}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "15\n");
    let out = call(&addr, &["Greeter.Hello", r#"{"name":"Alice"}"#]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"message\":\"Hello, Alice! (from demo)\"}\n");
    let out = call(&addr, &["Echo.Echo", r#"{"data":"aGVsbG8="}"#]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"aGVsbG8=\"\n");
    for _ in 0..3 {
        assert!(call(&addr, &["Counter.Inc", "{}"]).status.success());
    }
    assert_eq!(String::from_utf8_lossy(&call(&addr, &["Counter.Value"]).stdout), "3\n");
}

#[test]
fn call_errors_print_the_status_on_stderr_and_exit_nonzero() {
    let (_server, addr) = listen();
    let out = call(&addr, &["Calculator.Mul", r#"{"a":1,"b":2}"#]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("NOT_FOUND: unknown method \"Calculator.Mul\""), "{stderr}");

    let out = call(&addr, &["Calculator.Add", r#"{"a":"x"}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("INVALID_ARGUMENT: "));

    let out = call(&addr, &["Calculator.Add", "{not json"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

#[test]
fn call_to_a_dead_address_says_what_to_do() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let out = call(&addr, &["--timeout", "2s", "Calculator.Add", "{}"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("UNAVAILABLE: cannot connect to"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["demo", "--help"], &["call", "--help"]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: meshrpc"), "{args:?}");
    }
}
