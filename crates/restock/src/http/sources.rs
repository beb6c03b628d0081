//! Sources: connect pollers and streams, set validation profiles, and see each
//! source's health.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Merchant;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::config::IntakeConfig;
use crate::intake::runner::stale_after_ms;
use crate::intake::source::{Kind, Profile, check_config, redacted, seal_context};
use crate::storage::sources::{SourceRow, SourceSettings};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    /// What the source is. Built-in sources (api, shopify, woocommerce, csv) are
    /// named after their kind and take only a profile.
    pub kind: Kind,
    /// The kind's settings (see the README's sources section). Stored sealed; shown
    /// back with secrets masked.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    pub profile: Option<Profile>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Pollers: seconds between runs (60 to 604800, default 900).
    #[schema(minimum = 60, maximum = 604800)]
    pub interval_secs: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceHealth {
    /// "ok", "failing" (the last run failed), "breaker_open", "stale", "idle" (not run
    /// yet) or "disabled".
    pub status: String,
    pub last_run_at: Option<i64>,
    pub last_success_at: Option<i64>,
    /// Observed time of the newest change the source reported.
    pub last_event_at: Option<i64>,
    /// Seconds between the newest change the source reported and now.
    pub lag_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub consecutive_failures: i64,
    /// Share of the last (up to 20) runs or batches that failed.
    pub error_rate: f64,
    pub runs: i64,
    pub applied: i64,
    pub rejected: i64,
    /// Pollers: not run until then after repeated failures.
    pub breaker_open_until: Option<i64>,
    pub stale_since: Option<i64>,
    /// How long the source may go without a success before it is stale (seconds).
    pub stale_after_secs: i64,
    /// The instance running it (pollers and WebSocket streams), while its lease holds.
    pub running_on: Option<String>,
    /// Pollers: when the next run is due.
    pub next_run_at: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub interval_secs: i64,
    /// Settings with secrets masked.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub profile: Profile,
    /// Where the source left off.
    pub cursor: Option<String>,
    pub health: SourceHealth,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceList {
    pub items: Vec<SourceView>,
}

/// The health as the API, the CLI and `/readyz` show it.
pub fn health_of(intake: &IntakeConfig, row: &SourceRow, now: i64) -> SourceHealth {
    let kind = Kind::parse(&row.kind);
    let failed = row.recent.chars().filter(|c| *c == 'f').count();
    let status = if !row.enabled {
        "disabled"
    } else if row.breaker_open_until.is_some_and(|t| t > now) {
        "breaker_open"
    } else if row.stale_since.is_some() {
        "stale"
    } else if row.consecutive_failures > 0 {
        "failing"
    } else if row.last_run_at.is_none() {
        "idle"
    } else {
        "ok"
    };
    SourceHealth {
        status: status.into(),
        last_run_at: row.last_run_at,
        last_success_at: row.last_success_at,
        last_event_at: row.last_event_at,
        lag_seconds: row
            .last_event_at
            .map(|t| ((now - t).max(0) as f64) / 1000.0),
        last_error: row.last_error.clone(),
        last_error_at: row.last_error_at,
        consecutive_failures: row.consecutive_failures,
        error_rate: if row.recent.is_empty() {
            0.0
        } else {
            failed as f64 / row.recent.len() as f64
        },
        runs: row.runs,
        applied: row.applied,
        rejected: row.rejected,
        breaker_open_until: row.breaker_open_until.filter(|t| *t > now),
        stale_since: row.stale_since,
        stale_after_secs: stale_after_ms(intake, row) / 1000,
        running_on: row
            .lease_owner
            .clone()
            .filter(|_| row.lease_until.is_some_and(|t| t > now)),
        next_run_at: kind
            .filter(|k| k.is_pull())
            .map(|_| row.next_run_at.max(row.breaker_open_until.unwrap_or(0))),
    }
}

pub fn view_of(app: &App, row: &SourceRow, now: i64) -> SourceView {
    let config = crate::intake::source::open_config(app, row)
        .map(|c| redacted(&c))
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    SourceView {
        name: row.name.clone(),
        kind: row.kind.clone(),
        enabled: row.enabled,
        interval_secs: row.interval_secs,
        config,
        profile: Profile::from_stored(&row.profile),
        cursor: row.cursor.clone(),
        health: health_of(&app.config.intake, row, now),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// The store's sources with their health: configured pollers and streams, and the
/// built-in push sources once they have delivered (or have a profile).
#[utoipa::path(get, path = "/v1/sources", tag = "intake", security(("api_key" = [])),
    responses((status = 200, body = SourceList), (status = 401, body = ErrorBody)))]
pub async fn list_sources(
    State(app): State<App>,
    Merchant(store): Merchant,
) -> ApiResult<Json<SourceList>> {
    let now = app.now();
    let items = app
        .db
        .sources(store)
        .await?
        .iter()
        .map(|r| view_of(&app, r, now))
        .collect();
    Ok(Json(SourceList { items }))
}

fn check_name(name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidValue,
            "a source's name is 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// One source with its health.
#[utoipa::path(get, path = "/v1/sources/{name}", tag = "intake", security(("api_key" = [])),
    params(("name" = String, Path, description = "The source's name (a built-in source's is its kind)", pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = SourceView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_source(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<SourceView>> {
    let row = app
        .db
        .source(store, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("source"))?;
    Ok(Json(view_of(&app, &row, app.now())))
}

/// Connect or change a source: a poller or stream with its settings, or a built-in
/// source's validation profile. Changes reach the running workers within a second.
#[utoipa::path(put, path = "/v1/sources/{name}", tag = "intake", security(("api_key" = [])),
    params(("name" = String, Path, description = "The source's name (a built-in source's is its kind)", pattern = "^[A-Za-z0-9._-]{1,64}$")), request_body = SourceBody,
    responses((status = 200, body = SourceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_source(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SourceBody>,
) -> ApiResult<Json<SourceView>> {
    check_name(&name)?;
    let builtin_name = Kind::parse(&name).filter(|k| !k.is_configured());
    if body.kind.is_configured() {
        if builtin_name.is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!("{name:?} is the name of a built-in source; choose another"),
            ));
        }
    } else if builtin_name != Some(body.kind) {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            format!(
                "a built-in {} source is named {:?}",
                body.kind.as_str(),
                body.kind.as_str()
            ),
        ));
    }
    let config = body
        .config
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if !config.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "config must be an object",
        ));
    }
    check_config(body.kind, &config).map_err(|e| ApiError::new(ErrorCode::InvalidValue, e))?;
    let interval = body.interval_secs.unwrap_or(900);
    if !(60..=604_800).contains(&interval) {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "interval_secs must be 60 to 604800",
        ));
    }
    let sealed = if body.kind.is_configured() {
        app.secrets
            .seal(&seal_context(store.0, &name), &config.to_string())
    } else {
        String::new()
    };
    let profile =
        serde_json::to_string(&body.profile.unwrap_or_default()).map_err(ApiError::internal)?;
    let row = app
        .db
        .put_source(
            store,
            &SourceSettings {
                name: &name,
                kind: body.kind.as_str(),
                config_sealed: &sealed,
                profile: &profile,
                enabled: body.enabled.unwrap_or(true),
                interval_secs: if body.kind.is_pull() { interval } else { 0 },
            },
            app.now(),
        )
        .await?;
    Ok(Json(view_of(&app, &row, app.now())))
}

/// Disconnect a source. Its dead letters stay.
#[utoipa::path(delete, path = "/v1/sources/{name}", tag = "intake", security(("api_key" = [])),
    params(("name" = String, Path, description = "The source's name (a built-in source's is its kind)", pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_source(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if app.db.delete_source(store, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("source"))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only entries older than this id (the `next` of the previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// At most this many entries (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntakeLogPage {
    pub items: Vec<crate::storage::intake_log::IntakeLogRow>,
    /// Cursor for the next page, absent on the last: pass it as `before`.
    pub next: Option<i64>,
}

/// What a source delivered, newest first: each delivery as it arrived (the body of
/// a webhook or API call, a stream's messages, an import's lines, the records a
/// poller found changed), its cursor and what became of it. Kept for
/// `retention.intake_log_hours` (72 by default).
#[utoipa::path(get, path = "/v1/sources/{name}/log", tag = "intake", security(("api_key" = [])),
    params(("name" = String, Path, description = "The source's name (a built-in source's is its kind)", pattern = "^[A-Za-z0-9._-]{1,64}$"), LogQuery),
    responses((status = 200, body = IntakeLogPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn source_log(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<IntakeLogPage>> {
    // A name no source can have names no source: not found, as GET /v1/sources/{name}.
    if check_name(&name).is_err() {
        return Err(ApiError::not_found("source"));
    }
    let limit = super::catalog::check_limit(q.limit)?;
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "before must be at least 1",
        ));
    }
    let items = app.db.intake_log(store, &name, q.before, limit).await?;
    if items.is_empty() && q.before.is_none() && app.db.source(store, &name).await?.is_none() {
        return Err(ApiError::not_found("source"));
    }
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(Json(IntakeLogPage { items, next }))
}
