//! Rejected input: what intake refused, with why, and replay once fixed.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use restock_core::ids::RejectionId;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Merchant;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::app::App;
use crate::intake;
use crate::intake::api::parse_batch;
use crate::storage::rejections::RejectionRow;

/// Recent rejected input, newest first.
#[utoipa::path(get, path = "/v1/rejections", tag = "intake", security(("api_key" = [])),
    responses((status = 200, body = Vec<RejectionRow>), (status = 401, body = ErrorBody)))]
pub async fn list_rejections(
    State(app): State<App>,
    Merchant(store): Merchant,
) -> ApiResult<Json<Vec<RejectionRow>>> {
    Ok(Json(app.db.rejections(store, 200).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOutcome {
    /// "applied", "stale", or "rejected" (with the reason; the rejection stays).
    pub result: String,
    pub detail: String,
}

/// Run a rejected payload through intake again (after fixing the catalog, say).
#[utoipa::path(post, path = "/v1/rejections/{id}/replay", tag = "intake", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ReplayOutcome), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn replay_rejection(
    State(app): State<App>,
    Merchant(store): Merchant,
    Path(id): Path<i64>,
) -> ApiResult<Json<ReplayOutcome>> {
    let row = app
        .db
        .rejection(store, RejectionId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("rejection"))?;
    let outcome = match row.source.as_str() {
        "api" => {
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
                        detail: r.result,
                    }
                }
            }
        },
        "orders" => {
            let parsed = serde_json::from_str::<crate::intake::orders::OrderBody>(&row.payload)
                .map_err(|e| ("invalid_payload", e.to_string()))
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
        "shopify_orders" => match crate::intake::orders::parse_shopify(row.payload.as_bytes()) {
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
                StatusCode::CONFLICT,
                "not_replayable",
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
