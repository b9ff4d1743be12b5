//! `meshrpc registry`: run a dev registry; `meshrpc list` and `meshrpc watch`: look
//! into any registry.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meshrpc::Server;
use meshrpc::discovery::{MemoryRegistry, Snapshot, Watch};

use super::target::RegistryArgs;

/// Arguments of `meshrpc registry`.
#[derive(Debug, Args)]
pub(crate) struct RegistryServeArgs {
    /// Where to listen, e.g. 127.0.0.1:7700 (port 0: any free port). The first line
    /// printed is `PORT n`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7700")]
    listen: String,
    /// Where to serve the admin endpoint: the dashboard of every registered instance,
    /// Prometheus HTTP service discovery at /sd, and /metrics. Port 0: any free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    admin: String,
}

/// Runs `meshrpc registry`.
pub(crate) async fn serve(args: RegistryServeArgs) -> ExitCode {
    let registry = MemoryRegistry::new();
    let builder = Server::builder().dev_registry(registry).admin(args.admin.as_str());
    let server = match builder.bind(args.listen.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}: {e}\nhint: pick a free port, or port 0 for any",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let local = server.local_addr();
    let mut out = std::io::stdout().lock();
    // Always first, so scripts and tests can read the port whatever was asked for.
    let _ = writeln!(out, "PORT {}", local.port());
    if let Some(admin) = server.admin_addr() {
        let _ = writeln!(out, "DASHBOARD http://{admin}/");
        let _ = writeln!(out, "prometheus http_sd_configs url: http://{admin}/sd");
    }
    let _ =
        writeln!(out, "meshrpc dev registry on {local} (in memory; for one machine: use etcd for clusters)");
    let _ = writeln!(out, "try: meshrpc demo --listen 127.0.0.1:0 --registry {local}");
    let _ = writeln!(out, "     meshrpc list --registry {local}");
    let _ = writeln!(out, "press Ctrl-C to stop");
    let _ = out.flush();
    drop(out);
    let handle = server.spawn();
    super::stop_signal().await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// Arguments of `meshrpc list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this service (default: every service).
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// One JSON object per instance and line.
    #[arg(long)]
    json: bool,
}

fn print_instances(snap: &Snapshot, json: bool) {
    for i in &snap.instances {
        if json {
            let line = serde_json::json!({
                "service": i.service, "instance": i.id, "address": i.addr,
                "admin_address": i.admin_addr, "metadata": i.metadata,
            });
            println!("{line}");
        } else {
            let meta: Vec<String> = i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  {:<24} {:<22} {}", i.id, i.addr, meta.join(" "));
        }
    }
}

/// Runs `meshrpc list`.
pub(crate) async fn list(args: ListArgs) -> ExitCode {
    let reg = match args.registry.require().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let services = match &args.service {
        Some(s) => vec![s.clone()],
        None => match reg.services().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot list services: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if services.is_empty() && !args.json {
        println!("no services registered");
    }
    for s in services {
        match reg.list(&s).await {
            Ok(snap) => {
                if !args.json {
                    println!("{s}: {} instance(s)", snap.instances.len());
                }
                print_instances(&snap, args.json);
            }
            Err(e) => {
                eprintln!("error: cannot list {s}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Arguments of `meshrpc watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The service to follow.
    #[arg(value_name = "SERVICE")]
    service: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// One JSON object per instance set and line.
    #[arg(long)]
    json: bool,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// Runs `meshrpc watch`: prints the instance set each time it changes.
pub(crate) async fn watch(args: WatchArgs) -> ExitCode {
    let reg = match args.registry.require().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let watch = Watch::start(reg, &args.service);
    let mut rx = watch.receiver();
    let follow = async {
        loop {
            let snap = rx.borrow_and_update().clone();
            if let Some(snap) = snap {
                if args.json {
                    let line = serde_json::json!({
                        "service": snap.service, "revision": snap.cursor.revision,
                        "instances": snap.instances,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{} at revision {}: {} instance(s)",
                        snap.service,
                        snap.cursor.revision,
                        snap.instances.len()
                    );
                    print_instances(&snap, false);
                }
                let _ = std::io::stdout().flush();
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => super::stop_signal().await,
        }
    };
    tokio::select! {
        _ = follow => {}
        _ = until => {}
    }
    ExitCode::SUCCESS
}
