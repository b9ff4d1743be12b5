//! The built-in `meshrpc.Health.Check` method, served by every server.
//!
//! It answers `{"status": "SERVING"}` or `{"status": "NOT_SERVING"}` (the latter from the
//! moment a graceful shutdown starts), and is exempt from the in-flight limits so that
//! a busy server can still say it is alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::router::Service;
use super::{Context, ServiceNames};
use crate::status::Status;

/// The reserved name of the health service.
pub const HEALTH_SERVICE: &str = "meshrpc.Health";
/// The full name of the health check method.
pub const HEALTH_CHECK: &str = "meshrpc.Health.Check";

/// Arguments of `meshrpc.Health.Check`: optionally, the service to ask about.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthCheckRequest {
    /// A service name; empty or absent asks about the server as a whole.
    #[serde(default)]
    pub service: Option<String>,
}

/// Reply of `meshrpc.Health.Check`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthCheckResponse {
    /// `SERVING` or `NOT_SERVING`.
    pub status: ServingStatus,
}

/// Whether a server takes calls.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServingStatus {
    /// Taking calls.
    Serving,
    /// Shutting down (or otherwise not taking new work).
    NotServing,
}

/// The health service bound to a server's serving flag and its service names.
pub(crate) fn service(serving: Arc<AtomicBool>, names: ServiceNames) -> Service {
    Service::new(HEALTH_SERVICE).method("Check", move |_ctx: Context, req: HealthCheckRequest| {
        let serving = serving.load(Ordering::Acquire);
        let known = match req.service.as_deref() {
            None | Some("") => true,
            Some(s) => names.contains(s),
        };
        async move {
            if !known {
                return Err(Status::not_found(format!("this server has no service {:?}", req.service)));
            }
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            Ok(HealthCheckResponse { status })
        }
    })
}
