//! `meshrpc bench`, run as a user runs it against `meshrpc demo --listen` servers.

mod support;

use support::{free_port, listen, registry, replica, run};

/// Runs `meshrpc bench --json ARGS…`: whether it succeeded, its one JSON line, its stderr.
fn bench_run(args: &[&str]) -> (bool, serde_json::Value, String) {
    let mut all = vec!["bench", "--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bench {args:?} printed {stdout:?} ({e}), stderr:\n{stderr}"));
    (out.status.success(), line, stderr)
}

/// Runs `meshrpc bench --json --warmup 0s ARGS…`, which must succeed, and returns its JSON line.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--warmup", "0s"];
    all.extend_from_slice(args);
    let (ok, line, stderr) = bench_run(&all);
    assert!(ok, "bench {args:?} failed: {line}\n{stderr}");
    line
}

/// The demo server's `Counter.Value` at `addr`: how many `Counter.Inc` calls it served.
fn counter_value(addr: &str) -> u64 {
    let out = run(&["call", "--addr", addr, "Counter.Value"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|e| {
        panic!("Counter.Value is a number ({e}): {}", String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn add_makes_exactly_the_calls_asked_for_and_verifies_every_sum() {
    let (_server, addr) = listen();
    let r = bench_json(&["--addr", &addr, "--workload", "add", "-c", "16", "--calls", "1000"]);
    assert_eq!(r["calls"], 1000, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["connections"], 4, "{r}");
    for key in ["requests_per_sec", "p50_us", "p99_us", "p999_us"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {r}");
    }
    assert!(r["p50_us"].as_f64() <= r["p99_us"].as_f64(), "{r}");
}

#[test]
fn load_threads_split_the_connections_and_every_call_reaches_the_server_once() {
    let (_server, addr) = listen();
    // Counter.Inc by name: the server's count is the number of calls it served.
    let r = bench_json(&[
        "--addr",
        &addr,
        "-c",
        "24",
        "--connections",
        "3",
        "--threads",
        "2",
        "--calls",
        "600",
        "Counter.Inc",
        "{}",
    ]);
    assert_eq!(r["calls"], 600, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["threads"], 2, "{r}");
    assert_eq!(counter_value(&addr), 600);
    // More threads than connections: one thread per connection.
    let r = bench_json(&["--addr", &addr, "-c", "1", "--threads", "4", "--calls", "10"]);
    assert_eq!(
        (r["threads"].as_u64(), r["connections"].as_u64(), r["calls"].as_u64()),
        (Some(1), Some(1), Some(10))
    );
}

#[test]
fn echo1k_compares_every_payload() {
    let (_server, addr) = listen();
    for codec in ["msgpack", "binary", "json"] {
        let r = bench_json(&[
            "--addr",
            &addr,
            "--workload",
            "echo1k",
            "-c",
            "8",
            "--calls",
            "200",
            "--codec",
            codec,
        ]);
        assert_eq!((r["calls"].as_u64(), r["errors"].as_u64()), (Some(200), Some(0)), "{codec}: {r}");
        assert_eq!(r["codec"], codec, "{r}");
    }
}

#[test]
fn calls_made_during_the_warm_up_are_not_counted() {
    let (_server, addr) = listen();
    let (ok, r, stderr) =
        bench_run(&["--addr", &addr, "-c", "4", "--warmup", "300ms", "--calls", "100", "Counter.Inc", "{}"]);
    assert!(ok, "{stderr}");
    assert_eq!(r["calls"], 100, "{r}");
    let served = counter_value(&addr);
    assert!(served > 100, "the server also served the warm-up's calls: {served}");
    let rps = r["requests_per_sec"].as_f64().expect("requests_per_sec");
    let secs = r["seconds"].as_f64().expect("seconds");
    assert!(
        secs < 5.0 && (rps * secs - 100.0).abs() < 1.0,
        "requests/s is 100 calls over the measured time: {r}"
    );
}

#[test]
fn a_duration_run_reports_requests_per_second_over_that_duration() {
    let (_server, addr) = listen();
    let (ok, r, stderr) = bench_run(&["--addr", &addr, "-c", "4", "-d", "300ms", "--warmup", "100ms"]);
    assert!(ok, "{stderr}");
    assert_eq!(r["seconds"], 0.3, "{r}");
    let calls = r["calls"].as_f64().expect("calls");
    let rps = r["requests_per_sec"].as_f64().expect("requests_per_sec");
    assert!(calls > 0.0 && (rps - calls / 0.3).abs() <= 1.0, "{r}");
}

#[test]
fn the_report_names_its_units() {
    let (_server, addr) = listen();
    let out = run(&["bench", "--addr", &addr, "-c", "2", "--calls", "50", "--warmup", "0s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("calls        50\n"), "{stdout}");
    assert!(stdout.contains("requests/s"), "{stdout}");
    assert!(stdout.contains("µs") || stdout.contains("ms"), "latencies carry a unit: {stdout}");
    assert!(stdout.contains("errors       0\n"), "{stdout}");
}

#[test]
fn a_service_found_in_a_registry_is_benchmarked_over_its_instances() {
    let (_registry, reg) = registry("127.0.0.1:0");
    let (_a, a) = replica(&reg);
    let (_b, b) = replica(&reg);
    let r = bench_json(&[
        "--service",
        "Counter",
        "--registry",
        &reg,
        "-c",
        "8",
        "--threads",
        "2",
        "--calls",
        "400",
        "Counter.Inc",
        "{}",
    ]);
    assert_eq!((r["calls"].as_u64(), r["errors"].as_u64()), (Some(400), Some(0)), "{r}");
    let (va, vb) = (counter_value(&a), counter_value(&b));
    assert!(va > 0 && vb > 0, "both instances served calls: {va} and {vb}");
    assert_eq!(va + vb, 400, "every call reached one instance once");

    let out = run(&["bench", "--service", "Nobody", "--registry", &reg, "--calls", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live instance of Nobody"));
}

#[test]
fn failed_calls_are_counted_and_the_first_error_is_shown() {
    let (_server, addr) = listen();
    let (ok, r, stderr) =
        bench_run(&["--addr", &addr, "-c", "4", "--calls", "40", "--warmup", "0s", "Nope.Nope", "{}"]);
    assert!(!ok, "no call succeeded, so bench fails");
    assert_eq!((r["calls"].as_u64(), r["errors"].as_u64()), (Some(0), Some(40)), "{r}");
    assert!(stderr.contains("first error:") && stderr.contains("Nope.Nope"), "{stderr}");
}

#[test]
fn bad_targets_and_arguments_say_what_to_do() {
    let dead = format!("127.0.0.1:{}", free_port());
    for threads in ["1", "2"] {
        let out = run(&["bench", "--addr", &dead, "-c", "8", "--threads", threads, "--calls", "1"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("start a server first"), "{threads} thread(s): {stderr}");
    }

    let (_server, addr) = listen();
    let out = run(&["bench", "--addr", &addr, "--calls", "1", "Calculator.Add", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}
