//! Rejected input: what intake refused, with why, and replay once fixed.

use axum::Json;
use axum::extract::State;
use restock_core::ids::RejectionId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Merchant;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::intake;
use crate::intake::api::parse_batch;
use crate::intake::shopify_products;
use crate::storage::rejections::RejectionRow;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RejectionQuery {
    /// Return rejections older than this cursor (the `next` of the previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// At most this many items (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectionPage {
    pub items: Vec<RejectionRow>,
    /// Cursor for the next (older) page, absent on the last.
    pub next: Option<i64>,
}

/// Rejected input, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/rejections", tag = "intake", security(("api_key" = [])), params(RejectionQuery),
    responses((status = 200, body = RejectionPage), (status = 401, body = ErrorBody)))]
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
    let items = app.db.rejections(store, q.before, limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
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
                        &app,
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
                    let out = intake::apply(&app, store, "api", &updates, &[]).await?;
                    let result = if out.applied > 0 { "applied" } else { "stale" };
                    ReplayOutcome {
                        result: result.into(),
                        detail: format!("{} restock(s)", out.restocks.len()),
                    }
                }
            }
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
                        super::webhooks::apply_shopify(&app, store, row.payload.as_bytes()).await?;
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
            match shopify_products::apply(&app, store, topic, row.payload.as_bytes()).await? {
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
                    let out = crate::intake::orders::record(&app, store, &order).await?;
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
                let out = crate::intake::orders::record(&app, store, &order).await?;
                ReplayOutcome {
                    result: "applied".into(),
                    detail: super::orders::answer(order.order_ref.clone(), out).1.status,
                }
            }
        },
        other => {
            return Err(ApiError::new(
                ErrorCode::NotReplayable,
                format!("no replay for source {other:?}"),
            ));
        }
    };
    app.db
        .mark_rejection_replayed(
            RejectionId(id),
            &format!("{}: {}", outcome.result, outcome.detail),
            app.now(),
        )
        .await?;
    Ok(Json(outcome))
}
