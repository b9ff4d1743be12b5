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

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use api::AdminSource;

/// The dashboard page and its assets.
const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");

/// Serves the admin endpoint on `listener` until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, source: Arc<AdminSource>, stop: CancellationToken) {
    let app = router(source);
    let served = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    tokio::select! {
        r = served => if let Err(e) = r {
            tracing::warn!("the admin endpoint stopped: {e}");
        },
        // Requests in progress (a browser's keep-alive) do not hold the server up.
        _ = async { stop.cancelled().await; tokio::time::sleep(std::time::Duration::from_millis(200)).await } => {}
    }
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
