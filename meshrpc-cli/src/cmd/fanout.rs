//! `meshrpc fanout`: call one method on every live instance of a service at once and
//! show each instance's result (a WaitGroup over RPC).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meshrpc::{CallOptions, Client, Code};
use tokio::time::Instant;

use super::target::RegistryArgs;

/// Arguments of `meshrpc fanout`.
#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    /// The service whose instances to call.
    #[arg(long, value_name = "NAME")]
    service: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Method to call on each, as Service.Method (e.g. meshrpc.Health.Check).
    #[arg(value_name = "METHOD")]
    method: String,
    /// Arguments as a JSON object, e.g. '{"a":10,"b":5}'.
    #[arg(value_name = "JSON", default_value = "{}")]
    json: String,
    /// One deadline for the whole fan-out; instances not done by then are reported
    /// as DEADLINE_EXCEEDED.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// One JSON object per instance and line:
    /// {"instance":…,"address":…,"status":"OK","reply":…}.
    #[arg(long = "json")]
    json_out: bool,
}

/// Runs `meshrpc fanout`.
pub(crate) async fn run(args: FanoutArgs) -> ExitCode {
    let args_json: serde_json::Value = match serde_json::from_str(&args.json) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "error: the arguments are not valid JSON: {e}\nhint: quote them for the shell, e.g. '{{\"a\":10}}'"
            );
            return ExitCode::from(2);
        }
    };
    let reg = match args.registry.require().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = Client::discover(&args.service, reg);
    let instances = client.instances(args.deadline.min(Duration::from_secs(5))).await;
    if instances.is_empty() {
        eprintln!("error: no live instance of {} in the registry", args.service);
        eprintln!("hint: start one with: meshrpc demo --listen 127.0.0.1:0 --registry ADDR");
        return ExitCode::FAILURE;
    }
    let opts = CallOptions::new().timeout(args.deadline).codec(meshrpc::Codec::Json);
    let t0 = Instant::now();
    let results = client.broadcast::<_, serde_json::Value>(&args.method, &args_json, &opts).await;
    let took = t0.elapsed();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if args.json_out {
        for (inst, r) in &results {
            let line = match r {
                Ok(reply) => serde_json::json!({
                    "instance": inst.id, "address": inst.addr, "status": "OK", "reply": reply,
                }),
                Err(s) => serde_json::json!({
                    "instance": inst.id, "address": inst.addr, "status": s.code().as_str(), "error": s.message(),
                }),
            };
            println!("{line}");
        }
    } else {
        println!(
            "{} on {} instance(s) of {}: {} ok, {failed} failed, in {took:.1?} (deadline {:?})",
            args.method,
            results.len(),
            args.service,
            results.len() - failed,
            args.deadline
        );
        println!("  {:<24} {:<22} {:<18} reply / error", "instance", "address", "status");
        for (inst, r) in &results {
            match r {
                Ok(reply) => {
                    println!("  {:<24} {:<22} {:<18} {reply}", inst.id, inst.addr, Code::Ok.as_str())
                }
                Err(s) => {
                    println!("  {:<24} {:<22} {:<18} {}", inst.id, inst.addr, s.code().as_str(), s.message())
                }
            }
        }
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
