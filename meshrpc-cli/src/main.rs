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

/// jemalloc returns freed memory to the OS (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start-up: a background thread hands pages freed
/// more than about a second ago back to the OS, whether or not the process is busy
/// (by default that waits ~10 s and for the next allocations), so a server's RSS comes
/// back down after a burst. The symbol is jemalloc's documented way to set them.
#[allow(unsafe_code)] // an exported static, read by jemalloc's C code: nothing else
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
