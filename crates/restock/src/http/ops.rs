//! Operations: liveness, readiness, metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::error::{ApiError, ErrorBody, ErrorCode};
use crate::app::App;

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// How long readiness waits for the database before answering not ready.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// Readiness: the database answers a query within 0.8 s. The body says "ready" and,
/// on a second line, how many sources of all stores are in each health state (a
/// failing source does not make the instance unready; no names are shown here).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready, then `sources: N ok, N failing, ...`", content_type = "text/plain"),
    (status = 503, description = "not_ready: the database does not answer", body = ErrorBody)))]
pub async fn readyz(State(app): State<App>) -> impl IntoResponse {
    match tokio::time::timeout(READY_TIMEOUT, app.db.ping()).await {
        Ok(Ok(())) => {
            let sources = match tokio::time::timeout(READY_TIMEOUT, app.db.all_sources()).await {
                Ok(Ok(rows)) => {
                    let now = app.now();
                    let mut counts = std::collections::BTreeMap::<String, usize>::new();
                    for r in &rows {
                        *counts
                            .entry(super::sources::health_of(&app.config.intake, r, now).status)
                            .or_default() += 1;
                    }
                    let parts: Vec<String> =
                        counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
                    format!(
                        "sources: {}",
                        if parts.is_empty() {
                            "none".into()
                        } else {
                            parts.join(", ")
                        }
                    )
                }
                _ => "sources: unknown".into(),
            };
            (StatusCode::OK, format!("ready\n{sources}\n")).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::util::ErrorChain(&e), "readiness check failed");
            ApiError::new(ErrorCode::NotReady, "database unreachable").into_response()
        }
        Err(_) => {
            tracing::warn!("readiness check: the database did not answer in time");
            ApiError::new(ErrorCode::NotReady, "database did not answer in time").into_response()
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let body = app.metrics.render(&app.db).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
