//! The admin HTTP endpoint (axum) every server can serve on a port of its own
//! (`ServerBuilder::admin`):
//!
//! | path | what |
//! |---|---|
//! | `/` | the live dashboard (plain HTML/JS/CSS shipped in the crate) |
//! | `/metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | `/healthz` | 200 while the process serves |
//! | `/readyz` | 200 once registered (if announced) and until draining; 503 otherwise |
//! | `/api/stats` | this server's per-method counters, as JSON (the dashboard reads it) |
//! | `/api/instances` | the services and instances this server knows (its registry, else itself) |
//! | `/sd` | Prometheus `http_sd_configs` targets: every instance's admin endpoint |
//!
//! The JSON routes answer any origin (`Access-Control-Allow-Origin: *`): a dashboard
//! served by one process reads every instance's `/api/stats` directly.

mod api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use api::AdminSource;

/// The dashboard page and its assets.
const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");

/// Most connections the admin endpoint serves at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 256;

/// Longest a client may take to send a request's headers, and longest a kept-alive
/// connection may sit idle: a client that sends half a request (or nothing) cannot
/// hold its connection, a slot and a task forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in progress get to finish once the endpoint stops.
const STOP_GRACE: Duration = Duration::from_millis(200);

/// Serves the admin endpoint on `listener` until `stop` is cancelled; returns once
/// every connection has closed (within [`STOP_GRACE`] of `stop`).
pub(crate) async fn serve(listener: TcpListener, source: Arc<AdminSource>, stop: CancellationToken) {
    let app = router(source);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("the admin endpoint cannot accept: {e}; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin endpoint: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%peer, "admin connection ended: {e}");
                },
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(STOP_GRACE, conn).await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    // Each connection ends within STOP_GRACE of `stop`; this only bounds a bug.
    let _ = tokio::time::timeout(STOP_GRACE * 2, connections.wait()).await;
}

/// Binds the admin endpoint's port.
pub(crate) async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

fn router(source: Arc<AdminSource>) -> Router {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard.js", get(|| async { page("text/javascript; charset=utf-8", DASHBOARD_JS) }))
        .route("/dashboard.css", get(|| async { page("text/css; charset=utf-8", DASHBOARD_CSS) }))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(api::readyz))
        .route("/api/stats", get(api::stats))
        .route("/api/instances", get(api::instances))
        .route("/sd", get(api::http_sd))
        .with_state(source)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
