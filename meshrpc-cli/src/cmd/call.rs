//! `meshrpc call`: call any method by name, JSON in, JSON out.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meshrpc::{CallOptions, Codec};

use super::target::{RegistryArgs, connect_client};

/// Arguments of `meshrpc call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// Server address, e.g. 127.0.0.1:7001.
    #[arg(long, value_name = "ADDR", required_unless_present = "service", conflicts_with = "service")]
    addr: Option<String>,
    /// Call a service found in a registry instead (balanced over its instances).
    #[arg(long, value_name = "NAME", requires = "registry_or_etcd")]
    service: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Method to call, as Service.Method (e.g. Calculator.Add).
    #[arg(value_name = "METHOD")]
    method: String,
    /// Arguments as a JSON object of named parameters, e.g. '{"a":10,"b":5}'.
    #[arg(value_name = "JSON", default_value = "{}")]
    json: String,
    /// Give up after this long (e.g. 500ms, 5s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Mark the call idempotent (safe to retry).
    #[arg(long)]
    idempotent: bool,
    /// Add request metadata KEY=VALUE (repeatable).
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
}

/// Runs `meshrpc call`.
pub(crate) async fn run(args: CallArgs) -> ExitCode {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&args.json) {
        eprintln!(
            "error: the arguments are not valid JSON: {e}\nhint: quote them for the shell, e.g. '{{\"a\":10,\"b\":5}}'"
        );
        return ExitCode::from(2);
    }
    let mut opts = CallOptions::new().timeout(args.timeout).idempotent(args.idempotent);
    for kv in &args.metadata {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!("error: metadata {kv:?} is not KEY=VALUE");
            return ExitCode::from(2);
        };
        opts = opts.metadata(k.to_string(), v.as_bytes().to_vec());
    }
    let client =
        match connect_client(args.addr.as_deref(), args.service.as_deref(), &args.registry, args.timeout)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    match client.call_raw(&args.method, Codec::Json, args.json.as_bytes(), &opts).await {
        Ok(reply) => {
            println!("{}", String::from_utf8_lossy(&reply));
            ExitCode::SUCCESS
        }
        Err(status) => {
            eprintln!("{status}");
            ExitCode::FAILURE
        }
    }
}
