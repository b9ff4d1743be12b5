//! [`Server`], its builder and configuration, and [`ServerHandle`] for shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs, lookup_host};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{ConnShared, serve_connection};
use super::router::{Router, Service};
use super::shed::{self, Connections};
use crate::admin::AdminSource;
use crate::discovery::{Announcement, DEFAULT_TTL, Instance, MemoryRegistry, Registry};
use crate::metrics::{ClientMetrics, Exposition, ServerMetrics};
use crate::transport::QueueBudget;
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
    /// Reply bytes the server holds for all its connections together, queued and not
    /// yet written to their sockets. Past it, the connections holding the most are
    /// dropped (GOAWAY `RESOURCE_EXHAUSTED`, tried without waiting). Default 256 MiB.
    pub max_queued_bytes: usize,
    /// Longest a handler's first poll may hold its connection's reader (handlers are
    /// polled once inline there); a method whose first poll takes longer runs on a
    /// task of its own from then on. `None` never moves one. Default 10 ms.
    pub inline_poll_limit: Option<Duration>,
    /// On graceful shutdown, how long to keep serving (reporting NOT_SERVING) before
    /// GOAWAY, so that callers learn of it first (e.g. one discovery-watch delay). Default 0.
    pub shutdown_grace: Duration,
    /// Bind with `SO_REUSEPORT`, so a new server can take over the port while the old one
    /// drains (a rolling restart on one port). Default false.
    pub reuse_port: bool,
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
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            inline_poll_limit: Some(Duration::from_millis(10)),
            shutdown_grace: Duration::ZERO,
            reuse_port: false,
        }
    }
}

/// The default [`ServerConfig::max_queued_bytes`]: 256 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 << 20;

/// State shared by the accept loop, connections and calls.
#[derive(Debug)]
pub(crate) struct ServerShared {
    pub(crate) router: Router,
    pub(crate) config: ServerConfig,
    /// Admitted calls not yet answered, across connections (shared with the metrics).
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// Unsent reply bytes across connections, against [`ServerConfig::max_queued_bytes`].
    pub(crate) queue: Arc<QueueBudget>,
    /// The live connections (for the queued-bytes guard).
    pub(crate) connections: Arc<Connections<ConnShared>>,
    /// Stops the accept loop (graceful shutdown requested).
    pub(crate) shutdown: CancellationToken,
    /// Tells connections to send GOAWAY and drain; cancelled only after the listener is
    /// closed, so that clients reconnecting on GOAWAY never land in the closing
    /// listener's backlog (where, with `SO_REUSEPORT`, they would be reset).
    pub(crate) drain: CancellationToken,
    /// Cancelled by [`ServerHandle::abort`]: connections close at once.
    pub(crate) kill: CancellationToken,
    /// False from the moment a graceful shutdown starts (health says NOT_SERVING).
    pub(crate) serving: Arc<AtomicBool>,
    /// Where and how to announce this server's services.
    announce: Option<Announce>,
    /// The running announcement (withdrawn at graceful shutdown).
    announcement: std::sync::Mutex<Option<Announcement>>,
    /// Cancelled when a shutdown starts.
    stopping: CancellationToken,
    /// What this server records about its calls.
    pub(crate) metrics: Arc<ServerMetrics>,
    /// Stops the admin endpoint (at the end of `run`, or at once on abort).
    admin_stop: CancellationToken,
    admin_addr: Option<SocketAddr>,
    /// The admin endpoint listens on every interface (0.0.0.0 or ::).
    admin_wildcard: bool,
}

impl ServerShared {
    /// `Ok` when the server should get traffic: serving, and registered if announced.
    fn readiness(&self) -> Result<(), String> {
        if !self.serving.load(Ordering::Acquire) {
            return Err("the server is shutting down (draining)".to_string());
        }
        if self.announce.is_some() {
            return match &*self.announcement.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(a) if a.is_registered() => Ok(()),
                Some(_) => Err("not registered in the registry yet".to_string()),
                None => Err("not announced yet (the server is not running)".to_string()),
            };
        }
        Ok(())
    }
}

/// The shutdown grace of a server announced in a registry, unless set: about one
/// watch-propagation delay (a long poll answers within milliseconds of a change).
pub const ANNOUNCED_SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// What a server announces in its registry.
#[derive(Clone)]
struct Announce {
    registry: Arc<dyn Registry>,
    advertise: Option<String>,
    id: Option<String>,
    metadata: Vec<(String, String)>,
    ttl: Duration,
}

impl std::fmt::Debug for Announce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announce")
            .field("advertise", &self.advertise)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`]: add services, set limits, then `bind` or `serve`.
#[derive(Debug, Default)]
#[must_use]
pub struct ServerBuilder {
    config: ServerConfig,
    router: Router,
    errors: Vec<String>,
    announce: Option<Announce>,
    /// Cancelled when a shutdown starts (built-in long polls end early on it).
    stopping: CancellationToken,
    /// Where to serve the admin endpoint, if anywhere.
    admin: Option<String>,
    /// The dev registry this server hosts (its admin endpoint lists it with leases).
    hosted_registry: Option<MemoryRegistry>,
}

impl ServerBuilder {
    /// Adds a service; several services share one port.
    pub fn add_service(mut self, service: impl Into<Service>) -> Self {
        if let Err(e) = self.router.add(service.into()) {
            self.errors.push(e);
        }
        self
    }

    /// Announces every service of this server in `registry` while it runs: registered
    /// under a lease (default TTL 10 s) kept alive in the background and registered
    /// again if lost; deregistered at graceful shutdown, before the shutdown grace
    /// (which becomes [`ANNOUNCED_SHUTDOWN_GRACE`] if it was 0).
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.announce =
            Some(Announce { registry, advertise: None, id: None, metadata: Vec::new(), ttl: DEFAULT_TTL });
        // Serve on for about one watch-propagation delay after deregistering, unless
        // told otherwise (`shutdown_grace` after this call wins).
        if self.config.shutdown_grace.is_zero() {
            self.config.shutdown_grace = ANNOUNCED_SHUTDOWN_GRACE;
        }
        self
    }

    /// The address announced to the registry (default: the bound address, with an
    /// unspecified IP replaced by 127.0.0.1).
    pub fn advertise_addr(mut self, addr: impl Into<String>) -> Self {
        if let Some(a) = &mut self.announce {
            a.advertise = Some(addr.into());
        }
        self
    }

    /// The instance id announced (default: the advertised address, unique per socket).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        if let Some(a) = &mut self.announce {
            a.id = Some(id.into());
        }
        self
    }

    /// A metadata label announced with each instance (`version`, `zone`, `weight`, …).
    pub fn instance_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let Some(a) = &mut self.announce {
            a.metadata.push((key.into(), value.into()));
        }
        self
    }

    /// The TTL of the announcement's lease: how long a crashed server stays listed.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        if let Some(a) = &mut self.announce {
            a.ttl = ttl;
        }
        self
    }

    /// Serves the admin HTTP endpoint (dashboard, `/metrics`, `/healthz`, `/readyz`; see
    /// [`crate::admin`]) on `addr`, e.g. `127.0.0.1:0` for any free port. An announced
    /// server advertises it in the registry, so Prometheus and dashboards find it.
    pub fn admin(mut self, addr: impl Into<String>) -> Self {
        self.admin = Some(addr.into());
        self
    }

    /// Also serves the dev registry (`meshrpc.Registry`) backed by `registry`: what
    /// `meshrpc registry --listen ADDR` runs.
    pub fn dev_registry(mut self, registry: MemoryRegistry) -> Self {
        self.hosted_registry = Some(registry.clone());
        if let Err(e) =
            self.router.add_builtin(crate::discovery::dev::service(registry, self.stopping.clone()))
        {
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

    /// Sets [`ServerConfig::shutdown_grace`].
    pub fn shutdown_grace(mut self, t: Duration) -> Self {
        self.config.shutdown_grace = t;
        self
    }

    /// Sets [`ServerConfig::max_queued_bytes`] (at least one maximum-size frame).
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.config.max_queued_bytes = bytes;
        self
    }

    /// Sets [`ServerConfig::inline_poll_limit`].
    pub fn inline_poll_limit(mut self, limit: Option<Duration>) -> Self {
        self.config.inline_poll_limit = limit;
        self
    }

    /// Sets [`ServerConfig::reuse_port`].
    pub fn reuse_port(mut self, reuse: bool) -> Self {
        self.config.reuse_port = reuse;
        self
    }

    /// Binds the listening socket (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(mut self, addr: impl ToSocketAddrs) -> std::io::Result<Server> {
        let serving = Arc::new(AtomicBool::new(true));
        let health = super::health::service(serving.clone(), self.router.service_names());
        if let Err(e) = self.router.add_builtin(health) {
            self.errors.push(e);
        }
        if !self.errors.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, self.errors.join("; ")));
        }
        let mut config = self.config;
        config.max_frame_size = config.max_frame_size.max(wire::MIN_MAX_FRAME_SIZE);
        config.max_concurrent_calls_per_connection = config.max_concurrent_calls_per_connection.max(1);
        config.max_concurrent_calls = config.max_concurrent_calls.max(1);
        config.max_queued_bytes = config.max_queued_bytes.max(config.max_frame_size as usize);
        let listener =
            if config.reuse_port { bind_reuse_port(addr).await? } else { TcpListener::bind(addr).await? };
        let admin = match &self.admin {
            Some(a) => Some(crate::admin::bind(a).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {a} for the admin endpoint: {e}"))
            })?),
            None => None,
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Connections::default());
        let metrics =
            Arc::new(ServerMetrics::new(self.router.indexed_names(), in_flight.clone(), queued.clone()));
        let max_queued_bytes = config.max_queued_bytes;
        let shared = Arc::new(ServerShared {
            metrics: metrics.clone(),
            admin_stop: CancellationToken::new(),
            admin_addr: admin.as_ref().map(|(_, a)| loopback_if_unspecified(*a)),
            admin_wildcard: admin.as_ref().is_some_and(|(_, a)| a.ip().is_unspecified()),
            router: self.router,
            config,
            in_flight,
            queue: Arc::new(QueueBudget::new(max_queued_bytes, queued)),
            connections,
            shutdown: CancellationToken::new(),
            drain: CancellationToken::new(),
            kill: CancellationToken::new(),
            serving,
            announce: self.announce,
            announcement: std::sync::Mutex::new(None),
            stopping: self.stopping,
        });
        let mut server = Server { listener, shared, admin: None };
        if let Some((admin_listener, _)) = admin {
            let source = server.admin_source(self.hosted_registry);
            server.admin = Some((admin_listener, Arc::new(source)));
        }
        Ok(server)
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
    admin: Option<(TcpListener, Arc<AdminSource>)>,
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

    /// The address of the admin endpoint, if the server has one ([`ServerBuilder::admin`]).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr
    }

    /// The metrics this server records.
    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.shared.metrics
    }

    /// The address and instance id this server announces (or would).
    fn identity(&self) -> (String, String) {
        let a = self.shared.announce.as_ref();
        let addr = a
            .and_then(|a| a.advertise.clone())
            .unwrap_or_else(|| loopback_if_unspecified(self.local_addr()).to_string());
        let id = a.and_then(|a| a.id.clone()).unwrap_or_else(|| addr.clone());
        (addr, id)
    }

    /// The admin address others should use: on every interface with an advertised
    /// address, the advertised host with the admin port; else the bound address.
    fn advertised_admin(&self) -> Option<String> {
        let admin = self.shared.admin_addr?;
        let advertise = self.shared.announce.as_ref().and_then(|a| a.advertise.as_deref());
        match advertise.and_then(|a| a.rsplit_once(':')) {
            Some((host, _)) if self.shared.admin_wildcard => Some(format!("{host}:{}", admin.port())),
            _ => Some(admin.to_string()),
        }
    }

    /// The user services (not the built-in `meshrpc.` ones), sorted.
    fn user_services(&self) -> Vec<String> {
        let mut services: Vec<String> = self.shared.router.service_names().iter().cloned().collect();
        services.retain(|s| s != "meshrpc" && !s.starts_with("meshrpc."));
        services.sort();
        services
    }

    /// The instances this server announces (one per user service).
    fn instances(&self) -> Option<(Arc<dyn Registry>, Vec<Instance>, Duration)> {
        let a = self.shared.announce.as_ref()?;
        let (addr, id) = self.identity();
        let instances = self
            .user_services()
            .into_iter()
            .map(|svc| {
                let mut i = Instance::new(svc, id.clone(), addr.clone());
                if let Some(admin) = self.advertised_admin() {
                    i = i.with_admin_addr(admin);
                }
                for (k, v) in &a.metadata {
                    i = i.with_meta(k.clone(), v.clone());
                }
                i
            })
            .collect();
        Some((a.registry.clone(), instances, a.ttl))
    }

    /// What the admin endpoint shows: this server's metrics, the process's client
    /// metrics, and the hosted dev registry's (lists come from it, else from the
    /// registry this server announces in, else from this server alone).
    fn admin_source(&self, hosted: Option<MemoryRegistry>) -> AdminSource {
        let (addr, id) = self.identity();
        let mut exposition = Exposition::new();
        exposition.add(self.shared.metrics.clone());
        exposition.add(ClientMetrics::global());
        let registry = match (hosted, &self.shared.announce) {
            (Some(h), _) => {
                exposition.add(h.collector());
                Some((Arc::new(h) as Arc<dyn Registry>, format!("dev registry at {addr}")))
            }
            (None, Some(a)) => Some((a.registry.clone(), "registry this server announces in".to_string())),
            (None, None) => None,
        };
        let weak = Arc::downgrade(&self.shared);
        AdminSource {
            id,
            addr,
            admin_addr: self.advertised_admin().unwrap_or_default(),
            services: self.user_services(),
            metrics: self.shared.metrics.clone(),
            exposition,
            registry,
            readiness: Box::new(move || match weak.upgrade() {
                Some(s) => s.readiness(),
                None => Err("the server has stopped".to_string()),
            }),
            started: tokio::time::Instant::now(),
        }
    }

    /// Serves until shut down through a [`ServerHandle`] (see [`Server::spawn`]).
    pub async fn run(mut self) {
        let admin = self.admin.take().map(|(listener, source)| {
            tokio::spawn(crate::admin::serve(listener, source, self.shared.admin_stop.clone()))
        });
        // The admin endpoint stops when this does (on every path out, even a dropped task).
        let _admin = self.shared.admin_stop.clone().drop_guard();
        if let Some((registry, instances, ttl)) = self.instances() {
            // Under the lock, and only if no shutdown has started: `shutdown` cancels
            // `stopping` before it takes the announcement, so one started here is always
            // withdrawn, and none starts after a shutdown looked.
            let mut slot = self.shared.announcement.lock().unwrap_or_else(|e| e.into_inner());
            if !self.shared.stopping.is_cancelled() {
                *slot = Some(Announcement::start(registry, instances, ttl));
            }
        }
        // Bounds the reply bytes held for all connections; stops when `run` returns.
        let guard_stop = CancellationToken::new();
        let _guard_stop = guard_stop.clone().drop_guard();
        let metrics = self.shared.metrics.clone();
        tokio::spawn(shed::guard(
            Arc::downgrade(&self.shared.connections),
            self.shared.queue.clone(),
            guard_stop,
            move |n| metrics.connections_shed(n),
        ));
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
        self.shared.drain.cancel();
        tracker.close();
        tracker.wait().await;
        // The admin port is free once `shutdown` returns (it takes at most ~200 ms).
        self.shared.admin_stop.cancel();
        if let Some(task) = admin {
            let _ = task.await;
        }
    }

    /// Runs the server on its own task and returns a handle to stop it.
    pub fn spawn(self) -> ServerHandle {
        let local_addr = self.local_addr();
        let shared = self.shared.clone();
        let task = tokio::spawn(self.run());
        ServerHandle { local_addr, shared, task }
    }
}

/// A running server: its address, and graceful shutdown.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<ServerShared>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the admin endpoint, if the server has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr
    }

    /// The metrics this server records.
    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.shared.metrics
    }

    /// Graceful shutdown: report NOT_SERVING (health) and keep serving for the shutdown
    /// grace, then stop accepting, send GOAWAY on every connection, let calls in flight
    /// finish (within the drain timeout), and close. Resolves when done.
    pub async fn shutdown(self) {
        self.shared.serving.store(false, Ordering::Release);
        self.shared.stopping.cancel();
        // Out of the registry first: the grace then lets watchers see it go.
        let announced = self.shared.announcement.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(a) = announced {
            a.withdraw(Duration::from_secs(2)).await;
        }
        let grace = self.shared.config.shutdown_grace;
        if !grace.is_zero() {
            tokio::time::sleep(grace).await;
        }
        self.shared.shutdown.cancel();
        let _ = self.task.await;
    }

    /// True until a graceful shutdown starts.
    pub fn is_serving(&self) -> bool {
        self.shared.serving.load(Ordering::Acquire)
    }

    /// Stops at once, like a crash: the listener closes and every connection is
    /// dropped without GOAWAY; calls in flight are cancelled.
    pub fn abort(&self) {
        self.shared.serving.store(false, Ordering::Release);
        self.shared.stopping.cancel();
        // Like a crash: the lease is no longer renewed and expires.
        drop(self.shared.announcement.lock().unwrap_or_else(|e| e.into_inner()).take());
        self.shared.kill.cancel();
        self.shared.admin_stop.cancel();
        self.task.abort();
    }
}

/// `addr` with an unspecified IP (0.0.0.0, ::) replaced by 127.0.0.1, for announcing.
fn loopback_if_unspecified(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// Binds with `SO_REUSEADDR` and `SO_REUSEPORT` (to the first address `addr` resolves to).
async fn bind_reuse_port(addr: impl ToSocketAddrs) -> std::io::Result<TcpListener> {
    let addr = lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the listen address resolved to nothing")
    })?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
