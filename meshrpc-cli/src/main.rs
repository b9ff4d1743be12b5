//! `meshrpc`: run the demo, serve the demo services, and call any method by name.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// meshrpc: RPC by name, fan-out and service tooling for Rust microservices.
#[derive(Debug, Parser)]
#[command(name = "meshrpc", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scenarios meshrpc grew from, explained, then exit (or keep serving with --listen).
    Demo(cmd::demo::DemoArgs),
    /// Call a method by name with JSON arguments and print the JSON reply.
    Call(cmd::call::CallArgs),
    /// Load-test a server: closed loop, every reply verified, latency percentiles.
    Bench(cmd::bench::BenchArgs),
    /// Run a dev registry (service discovery for one machine) until Ctrl-C.
    Registry(cmd::registry::RegistryServeArgs),
    /// List the services in a registry and their instances.
    List(cmd::registry::ListArgs),
    /// Follow a service's instances in a registry, printing each change.
    Watch(cmd::registry::WatchArgs),
    /// Call a method on every live instance of a service at once; one result each.
    Fanout(cmd::fanout::FanoutArgs),
}

/// mimalloc returns freed memory to the OS (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Call(args) => cmd::call::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Registry(args) => cmd::registry::serve(args).await,
            Command::List(args) => cmd::registry::list(args).await,
            Command::Watch(args) => cmd::registry::watch(args).await,
            Command::Fanout(args) => cmd::fanout::run(args).await,
        }
    })
}
