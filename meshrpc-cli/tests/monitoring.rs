//! Monitoring end to end, with the real tools: a real Prometheus (Debian package
//! `prometheus`) that finds the demo replicas through the dev registry's HTTP service
//! discovery, and the dashboard driven in headless Chromium (`chromium` +
//! `chromium-driver`). `scripts/test.sh` installs all three; a test that cannot start
//! one fails, it does not skip.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshrpc::Client;
use meshrpc::demo::CalculatorClient;
use meshrpc::discovery::{DevRegistry, Registry};
use support::*;
use tokio::time::Instant;

/// Polls `check` every 200 ms until it gives `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `program ARGS` or fails the test saying how to get it.
fn start(program: &str, args: &[String], package: &str) -> Running {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({e}): install it with apt-get install {package} (scripts/test.sh does)"));
    Running(child)
}

/// An instant query through Prometheus's HTTP API: the value of the single result.
async fn query(http: &reqwest::Client, prom: &str, promql: &str) -> Option<f64> {
    let url = format!("http://{prom}/api/v1/query");
    let r = http.get(url).query(&[("query", promql)]).send().await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    let result = v["data"]["result"].as_array()?;
    let [one] = result.as_slice() else { return None };
    one["value"][1].as_str()?.parse().ok()
}

async fn wait_listed(registry: &Arc<dyn Registry>, n: usize) {
    eventually(&format!("{n} Calculator instances in the registry"), Duration::from_secs(20), || async {
        let listed = registry.list("Calculator").await.ok()?.instances.len();
        (listed == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_finds_the_replicas_and_counts_exactly_the_calls_sent() {
    const N: u64 = 137;
    let (_reg, reg_addr, dashboard) = spawn_with_dashboard(&["registry", "--listen", "127.0.0.1:0"]);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let args = ["demo", "--listen", "127.0.0.1:0", "--registry", &reg_addr, "--traffic", "0"];
        replicas.push(spawn_with_dashboard(&args));
    }
    let registry: Arc<dyn Registry> = Arc::new(DevRegistry::connect(&reg_addr).await.unwrap());
    wait_listed(&registry, 3).await;

    let dir = std::env::temp_dir().join(format!("meshrpc-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    let sd = format!("{dashboard}sd");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: meshrpc\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    http_sd_configs:\n      - url: {sd}\n        refresh_interval: 1s\n"
        ),
    )
    .unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={prom}"),
        "--log.level=warn".to_string(),
    ];
    let _prometheus = start("prometheus", &args, "prometheus");
    let http = reqwest::Client::new();

    // Every replica discovered (through /sd) and scraped, each with its OK series.
    let series = r#"meshrpc_server_calls_total{method="Calculator.Add",code="OK"}"#;
    eventually("Prometheus to scrape the three replicas", Duration::from_secs(60), || async {
        let up = query(&http, &prom, r#"count(up{job="meshrpc"} == 1)"#).await?;
        let scraped = query(&http, &prom, &format!("count({series})")).await?;
        (up == 3.0 && scraped == 3.0).then_some(())
    })
    .await;
    let before = query(&http, &prom, &format!("sum({series})")).await.expect("a baseline");

    let client = Client::discover("Calculator", registry.clone());
    let calc = CalculatorClient::new(client);
    for i in 0..N as i64 {
        assert_eq!(calc.add(i, 1).await.expect("a call"), i + 1);
    }
    let sent_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    // Wait for a scrape of every replica that started after the last call…
    eventually("a scrape of every replica after the last call", Duration::from_secs(30), || async {
        let oldest = query(&http, &prom, &format!("min(timestamp({series}))")).await?;
        (oldest > sent_at + 0.05).then_some(())
    })
    .await;
    // …then ask Prometheus itself how far the counter moved.
    let after = query(&http, &prom, &format!("sum({series})")).await.expect("the total");
    assert_eq!(after - before, N as f64, "Prometheus counted {before} → {after}; {N} calls were sent");
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_replica_live_and_drops_a_dead_one() {
    use fantoccini::{ClientBuilder, Locator};

    let (_reg, reg_addr, dashboard) = spawn_with_dashboard(&["registry", "--listen", "127.0.0.1:0"]);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let args = [
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--registry",
            &reg_addr,
            "--traffic",
            "300",
            "--lease-ttl",
            "2s",
        ];
        replicas.push(spawn_with_dashboard(&args));
    }
    let registry: Arc<dyn Registry> = Arc::new(DevRegistry::connect(&reg_addr).await.unwrap());
    wait_listed(&registry, 3).await;

    let port = free_port();
    let _driver = start("chromedriver", &[format!("--port={port}")], "chromium-driver");
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"]
        }
    }))
    .unwrap();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let webdriver = format!("http://127.0.0.1:{port}");
    let browser = eventually("chromedriver to start a headless Chromium", Duration::from_secs(30), || {
        let (caps, connector, webdriver) = (caps.clone(), connector.clone(), webdriver.clone());
        async move { ClientBuilder::new(connector).capabilities(caps).connect(&webdriver).await.ok() }
    })
    .await;
    browser.goto(&dashboard).await.expect("open the dashboard");

    let rows = r#"tr.instance[data-service="Calculator"]"#;
    let count_rows = || async { browser.find_all(Locator::Css(rows)).await.map(|v| v.len()).ok() };
    eventually("three Calculator replicas on the page", Duration::from_secs(20), || async {
        (count_rows().await? == 3).then_some(())
    })
    .await;
    let total = || async {
        let text = browser.find(Locator::Id("total-rps")).await.ok()?.text().await.ok()?;
        text.trim().parse::<f64>().ok()
    };
    let first = eventually("a requests/s figure", Duration::from_secs(20), || async {
        total().await.filter(|r| *r > 0.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = total().await.expect("a requests/s figure two seconds later");
    assert!(second > 0.0 && second != first, "requests/s must be live: {first} then {second}");
    let health =
        browser.find(Locator::Css(&format!("{rows} td.health"))).await.unwrap().text().await.unwrap();
    assert_eq!(health, "ready");

    // One replica crashes: its lease expires, and the page drops it.
    let (mut dead, _, _) = replicas.remove(0);
    let _ = dead.0.kill();
    let _ = dead.0.wait();
    eventually("the dead replica to leave the page", Duration::from_secs(20), || async {
        (count_rows().await? == 2).then_some(())
    })
    .await;
    let shot = browser.screenshot().await.expect("a screenshot");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, shot).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    browser.close().await.expect("close the browser");
}
