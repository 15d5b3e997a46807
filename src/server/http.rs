//! The operator's HTTP endpoints: `/metrics`, `/healthz` (liveness) and `/readyz` (readiness).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};

use crate::replica_instance::oci::notify::{MAX_BODY, Notifications, Rejected};
use crate::server::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Default)]
pub struct Health {
    state: AtomicU8,
}

const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const READY: u8 = 2;

impl Health {
    /// Waiting for the leader lease: ready to serve, so rolling updates of a two-replica
    /// Deployment can proceed, but not reconciling.
    pub fn set_standby(&self) {
        self.state.store(STANDBY, Ordering::SeqCst);
    }
    /// Leading and every watch has synced.
    pub fn set_ready(&self) {
        self.state.store(READY, Ordering::SeqCst);
    }
    /// Not ready (starting, or shutting down).
    pub fn set_not_ready(&self) {
        self.state.store(STARTING, Ordering::SeqCst);
    }
    fn describe(&self) -> (bool, &'static str) {
        match self.state.load(Ordering::SeqCst) {
            READY => (true, "ready"),
            STANDBY => (true, "standby"),
            _ => (false, "starting"),
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Arc<Health>,
    notifications: Arc<Notifications>,
}

/// The router: `/metrics`, `/healthz`, `/readyz` and `POST /notifications`.
pub fn router(metrics: Metrics, health: Arc<Health>, notifications: Arc<Notifications>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/notifications",
            post(notifications_handler).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .with_state(AppState {
            metrics,
            health,
            notifications,
        })
}

async fn notifications_handler(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (outcome, status, text) = match s.notifications.handle(auth, &body) {
        Ok(n) => ("accepted", StatusCode::OK, format!("queued {n}")),
        Err(Rejected::NotConfigured) => (
            "not_configured",
            StatusCode::SERVICE_UNAVAILABLE,
            "notifications are not configured (NOTIFICATION_TOKEN)".into(),
        ),
        Err(Rejected::Standby) => ("standby", StatusCode::SERVICE_UNAVAILABLE, "standby; retry".into()),
        Err(Rejected::Unauthorized) => ("unauthorized", StatusCode::UNAUTHORIZED, "unauthorized".into()),
        Err(Rejected::BadPayload(e)) => ("bad_payload", StatusCode::BAD_REQUEST, e),
    };
    s.metrics.notifications.with_label_values(&[outcome]).inc();
    (status, text)
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.describe() {
        (true, what) => (StatusCode::OK, what),
        (false, what) => (StatusCode::SERVICE_UNAVAILABLE, what),
    }
}
