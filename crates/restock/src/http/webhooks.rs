//! Inbound webhooks from commerce platforms.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use restock_core::ids::StoreId;
use restock_core::values::Sku;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use crate::app::App;
use crate::intake::{self, shopify};
use crate::storage::rejections::NewRejection;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResult {
    /// Inventory: "applied", "stale" (older than what is stored) or "restocked";
    /// orders: "recorded" or "duplicate".
    pub result: String,
    /// The variant an inventory update was for.
    pub sku: String,
    /// Always 0: restocks are planned by the workers right after the answer.
    pub planned: u64,
}

/// Shopify `inventory_levels/update` and `orders/create` (by `X-Shopify-Topic`). Signed with the store's shared secret
/// (`X-Shopify-Hmac-Sha256`); a bad or missing signature is answered 401 and nothing
/// is applied. Payloads that are signed but cannot be applied are kept for replay.
#[utoipa::path(post, path = "/webhooks/shopify/{store}", tag = "webhooks",
    params(("store" = String, Path, description = "The store's slug")),
    request_body(content = String, description = "Shopify InventoryLevel JSON, as Shopify sends it", content_type = "application/json"),
    responses((status = 200, body = WebhookResult), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn shopify_inventory(
    State(app): State<App>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookResult>> {
    let store =
        app.db.store_by_slug(&slug).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_store", "no such store")
        })?;
    let Some(secret) = store.shopify_secret.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "Shopify is not connected for this store",
        ));
    };
    let signature = headers
        .get("x-shopify-hmac-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !shopify::verify(secret, &body, signature) {
        app.metrics
            .intake_rejects
            .with_label_values(&["shopify", "invalid_signature"])
            .inc();
        tracing::warn!(
            store = store.id,
            "Shopify webhook with a bad or missing signature"
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "X-Shopify-Hmac-Sha256 does not match the body",
        ));
    }
    let topic = headers.get("x-shopify-topic").and_then(|v| v.to_str().ok());
    if topic == Some("orders/create") {
        return apply_shopify_order(&app, store.store_id(), &body).await;
    }
    if let Some(topic) = topic
        && topic != "inventory_levels/update"
    {
        return Err(reject(
            &app,
            store.store_id(),
            &body,
            "invalid_payload",
            format!("unsupported topic {topic:?}"),
        )
        .await?);
    }
    apply_shopify(&app, store.store_id(), &body).await
}

/// Shopify `orders/create`: the order is recorded like one from the API.
pub async fn apply_shopify_order(
    app: &App,
    store: StoreId,
    body: &[u8],
) -> ApiResult<Json<WebhookResult>> {
    let order = match crate::intake::orders::parse_shopify(body) {
        Ok(o) => o,
        Err((code, reason)) => {
            return Err(reject_from(app, store, body, "shopify_orders", code, reason).await?);
        }
    };
    let out = crate::intake::orders::record(app, store, &order).await?;
    let (_, r) = super::orders::answer(order.order_ref.clone(), out);
    Ok(Json(WebhookResult {
        result: r.status,
        sku: String::new(),
        planned: 0,
    }))
}

async fn reject(
    app: &App,
    store: StoreId,
    body: &[u8],
    code: &'static str,
    reason: String,
) -> ApiResult<ApiError> {
    reject_from(app, store, body, "shopify", code, reason).await
}

async fn reject_from(
    app: &App,
    store: StoreId,
    body: &[u8],
    source: &'static str,
    code: &'static str,
    reason: String,
) -> ApiResult<ApiError> {
    let rejection = NewRejection {
        store: Some(store),
        source: source.into(),
        reason_code: code.into(),
        reason: reason.clone(),
        payload: String::from_utf8_lossy(body).into_owned(),
    };
    let id = app.db.insert_rejection(&rejection, app.now()).await?;
    app.metrics
        .intake_rejects
        .with_label_values(&[source, code])
        .inc();
    Ok(ApiError::unprocessable(
        code,
        format!("{reason} (kept as rejection {})", id.0),
    ))
}

/// Applies a verified Shopify inventory payload (also used to replay one).
pub async fn apply_shopify(
    app: &App,
    store: StoreId,
    body: &[u8],
) -> ApiResult<Json<WebhookResult>> {
    let parsed = match shopify::parse(body) {
        Ok(p) => p,
        Err((code, reason)) => return Err(reject(app, store, body, code, reason).await?),
    };
    let Some(variant) = app
        .db
        .variant_by_inventory_item(store, &parsed.inventory_item_id)
        .await?
    else {
        let reason = format!(
            "no variant is mapped to inventory item {}",
            parsed.inventory_item_id
        );
        return Err(reject(app, store, body, "unknown_inventory_item", reason).await?);
    };
    let sku = Sku::parse(&variant.sku)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored SKU invalid: {e}")))?;
    let out = intake::apply(app, store, "shopify", &[parsed.into_update(sku)], &[]).await?;
    let planned = 0;
    let result = if !out.restocks.is_empty() {
        "restocked"
    } else if out.applied > 0 {
        "applied"
    } else {
        "stale"
    };
    Ok(Json(WebhookResult {
        result: result.into(),
        sku: variant.sku,
        planned,
    }))
}
