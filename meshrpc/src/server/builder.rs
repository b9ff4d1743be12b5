//! [`Server`], its builder and configuration, and [`ServerHandle`] for shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::serve_connection;
use super::router::{Router, Service};
use crate::wire;

/// Server limits and timeouts. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame accepted (checked before any buffer is reserved). Default 16 MiB.
    pub max_frame_size: u32,
    /// Calls run at once on one connection; advertised in SETTINGS. Default 1024.
    pub max_concurrent_calls_per_connection: u32,
    /// Calls run at once on the whole server. Default 100,000.
    pub max_concurrent_calls: usize,
    /// Time a new connection has to complete the handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection with no calls in flight for this long is closed with GOAWAY. Default 5 min.
    pub idle_timeout: Option<Duration>,
    /// On shutdown or protocol error, time given to calls in flight to finish. Default 30 s.
    pub drain_timeout: Duration,
    /// A client that reads none of its replies for this long is disconnected. Default 30 s.
    pub write_stall_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
            max_concurrent_calls_per_connection: 1024,
            max_concurrent_calls: 100_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            drain_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// State shared by the accept loop, connections and calls.
#[derive(Debug)]
pub(crate) struct ServerShared {
    pub(crate) router: Router,
    pub(crate) config: ServerConfig,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled by [`ServerHandle::abort`]: connections close at once.
    pub(crate) kill: CancellationToken,
}

/// Builds a [`Server`]: add services, set limits, then `bind` or `serve`.
#[derive(Debug, Default)]
#[must_use]
pub struct ServerBuilder {
    config: ServerConfig,
    router: Router,
    errors: Vec<String>,
}

impl ServerBuilder {
    /// Adds a service; several services share one port.
    pub fn add_service(mut self, service: impl Into<Service>) -> Self {
        if let Err(e) = self.router.add(service.into()) {
            self.errors.push(e);
        }
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets [`ServerConfig::max_frame_size`] (at least 16 KiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.config.max_frame_size = bytes.max(wire::MIN_MAX_FRAME_SIZE);
        self
    }

    /// Sets [`ServerConfig::max_concurrent_calls_per_connection`] (at least 1).
    pub fn max_concurrent_calls_per_connection(mut self, n: u32) -> Self {
        self.config.max_concurrent_calls_per_connection = n.max(1);
        self
    }

    /// Sets [`ServerConfig::max_concurrent_calls`] (at least 1).
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.config.max_concurrent_calls = n.max(1);
        self
    }

    /// Sets [`ServerConfig::handshake_timeout`].
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.config.handshake_timeout = t;
        self
    }

    /// Sets [`ServerConfig::idle_timeout`]; `None` keeps idle connections open.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.idle_timeout = t;
        self
    }

    /// Sets [`ServerConfig::drain_timeout`].
    pub fn drain_timeout(mut self, t: Duration) -> Self {
        self.config.drain_timeout = t;
        self
    }

    /// Sets [`ServerConfig::write_stall_timeout`].
    pub fn write_stall_timeout(mut self, t: Duration) -> Self {
        self.config.write_stall_timeout = t;
        self
    }

    /// Binds the listening socket (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<Server> {
        if !self.errors.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, self.errors.join("; ")));
        }
        let mut config = self.config;
        config.max_frame_size = config.max_frame_size.max(wire::MIN_MAX_FRAME_SIZE);
        config.max_concurrent_calls_per_connection = config.max_concurrent_calls_per_connection.max(1);
        config.max_concurrent_calls = config.max_concurrent_calls.max(1);
        let listener = TcpListener::bind(addr).await?;
        let shared = Arc::new(ServerShared {
            router: self.router,
            config,
            in_flight: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
        });
        Ok(Server { listener, shared })
    }

    /// Binds `addr` and serves until the process ends (or the listener fails).
    pub async fn serve(self, addr: impl ToSocketAddrs) -> std::io::Result<()> {
        self.bind(addr).await?.run().await;
        Ok(())
    }
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<ServerShared>,
}

impl Server {
    /// A builder with the default configuration and no services.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The full names of the methods this server serves, sorted.
    pub fn method_names(&self) -> Vec<String> {
        self.shared.router.names().into_iter().map(str::to_string).collect()
    }

    /// Serves until shut down through a [`ServerHandle`] (see [`Server::spawn`]).
    pub async fn run(self) {
        let tracker = TaskTracker::new();
        let shutdown = self.shared.shutdown.clone();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.shared.kill.cancelled() => break,
                r = self.listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(serve_connection(self.shared.clone(), stream, peer));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(self.listener);
        tracker.close();
        tracker.wait().await;
    }

    /// Runs the server on its own task and returns a handle to stop it.
    pub fn spawn(self) -> ServerHandle {
        let local_addr = self.local_addr();
        let shutdown = self.shared.shutdown.clone();
        let kill = self.shared.kill.clone();
        let task = tokio::spawn(self.run());
        ServerHandle { local_addr, shutdown, kill, task }
    }
}

/// A running server: its address, and graceful shutdown.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    kill: CancellationToken,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Graceful shutdown: stop accepting, send GOAWAY on every connection, let calls
    /// in flight finish (within the drain timeout), then close. Resolves when done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Stops at once, like a crash: the listener closes and every connection is
    /// dropped without GOAWAY; calls in flight are cancelled.
    pub fn abort(&self) {
        self.kill.cancel();
        self.task.abort();
    }
}
