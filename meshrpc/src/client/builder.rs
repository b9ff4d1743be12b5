//! [`Client`] and [`ClientBuilder`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{ToSocketAddrs, lookup_host};

use super::call::effective_deadline;
use super::connection::Connection;
use super::options::CallOptions;
use crate::codec::Codec;
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
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug, Default, Clone)]
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
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
    /// Sets [`ClientConfig::codec`].
    pub fn codec(mut self, codec: Codec) -> Self {
        self.config.codec = codec;
        self
    }
    /// Sets [`ClientConfig::default_timeout`].
    pub fn default_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.default_timeout = t;
        self
    }

    /// Connects to the first address `addr` resolves to.
    pub async fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Status> {
        let addr = resolve(addr).await?;
        let conn = Connection::connect(addr, &self.config).await?;
        Ok(Client { inner: Arc::new(ClientInner { conn, config: self.config }) })
    }
}

async fn resolve(addr: impl ToSocketAddrs) -> Result<SocketAddr, Status> {
    let mut addrs = lookup_host(addr).await.map_err(|e| {
        Status::unavailable(format!("cannot resolve the server address: {e}")).with_not_processed(true)
    })?;
    addrs
        .next()
        .ok_or_else(|| Status::unavailable("the server address resolved to nothing").with_not_processed(true))
}

/// A connection to one server; cheap to clone (clones share the connection).
///
/// Calls are multiplexed: any number may be in flight at once, answered in any order.
/// Above the server's advertised concurrency limit, calls wait in the client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    conn: Arc<Connection>,
    config: ClientConfig,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.conn.close("the client was dropped");
    }
}

impl Client {
    /// Connects with the default configuration.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Client, Status> {
        ClientBuilder::default().connect(addr).await
    }

    /// A builder for a client with custom settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.conn.peer
    }

    /// The concurrent-call limit the server advertised for this connection.
    pub fn server_max_concurrent_calls(&self) -> u32 {
        self.inner.conn.server_max_calls
    }

    /// True while the connection takes new calls (not closed, no GOAWAY received).
    pub fn is_open(&self) -> bool {
        self.inner.conn.is_open()
    }

    /// Calls currently in flight on the connection.
    pub fn in_flight(&self) -> usize {
        self.inner.conn.in_flight()
    }

    /// Calls `method` (`Service.Method`) with `args`, decoding the reply as `R`.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, Status>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_with(method, args, &CallOptions::default()).await
    }

    /// Like [`Client::call`], with per-call options (deadline, codec, metadata…).
    pub async fn call_with<A, R>(&self, method: &str, args: &A, opts: &CallOptions) -> Result<R, Status>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let codec = opts.codec.unwrap_or(self.inner.config.codec);
        let deadline = effective_deadline(opts.timeout.or(self.inner.config.default_timeout));
        let encode = |out: &mut BytesMut| {
            codec.encode(args, out).map_err(|e| {
                Status::invalid_argument(format!("cannot encode the arguments of {method}: {e}"))
            })
        };
        let resp = self.inner.conn.call(method, opts, codec.id(), deadline, encode).await?;
        let reply_codec = Codec::from_id(resp.codec).unwrap_or(codec);
        reply_codec
            .decode(&resp.payload)
            .map_err(|e| Status::internal(format!("cannot decode the reply of {method}: {e}")))
    }

    /// Calls `method` with an already-encoded payload in `codec` and returns the
    /// encoded reply (e.g. JSON in, JSON out, for the CLI and gateways).
    pub async fn call_raw(
        &self,
        method: &str,
        codec: Codec,
        payload: &[u8],
        opts: &CallOptions,
    ) -> Result<Bytes, Status> {
        let deadline = effective_deadline(opts.timeout.or(self.inner.config.default_timeout));
        let encode = |out: &mut BytesMut| {
            out.extend_from_slice(payload);
            Ok(())
        };
        let resp = self.inner.conn.call(method, opts, codec.id(), deadline, encode).await?;
        Ok(resp.payload)
    }
}
