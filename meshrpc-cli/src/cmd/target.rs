//! How a command finds its services: one server (`--addr`), or a service in a registry
//! (`--service NAME` with `--registry ADDR` or `--etcd ENDPOINTS`).

use std::sync::Arc;

use std::time::Duration;

use clap::Args;
use meshrpc::Client;
use meshrpc::discovery::{DevRegistry, Registry};

/// `--registry ADDR` or `--etcd ENDPOINTS`.
#[derive(Debug, Args, Clone)]
#[group(id = "registry_or_etcd", multiple = false)]
pub(crate) struct RegistryArgs {
    /// The dev registry's address (see `meshrpc registry --listen ADDR`).
    #[arg(long, value_name = "ADDR", conflicts_with = "etcd")]
    pub(crate) registry: Option<String>,
    /// etcd endpoints, comma-separated, e.g. 127.0.0.1:2379 (needs a CLI built with
    /// `--features etcd`).
    #[arg(long, value_name = "ENDPOINTS")]
    pub(crate) etcd: Option<String>,
}

impl RegistryArgs {
    /// Connects to the registry named, if any.
    pub(crate) async fn connect(&self) -> Result<Option<Arc<dyn Registry>>, String> {
        if let Some(addr) = &self.registry {
            let reg = DevRegistry::connect(addr.as_str())
                .await
                .map_err(|e| format!("cannot use the dev registry at {addr}: {e}"))?;
            return Ok(Some(Arc::new(reg)));
        }
        if let Some(endpoints) = &self.etcd {
            return connect_etcd(endpoints).await.map(Some);
        }
        Ok(None)
    }

    /// Connects to the registry named, or explains that one is needed.
    pub(crate) async fn require(&self) -> Result<Arc<dyn Registry>, String> {
        self.connect().await?.ok_or_else(|| {
            "no registry given: pass --registry ADDR (a dev registry: meshrpc registry --listen ADDR) \
             or --etcd ENDPOINTS"
                .to_string()
        })
    }
}

#[cfg(feature = "etcd")]
async fn connect_etcd(endpoints: &str) -> Result<Arc<dyn Registry>, String> {
    let reg = meshrpc::discovery::EtcdRegistry::connect(&[endpoints])
        .await
        .map_err(|e| format!("cannot use etcd at {endpoints}: {e}"))?;
    Ok(Arc::new(reg))
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(_endpoints: &str) -> Result<Arc<dyn Registry>, String> {
    Err("this meshrpc was built without etcd support: build it with \
         `cargo build --release -p meshrpc-cli --features etcd` (needs protoc: apt-get install protobuf-compiler)"
        .to_string())
}

/// A client of one server (`addr`) or of a discovered service (`service` in the
/// registry named); the error says what failed and what to try.
pub(crate) async fn connect_client(
    addr: Option<&str>,
    service: Option<&str>,
    registry: &RegistryArgs,
    timeout: Duration,
) -> Result<Client, String> {
    match (addr, service) {
        (Some(addr), _) => Client::builder().connect_timeout(timeout).connect(addr).await.map_err(|status| {
            format!(
                "{status}\nhint: is a meshrpc server listening on {addr}? (try: meshrpc demo --listen {addr})"
            )
        }),
        (None, Some(service)) => {
            let reg = registry.require().await?;
            Ok(Client::discover(service, reg))
        }
        (None, None) => {
            Err("give --addr ADDR, or --service NAME with --registry ADDR or --etcd ENDPOINTS".into())
        }
    }
}
