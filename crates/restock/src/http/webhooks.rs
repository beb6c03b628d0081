//! Inbound webhooks from commerce platforms.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use restock_core::ids::StoreId;
use restock_core::values::Sku;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiPath, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::intake::{self, shopify};
use crate::storage::rejections::NewRejection;

/// The one Shopify topic Restock applies.
pub const SHOPIFY_TOPIC: &str = "inventory_levels/update";

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResult {
    /// Inventory: "applied", "stale" (older than what is stored) or "restocked";
    /// orders: "recorded", or "duplicate" (this order id was recorded before); any
    /// topic: "duplicate" when this `X-Shopify-Webhook-Id` was handled before.
    pub result: String,
    /// The variant it applied to (absent for a duplicate).
    pub sku: Option<String>,
    /// Always 0: restocks are planned by the workers right after the answer.
    pub planned: u64,
}

/// Shopify `inventory_levels/update` and `orders/create` (by `X-Shopify-Topic`). Signed with the store's shared secret
/// (`X-Shopify-Hmac-Sha256`); a bad or missing signature is answered 401 and nothing
/// is applied. Payloads that are signed but cannot be applied (including other
/// topics) are kept for replay. A delivery whose `X-Shopify-Webhook-Id` was handled
/// before is answered 200 `duplicate` and not applied again.
#[utoipa::path(post, path = "/webhooks/shopify/{store}", tag = "webhooks",
    params(("store" = String, Path, description = "The store's slug", max_length = 64, pattern = "^[a-z0-9-]{1,64}$")),
    request_body(content = String, description = "Shopify InventoryLevel JSON, as Shopify sends it", content_type = "application/json"),
    responses((status = 200, body = WebhookResult), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn shopify_inventory(
    State(app): State<App>,
    ApiPath(slug): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookResult>> {
    let store = app
        .db
        .store_by_slug(&slug)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownStore, "no such store"))?;
    let Some(stored_secret) = store.shopify_secret.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            "Shopify is not connected for this store",
        ));
    };
    let secret = app
        .secrets
        .open("shopify_secret", stored_secret)
        .map_err(ApiError::internal)?;
    let signature = headers
        .get("x-shopify-hmac-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !shopify::verify(&secret, &body, signature) {
        app.metrics
            .intake_rejects
            .with_label_values(&["shopify", "invalid_signature"])
            .inc();
        tracing::warn!(
            store = store.id,
            "Shopify webhook with a bad or missing signature"
        );
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            "X-Shopify-Hmac-Sha256 does not match the body",
        ));
    }
    let store_id = store.store_id();
    // Shopify delivers at least once and retries anything but a 2xx: a delivery id
    // seen before is answered as done, whatever it did the first time.
    let delivery = headers
        .get("x-shopify-webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128 && !id.contains(char::is_control));
    if let Some(id) = delivery
        && app.db.webhook_seen(store_id, "shopify", id).await?
    {
        return Ok(Json(WebhookResult {
            result: "duplicate".into(),
            sku: None,
            planned: 0,
        }));
    }
    let outcome = match headers.get("x-shopify-topic").and_then(|v| v.to_str().ok()) {
        Some(ORDERS_TOPIC) => apply_shopify_order(&app, store_id, &body).await,
        Some(topic) if topic != SHOPIFY_TOPIC => {
            let topic: String = topic.chars().take(64).collect();
            Err(reject(
                &app,
                store_id,
                &body,
                ErrorCode::UnsupportedTopic,
                format!("unsupported topic {topic:?}; only {SHOPIFY_TOPIC} and {ORDERS_TOPIC} are applied"),
            )
            .await?)
        }
        _ => apply_shopify(&app, store_id, &body).await,
    };
    if let Some(id) = delivery {
        let result = match &outcome {
            Ok(Json(r)) => r.result.clone(),
            Err(e) => e.code.to_string(),
        };
        // A database error here is answered as such: Shopify retries, and a retry
        // of an applied update is stale, so nothing is applied twice.
        app.db
            .record_webhook(store_id, "shopify", id, &result, app.now())
            .await?;
    }
    outcome
}

/// Shopify's order topic: an order is recorded like one from the API.
pub const ORDERS_TOPIC: &str = "orders/create";

/// Shopify `orders/create`: the order is recorded like one from the API (also used
/// to replay one).
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
        sku: None,
        planned: 0,
    }))
}

async fn reject(
    app: &App,
    store: StoreId,
    body: &[u8],
    code: ErrorCode,
    reason: String,
) -> ApiResult<ApiError> {
    reject_from(app, store, body, "shopify", code, reason).await
}

async fn reject_from(
    app: &App,
    store: StoreId,
    body: &[u8],
    source: &'static str,
    code: ErrorCode,
    reason: String,
) -> ApiResult<ApiError> {
    let rejection = NewRejection {
        store: Some(store),
        source: source.into(),
        reason_code: code.as_str().into(),
        reason: reason.clone(),
        payload: String::from_utf8_lossy(body).into_owned(),
    };
    let id = app.db.insert_rejection(&rejection, app.now()).await?;
    app.metrics
        .intake_rejects
        .with_label_values(&[source, code.as_str()])
        .inc();
    Ok(ApiError::new(
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
        return Err(reject(app, store, body, ErrorCode::UnknownInventoryItem, reason).await?);
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
        sku: Some(variant.sku),
        planned,
    }))
}
