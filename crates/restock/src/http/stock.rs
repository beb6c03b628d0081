//! Stock updates from the merchant's API, and the restock history.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Merchant;
use super::error::{ApiError, ApiResult, ErrorBody, ErrorCode, ItemsJson};
use crate::app::App;
use crate::intake;
use crate::intake::api::parse_batch;

pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockBatch {
    /// Up to 10,000 stock items, each shaped like `StockItem`. Each is validated on
    /// its own: an item that is not a valid `StockItem` (wrong shape, unknown SKU,
    /// a quantity out of range, a location with control characters) is answered in
    /// `rejected` with its code and kept for replay, and the others are applied.
    #[schema(value_type = Vec<Value>, max_items = 10000)]
    pub items: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedItem {
    /// Position in the batch.
    pub index: usize,
    pub code: String,
    pub reason: String,
    /// Where the item is kept for replay (`/v1/rejections/{id}`).
    pub rejection_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RestockView {
    pub restock_id: i64,
    pub sku: String,
    /// The market whose stock returned; absent for the variant as a whole.
    pub market: Option<String>,
    pub quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockBatchResult {
    pub applied: u64,
    /// Older than what is stored, or a replay: ignored.
    pub stale: u64,
    pub rejected: Vec<RejectedItem>,
    pub restocks: Vec<RestockView>,
}

/// Apply a batch of stock updates. Idempotent; late, older updates never overwrite newer ones.
#[utoipa::path(post, path = "/v1/stock", tag = "stock", security(("api_key" = [])), request_body = StockBatch,
    responses((status = 200, body = StockBatchResult), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn post_stock(
    State(app): State<App>,
    Merchant(store): Merchant,
    ItemsJson(batch): ItemsJson<StockBatch>,
) -> ApiResult<Json<StockBatchResult>> {
    if batch.items.len() > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!("at most {MAX_BATCH} items per batch; split it"),
        ));
    }
    let (updates, rejected) = parse_batch(store, &batch.items, app.now());
    let parse_rejections: Vec<_> = rejected.iter().map(|(_, r)| r.clone()).collect();
    let out = intake::apply(&app, store, "api", &updates, &parse_rejections).await?;
    let received = intake::Received {
        format: "json",
        payload: serde_json::json!({ "items": &batch.items }).to_string(),
        cursor: None,
    };
    intake::log_delivery(&app, store, "api", &received, intake::stock_outcome(&out)).await;
    // Rejection ids come back in insertion order: unknown SKUs first, then parse failures.
    let (unknown_ids, parse_ids) = out.rejection_ids.split_at(out.unknown_sku.len());
    // Map parsed-update positions back to batch positions.
    let rejected_at: std::collections::HashSet<usize> = rejected.iter().map(|(i, _)| *i).collect();
    let parsed_positions: Vec<usize> = (0..batch.items.len())
        .filter(|i| !rejected_at.contains(i))
        .collect();
    let mut items: Vec<RejectedItem> = rejected
        .into_iter()
        .zip(parse_ids)
        .map(|((index, r), id)| RejectedItem {
            index,
            code: r.reason_code,
            reason: r.reason,
            rejection_id: *id,
        })
        .collect();
    for (k, id) in out.unknown_sku.iter().zip(unknown_ids) {
        let sku = updates[*k].sku.as_str();
        items.push(RejectedItem {
            index: parsed_positions[*k],
            code: "unknown_sku".into(),
            reason: format!("no variant with SKU {sku:?} in this store"),
            rejection_id: *id,
        });
    }
    for (k, r, id) in &out.refused {
        items.push(RejectedItem {
            index: parsed_positions[*k],
            code: r.reason_code.clone(),
            reason: r.reason.clone(),
            rejection_id: *id,
        });
    }
    items.sort_by_key(|i| i.index);
    Ok(Json(StockBatchResult {
        applied: out.applied,
        stale: out.stale,
        rejected: items,
        restocks: out
            .restocks
            .into_iter()
            .map(|r| RestockView {
                restock_id: r.event_id.0,
                sku: r.sku,
                market: r.market,
                quantity: r.quantity,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RestockEventView {
    pub id: i64,
    pub sku: String,
    /// The market whose stock returned; absent for the variant as a whole.
    pub market: Option<String>,
    pub quantity: i64,
    pub available_until: Option<String>,
    /// Alerts planned to send so far (deferred ones included).
    pub planned: i64,
    /// Of those, deferred (quiet hours, frequency cap).
    pub deferred: i64,
    /// Shoppers held back (opted out, recent purchase, ...), holdouts excluded.
    pub held: i64,
    /// Shoppers held out to measure lift.
    pub held_out: i64,
    /// "pending" or "waiting" (being released, next wave at `next_wave_at`), "done",
    /// "sold_out" (stopped; the rest wait for the next restock), "superseded" (sold out
    /// and back again before it was released in full: the newer restock carries on)
    /// or "failed".
    pub plan_state: String,
    /// Waves started so far.
    pub waves: i64,
    pub next_wave_at: Option<String>,
    pub last_error: Option<String>,
    pub at: String,
    pub finished_at: Option<String>,
}

impl From<crate::storage::stock::RestockEventRow> for RestockEventView {
    fn from(r: crate::storage::stock::RestockEventRow) -> Self {
        RestockEventView {
            id: r.id,
            sku: r.sku,
            market: r.market,
            quantity: r.quantity,
            available_until: r.available_until.map(crate::util::format_ms),
            planned: r.planned_count,
            deferred: r.deferred_count,
            held: r.held_count,
            held_out: r.held_out_count,
            next_wave_at: (r.plan_state == "waiting")
                .then_some(r.next_run_at)
                .flatten()
                .map(crate::util::format_ms),
            plan_state: r.plan_state,
            waves: r.wave,
            last_error: r.last_error,
            at: crate::util::format_ms(r.created_at),
            finished_at: r.finished_at.map(crate::util::format_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaveView {
    pub wave: i64,
    pub started_at: String,
    /// Available to sell when the wave started (it was sized on this).
    pub available: i64,
    /// Sends the wave allowed; absent when everyone is told at once.
    pub capacity: Option<i64>,
    pub planned: i64,
    pub held: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RestockDetail {
    #[serde(flatten)]
    pub restock: RestockEventView,
    pub wave_list: Vec<WaveView>,
}

/// Recent restock events, newest first.
#[utoipa::path(get, path = "/v1/restocks", tag = "stock", security(("api_key" = [])),
    responses((status = 200, body = Vec<RestockEventView>), (status = 401, body = ErrorBody)))]
pub async fn list_restocks(
    State(app): State<App>,
    Merchant(store): Merchant,
) -> ApiResult<Json<Vec<RestockEventView>>> {
    let rows = app.db.restock_events(store, 100).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// One restock: how it is being released, wave by wave.
#[utoipa::path(get, path = "/v1/restocks/{id}", tag = "stock", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = RestockDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_restock(
    State(app): State<App>,
    Merchant(store): Merchant,
    super::error::ApiPath(id): super::error::ApiPath<i64>,
) -> ApiResult<Json<RestockDetail>> {
    let (row, waves) = app
        .db
        .restock_event(store, restock_core::ids::RestockEventId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("restock"))?;
    Ok(Json(RestockDetail {
        restock: row.into(),
        wave_list: waves
            .into_iter()
            .map(|w| WaveView {
                wave: w.wave,
                started_at: crate::util::format_ms(w.started_at),
                available: w.available,
                capacity: w.capacity,
                planned: w.planned,
                held: w.held,
            })
            .collect(),
    }))
}
