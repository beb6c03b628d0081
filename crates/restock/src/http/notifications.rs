//! The outbox as the merchant sees it: notifications by state, and replay of dead ones.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use restock_core::ids::NotificationId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Merchant;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::storage::outbox::{NotificationRow, Replay};

const STATES: [&str; 6] = ["pending", "running", "done", "failed", "dead", "skipped"];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// pending, running, done, failed, dead or skipped.
    #[param(pattern = "^(pending|running|done|failed|dead|skipped)$")]
    pub state: Option<String>,
    /// Return items after this cursor (the `next` of the previous page).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many items (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationRow>,
    pub next: Option<i64>,
}

/// Notifications, optionally in one state (`dead` lists what exhausted its retries).
#[utoipa::path(get, path = "/v1/notifications", tag = "outbox", security(("api_key" = [])), params(NotificationQuery),
    responses((status = 200, body = NotificationPage), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_notifications(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiQuery(q): ApiQuery<NotificationQuery>,
) -> ApiResult<Json<NotificationPage>> {
    if let Some(s) = q.state.as_deref()
        && !STATES.contains(&s)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            format!("state must be one of {}", STATES.join(", ")),
        ));
    }
    let limit = super::catalog::check_limit(q.limit)?;
    let items = app
        .db
        .notifications(
            store,
            q.state.as_deref(),
            super::catalog::check_after(q.after)?,
            limit,
        )
        .await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok(Json(NotificationPage { items, next }))
}

/// Counts of the store's notifications by state.
#[utoipa::path(get, path = "/v1/outbox", tag = "outbox", security(("api_key" = [])),
    responses((status = 200, body = BTreeMap<String, i64>), (status = 401, body = ErrorBody)))]
pub async fn outbox_summary(
    State(app): State<App>,
    Merchant(store): Merchant,
) -> ApiResult<Json<BTreeMap<String, i64>>> {
    let mut out: BTreeMap<String, i64> = STATES.iter().map(|s| (s.to_string(), 0)).collect();
    for (state, n) in app.db.outbox_depth(Some(store)).await? {
        out.insert(state, n);
    }
    Ok(Json(out))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    pub id: i64,
    pub state: String,
}

/// Queue a dead or failed notification again with fresh attempts.
#[utoipa::path(post, path = "/v1/notifications/{id}/replay", tag = "outbox", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ReplayResult), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn replay_notification(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ReplayResult>> {
    match app
        .db
        .replay_notification(store, NotificationId(id), app.now())
        .await?
    {
        None => Err(ApiError::not_found("notification")),
        Some(Replay::Queued) => {
            app.work_ready.notify_one();
            Ok(Json(ReplayResult {
                id,
                state: "pending".into(),
            }))
        }
        Some(Replay::NotReplayable(state)) => Err(ApiError::new(
            ErrorCode::NotReplayable,
            format!("only dead or failed notifications can be replayed; this one is {state}"),
        )),
    }
}
