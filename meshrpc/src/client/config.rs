//! [`ClientConfig`] and [`ClientBuilder`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::backoff::Backoff;
use super::handle::{Client, ClientInner, Stats, Target};
use super::pool::Pool;
use crate::balance::{Balanced, Strategy};
use crate::codec::Codec;
use crate::discovery::Registry;
use crate::resilience::RetryBudget;
use crate::status::Status;
use crate::wire;

/// Client settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Time allowed for the TCP connect. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for the server's SETTINGS after connecting. Default 5 s.
    pub handshake_timeout: Duration,
    /// Ping after this long with nothing read; `None` disables keepalive. Default 10 s.
    pub keepalive_interval: Option<Duration>,
    /// Fail the connection if nothing arrives this long after a ping. Default 10 s.
    pub keepalive_timeout: Duration,
    /// Largest response frame accepted (told to the server). Default 16 MiB.
    pub max_frame_size: u32,
    /// Codec for calls that do not choose one. Default MessagePack.
    pub codec: Codec,
    /// Timeout for calls that do not set one. Default none.
    pub default_timeout: Option<Duration>,
    /// Connections to the server; calls are spread over them round robin. Default 1.
    pub connections: usize,
    /// Waits between reconnect attempts after a connection drops.
    pub backoff: Backoff,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(10),
            max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
            codec: Codec::MessagePack,
            default_timeout: None,
            connections: 1,
            backoff: Backoff::default(),
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug, Default)]
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    strategy: Strategy,
    filter: BTreeMap<String, String>,
    budget: Option<RetryBudget>,
}

impl ClientBuilder {
    /// Sets [`ClientConfig::connect_timeout`].
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.config.connect_timeout = t;
        self
    }
    /// Sets [`ClientConfig::handshake_timeout`].
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.config.handshake_timeout = t;
        self
    }
    /// Sets the keepalive ping interval and how long to wait for an answer.
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.config.keepalive_interval = interval;
        self.config.keepalive_timeout = timeout;
        self
    }
    /// Sets [`ClientConfig::max_frame_size`] (at least 16 KiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.config.max_frame_size = bytes.max(wire::MIN_MAX_FRAME_SIZE);
        self
    }
    /// Sets [`ClientConfig::codec`]: MessagePack, JSON, or the fast binary codec.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.config.codec = codec;
        self
    }
    /// Sets [`ClientConfig::default_timeout`].
    pub fn default_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.default_timeout = t;
        self
    }
    /// Sets [`ClientConfig::connections`] (at least 1): a small pool to one server.
    pub fn connections(mut self, n: usize) -> Self {
        self.config.connections = n.max(1);
        self
    }
    /// Sets [`ClientConfig::backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How a discovered client spreads calls (default: P2C over peak-EWMA latency).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// A discovered client uses only instances labelled `key` = `value` (e.g. a
    /// version or a zone); repeat to require several labels.
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.filter.insert(key.into(), value.into());
        self
    }

    /// The budget retries and hedges draw on (default: 20 % of calls + 10 per second).
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// A client of every live instance of `service` in `registry`, balanced (see
    /// [`ClientBuilder::strategy`]). Returns at once: calls made before the first
    /// instance is known wait for one, within their deadline. Retries (idempotent
    /// calls, and calls an instance never processed) go to another instance within the
    /// retry budget; instances that keep failing are ejected for a while.
    pub fn discover(mut self, service: &str, registry: Arc<dyn Registry>) -> Client {
        let filter = std::mem::take(&mut self.filter);
        let balanced = Balanced::start(service, registry, self.strategy, filter, self.config.clone());
        let per_conn = crate::server::ServerConfig::default().max_concurrent_calls_per_connection;
        let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        self.build(Target::Balanced(balanced), per_conn, unspecified, Semaphore::MAX_PERMITS)
    }

    /// A client that connects on its first call, so the server need not be up yet;
    /// `addr` must resolve now. Until a connection is made, the tower readiness limit
    /// assumes the server's default per-connection limit.
    pub async fn connect_lazy(self, addr: impl std::fmt::Display) -> Result<Client, Status> {
        let target = addr.to_string();
        let peer =
            tokio::net::lookup_host(&target).await.ok().and_then(|mut a| a.next()).ok_or_else(|| {
                Status::invalid_argument(format!("cannot resolve {target:?}: expected host:port"))
            })?;
        let pool = Pool::new(target, self.config.clone());
        let per_conn = crate::server::ServerConfig::default().max_concurrent_calls_per_connection;
        let permits = (per_conn as usize).saturating_mul(self.config.connections.max(1));
        Ok(self.build(Target::Single(pool), per_conn, peer, permits))
    }

    /// The client for `target`: `permits` sizes the client-wide limit tower's
    /// `poll_ready` reserves from.
    fn build(
        self,
        target: Target,
        server_max_calls: u32,
        peer: std::net::SocketAddr,
        permits: usize,
    ) -> Client {
        Client::from_inner(ClientInner {
            target,
            config: self.config,
            limit: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            server_max_calls,
            peer,
            stats: Stats::default(),
            budget: self.budget.unwrap_or_default(),
        })
    }

    /// Connects to `addr` (host:port; resolved again on every reconnect).
    pub async fn connect(self, addr: impl std::fmt::Display) -> Result<Client, Status> {
        let (pool, first) = Pool::connect(addr.to_string(), self.config.clone()).await?;
        // The client-wide limit (what tower's `poll_ready` waits on): the server's
        // advertised per-connection limit times the connections in the pool.
        let permits = (first.server_max_calls as usize).saturating_mul(self.config.connections.max(1));
        Ok(self.build(Target::Single(pool), first.server_max_calls, first.peer, permits))
    }
}
