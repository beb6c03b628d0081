//! Rejected input: what intake refused, with why, and replay once fixed.

use axum::Json;
use axum::extract::State;
use restock_core::ids::RejectionId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Merchant;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::intake;
use crate::intake::api::parse_batch;
use crate::intake::shopify_products;
use crate::intake::source::{Kind, Profile};
use crate::storage::rejections::{RejectionFilter, RejectionRow};
use restock_core::ids::StoreId;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RejectionQuery {
    /// "impact" (default): highest business impact first (value of the shoppers
    /// waiting on the SKUs it holds back, then their number, then most recently seen),
    /// paged with `offset`. "newest": newest first, paged with `before`.
    #[param(inline)]
    pub sort: Option<RejectionSort>,
    /// Only rejections from this source (api, shopify, woocommerce, csv, or a
    /// configured source's name).
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub source: Option<String>,
    /// Only rejections with this reason code.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub reason_code: Option<String>,
    /// Only rejections naming this SKU.
    #[param(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub sku: Option<String>,
    /// Only rejections not yet replayed successfully.
    pub open: Option<bool>,
    /// Only rejections seen at or after this time (unix milliseconds).
    #[param(minimum = 0)]
    pub since: Option<i64>,
    /// Only rejections older than this id (with sort=newest, the `next` of the
    /// previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Skip this many (with sort=impact, the `next` of the previous page).
    #[param(minimum = 0, maximum = 1000000)]
    pub offset: Option<i64>,
    /// At most this many items (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum RejectionSort {
    #[default]
    Impact,
    Newest,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectionPage {
    pub items: Vec<RejectionRow>,
    /// Cursor for the next page, absent on the last: pass it as `before` with
    /// sort=newest (unless you page with `offset`), as `offset` with sort=impact.
    pub next: Option<i64>,
}

fn text_filter(name: &str, v: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.len() > max || s.chars().any(char::is_control) => {
            Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("{name} must be 1 to {max} bytes without control characters"),
            ))
        }
        v => Ok(v),
    }
}

fn filter_of(
    source: Option<String>,
    reason_code: Option<String>,
    sku: Option<String>,
    open: Option<bool>,
    since: Option<i64>,
) -> ApiResult<RejectionFilter> {
    if since.is_some_and(|s| s < 0) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "since must be at least 0",
        ));
    }
    Ok(RejectionFilter {
        source: text_filter("source", source, 200)?,
        reason_code: text_filter("reason_code", reason_code, 200)?,
        sku: text_filter("sku", sku, 255)?,
        open_only: open.unwrap_or(false),
        since,
    })
}

/// Rejected input (dead letters), highest business impact first or newest first,
/// filtered, a page at a time.
#[utoipa::path(get, path = "/v1/rejections", tag = "intake", security(("api_key" = [])), params(RejectionQuery),
    responses((status = 200, body = RejectionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_rejections(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiQuery(q): ApiQuery<RejectionQuery>,
) -> ApiResult<Json<RejectionPage>> {
    let limit = super::catalog::check_limit(q.limit)?;
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "before must be at least 1",
        ));
    }
    let offset = q.offset.unwrap_or(0);
    if !(0..=1_000_000).contains(&offset) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "offset must be 0 to 1000000",
        ));
    }
    let sort = q.sort.unwrap_or_default();
    let filter = filter_of(q.source, q.reason_code, q.sku, q.open, q.since)?;
    let items = app
        .db
        .rejections(
            store,
            &filter,
            sort == RejectionSort::Impact,
            q.before,
            offset,
            limit,
        )
        .await?;
    let next = if items.len() as i64 != limit {
        None
    } else if sort == RejectionSort::Newest && q.offset.is_none() {
        items.last().map(|r| r.id)
    } else {
        Some(offset + limit)
    };
    Ok(Json(RejectionPage { items, next }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOutcome {
    /// "applied", "stale", "ignored" (nothing to apply, see `detail`), or "rejected"
    /// (with the reason; the rejection stays).
    pub result: String,
    pub detail: String,
}

/// Run a rejected payload through intake again (after fixing the catalog, say).
#[utoipa::path(post, path = "/v1/rejections/{id}/replay", tag = "intake", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ReplayOutcome), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not_replayable")))]
pub async fn replay_rejection(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ReplayOutcome>> {
    let row = app
        .db
        .rejection(store, RejectionId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("rejection"))?;
    Ok(Json(replay_row(&app, store, &row).await?))
}

/// Runs one kept rejection through intake again and records the outcome on it.
pub async fn replay_row(app: &App, store: StoreId, row: &RejectionRow) -> ApiResult<ReplayOutcome> {
    if row.reason_code == ErrorCode::UnsupportedTopic.as_str() {
        // Kept so the merchant can see what arrived; a payload of another topic is
        // never applied as an inventory level, however often it is replayed.
        return Err(ApiError::new(
            ErrorCode::NotReplayable,
            "this payload came for a topic Restock does not handle; it is kept for inspection only",
        ));
    }
    let outcome = match row.source.as_str() {
        // WooCommerce's unknown SKUs are kept in the stock API's item shape; anything
        // else under "woocommerce" is the product payload as it arrived.
        "woocommerce" if row.reason_code != ErrorCode::UnknownSku.as_str() => {
            match crate::intake::woocommerce::parse_product(row.payload.as_bytes()) {
                Err((_, reason)) => ReplayOutcome {
                    result: "rejected".into(),
                    detail: reason,
                },
                Ok(_) => {
                    let Json(r) = super::webhooks::apply_woocommerce_product(
                        app,
                        store,
                        row.payload.as_bytes(),
                    )
                    .await?;
                    ReplayOutcome {
                        result: if r.result == "stale" || r.result == "ignored" {
                            r.result.as_str()
                        } else {
                            "applied"
                        }
                        .into(),
                        detail: r.reason.unwrap_or(r.result),
                    }
                }
            }
        }
        "api" | "woocommerce" => {
            let item: serde_json::Value = serde_json::from_str(&row.payload).map_err(|e| {
                ApiError::internal(anyhow::anyhow!("stored payload is not JSON: {e}"))
            })?;
            let (updates, rejected) = parse_batch(store, std::slice::from_ref(&item), app.now());
            if let Some((_, r)) = rejected.first() {
                ReplayOutcome {
                    result: "rejected".into(),
                    detail: r.reason.clone(),
                }
            } else {
                // Replaying an unknown SKU that is still unknown would file a new
                // rejection; check first so a replay never multiplies rejections.
                let sku = updates
                    .first()
                    .map(|u| u.sku.as_str().to_string())
                    .unwrap_or_default();
                if app.db.variant_by_sku(store, &sku).await?.is_none() {
                    ReplayOutcome {
                        result: "rejected".into(),
                        detail: format!("no variant with SKU {sku:?} in this store"),
                    }
                } else {
                    let out = intake::apply(app, store, "api", &updates, &[]).await?;
                    let result = if out.applied > 0 { "applied" } else { "stale" };
                    ReplayOutcome {
                        result: result.into(),
                        detail: format!("{} restock(s)", out.restocks.len()),
                    }
                }
            }
        }
        crate::intake::csv::SOURCE => {
            let (result, detail) = crate::intake::csv::replay(app, store, row).await?;
            ReplayOutcome { result, detail }
        }
        "shopify" => match crate::intake::shopify::parse(row.payload.as_bytes()) {
            Err((_, reason)) => ReplayOutcome {
                result: "rejected".into(),
                detail: reason,
            },
            Ok(parsed) => {
                if app
                    .db
                    .variant_by_inventory_item(store, &parsed.inventory_item_id)
                    .await?
                    .is_none()
                {
                    ReplayOutcome {
                        result: "rejected".into(),
                        detail: format!(
                            "no variant is mapped to inventory item {}",
                            parsed.inventory_item_id
                        ),
                    }
                } else {
                    let Json(r) =
                        super::webhooks::apply_shopify(app, store, row.payload.as_bytes()).await?;
                    ReplayOutcome {
                        result: if r.result == "stale" {
                            "stale"
                        } else {
                            "applied"
                        }
                        .into(),
                        detail: r.result.clone(),
                    }
                }
            }
        },
        source @ (shopify_products::SOURCE | shopify_products::DELETE_SOURCE) => {
            let topic = if source == shopify_products::DELETE_SOURCE {
                shopify_products::Topic::Delete
            } else {
                shopify_products::Topic::Upsert
            };
            match shopify_products::apply(app, store, topic, row.payload.as_bytes()).await? {
                Err((_, reason)) => ReplayOutcome {
                    result: "rejected".into(),
                    detail: reason,
                },
                Ok(applied) => {
                    let (result, detail) = applied.describe();
                    ReplayOutcome {
                        result: result.into(),
                        detail,
                    }
                }
            }
        }
        "orders" => {
            let parsed = serde_json::from_str::<crate::intake::orders::OrderBody>(&row.payload)
                .map_err(|e| (ErrorCode::InvalidPayload, e.to_string()))
                .and_then(|b| b.parse(app.now()));
            match parsed {
                Err((_, reason)) => ReplayOutcome {
                    result: "rejected".into(),
                    detail: reason,
                },
                Ok(order) => {
                    let out = crate::intake::orders::record(app, store, &order).await?;
                    ReplayOutcome {
                        result: "applied".into(),
                        detail: super::orders::answer(order.order_ref.clone(), out).1.status,
                    }
                }
            }
        }
        source @ ("shopify_orders" | "woocommerce_orders") => match if source == "shopify_orders" {
            crate::intake::orders::parse_shopify(row.payload.as_bytes())
        } else {
            crate::intake::orders::parse_woocommerce(row.payload.as_bytes())
        } {
            Err((_, reason)) => ReplayOutcome {
                result: "rejected".into(),
                detail: reason,
            },
            Ok(order) => {
                let out = crate::intake::orders::record(app, store, &order).await?;
                ReplayOutcome {
                    result: "applied".into(),
                    detail: super::orders::answer(order.order_ref.clone(), out).1.status,
                }
            }
        },
        other => replay_configured(app, store, other, row).await?,
    };
    app.db
        .mark_rejection_replayed(
            RejectionId(row.id),
            &format!("{}: {}", outcome.result, outcome.detail),
            app.now(),
        )
        .await?;
    Ok(outcome)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayBody {
    /// Only rejections from this source.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub source: Option<String>,
    /// Only rejections with this reason code.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub reason_code: Option<String>,
    /// Only rejections naming this SKU.
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub sku: Option<String>,
    /// Only rejections seen at or after this time (unix milliseconds).
    #[schema(minimum = 0)]
    pub since: Option<i64>,
    /// At most this many (1-1000, default 100), highest impact first. Repeat the call
    /// for more: what was applied is no longer open.
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkReplayItem {
    pub id: i64,
    /// "applied", "stale", "rejected" or "not_replayable".
    pub result: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkReplayOutcome {
    /// Open rejections that matched (at most `limit`).
    pub matched: usize,
    pub applied: usize,
    pub stale: usize,
    /// Still rejected: the cause is not fixed (each keeps its rejection).
    pub rejected: usize,
    pub not_replayable: usize,
    pub items: Vec<BulkReplayItem>,
}

/// Replay every open rejection matching a filter, highest impact first (after fixing
/// the catalog or a source's profile, say).
#[utoipa::path(post, path = "/v1/rejections/replay", tag = "intake", security(("api_key" = [])),
    request_body = BulkReplayBody,
    responses((status = 200, body = BulkReplayOutcome), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replay_matching(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiJson(body): ApiJson<BulkReplayBody>,
) -> ApiResult<Json<BulkReplayOutcome>> {
    let limit = body.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidPayload,
            "limit must be 1 to 1000",
        ));
    }
    let filter = filter_of(
        body.source,
        body.reason_code,
        body.sku,
        Some(true),
        body.since,
    )
    .map_err(|e| ApiError::new(ErrorCode::InvalidPayload, e.message))?;
    let rows = app
        .db
        .rejections(store, &filter, true, None, 0, limit)
        .await?;
    Ok(Json(replay_rows(&app, store, &rows).await?))
}

/// A dead letter of a configured source (poller or stream): kept in the stock API's
/// item shape when it parsed, or as the raw record when it did not (then parsed again
/// with the source's current settings); applied under the source's name and profile.
async fn replay_configured(
    app: &App,
    store: StoreId,
    source: &str,
    row: &RejectionRow,
) -> ApiResult<ReplayOutcome> {
    let src = match app.db.source(store, source).await? {
        Some(src) if Kind::parse(&src.kind).is_some_and(Kind::is_configured) => src,
        _ => {
            return Err(ApiError::new(
                ErrorCode::NotReplayable,
                format!("no replay for source {source:?} (it is not connected)"),
            ));
        }
    };
    let item = serde_json::from_str::<crate::intake::api::StockItem>(&row.payload)
        .ok()
        .map(|i| i.parse(row.received_at));
    let parsed = match item {
        Some(Ok(u)) => Ok(vec![u]),
        Some(Err((code, reason))) => Err((code.as_str().to_string(), reason)),
        None => {
            let kind = Kind::parse(&src.kind).unwrap_or(Kind::Api);
            let config =
                crate::intake::source::open_config(app, &src).map_err(ApiError::internal)?;
            crate::intake::source::reparse(kind, &config, &row.payload, row.received_at)
        }
    };
    let updates = match parsed {
        Err((code, reason)) if code == ErrorCode::NotReplayable.as_str() => {
            return Err(ApiError::new(ErrorCode::NotReplayable, reason));
        }
        Err((_, reason)) => {
            return Ok(ReplayOutcome {
                result: "rejected".into(),
                detail: reason,
            });
        }
        Ok(u) => u,
    };
    let profile = Profile::from_stored(&src.profile);
    if profile.unknown_sku != crate::intake::source::UnknownSku::Placeholder {
        for u in &updates {
            if app
                .db
                .variant_by_sku(store, u.sku.as_str())
                .await?
                .is_none()
            {
                return Ok(ReplayOutcome {
                    result: "rejected".into(),
                    detail: format!("no variant with SKU {:?} in this store", u.sku.as_str()),
                });
            }
        }
    }
    let out = intake::apply_with(app, store, source, &profile, updates, vec![]).await?;
    Ok(if !out.rejection_ids.is_empty() {
        ReplayOutcome {
            result: "rejected".into(),
            detail: "refused again by the source's profile".into(),
        }
    } else if out.applied > 0 {
        ReplayOutcome {
            result: "applied".into(),
            detail: format!("{} restock(s)", out.restocks.len()),
        }
    } else {
        ReplayOutcome {
            result: "stale".into(),
            detail: "newer stock is already recorded".into(),
        }
    })
}

/// Replays the parked updates (unknown SKU, under a `park` profile) naming any of
/// `skus`, now that the catalog has them. Failures are logged, never raised: the
/// catalog change that triggered this has already succeeded.
pub async fn replay_parked(app: &App, store: StoreId, skus: &[String]) {
    for sku in skus {
        let filter = RejectionFilter {
            reason_code: Some(ErrorCode::UnknownSku.as_str().to_string()),
            sku: Some(sku.clone()),
            open_only: true,
            ..RejectionFilter::default()
        };
        let rows = match app.db.rejections(store, &filter, true, None, 0, 1000).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, sku, "cannot look up parked updates");
                continue;
            }
        };
        for row in rows {
            let profile = crate::intake::source::profile_of(app, store, &row.source).await;
            if profile.unknown_sku != crate::intake::source::UnknownSku::Park {
                continue;
            }
            match replay_row(app, store, &row).await {
                Ok(o) => {
                    tracing::info!(rejection = row.id, sku, result = %o.result, "parked update replayed")
                }
                Err(e) => {
                    tracing::warn!(rejection = row.id, sku, error = %e, "parked update not replayed")
                }
            }
        }
    }
}

/// Replays `rows` one by one, tallying the outcomes.
pub async fn replay_rows(
    app: &App,
    store: StoreId,
    rows: &[RejectionRow],
) -> ApiResult<BulkReplayOutcome> {
    let mut out = BulkReplayOutcome {
        matched: rows.len(),
        applied: 0,
        stale: 0,
        rejected: 0,
        not_replayable: 0,
        items: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        let (result, detail) = match replay_row(app, store, row).await {
            Ok(o) => (o.result, o.detail),
            Err(e) if e.code == ErrorCode::NotReplayable => {
                ("not_replayable".to_string(), e.message)
            }
            Err(e) => return Err(e),
        };
        match result.as_str() {
            "applied" => out.applied += 1,
            "stale" | "ignored" => out.stale += 1,
            "not_replayable" => out.not_replayable += 1,
            _ => out.rejected += 1,
        }
        out.items.push(BulkReplayItem {
            id: row.id,
            result,
            detail,
        });
    }
    Ok(out)
}
