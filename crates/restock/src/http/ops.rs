//! Operations: liveness, readiness, metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::error::{ErrorBody, ErrorCode};
use crate::app::App;

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "database unreachable", body = ErrorBody)))]
pub async fn readyz(State(app): State<App>) -> impl IntoResponse {
    match app.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            super::error::ApiError::new(ErrorCode::NotReady, "database unreachable").into_response()
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let body = app.metrics.render(&app.db).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
