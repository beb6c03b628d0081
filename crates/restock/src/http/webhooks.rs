//! Inbound webhooks from commerce platforms: Shopify and WooCommerce. Each platform
//! signs its deliveries the same way and names a delivery id; verification and
//! once-per-delivery handling are shared, the payloads are parsed per platform in
//! `intake`.

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
use crate::intake::shopify_products::{self, Applied};
use crate::intake::woocommerce::{self, ProductChange};
use crate::intake::{self, orders, shopify, signature};
use crate::storage::orders::OrderInput;
use crate::storage::rejections::NewRejection;
use crate::storage::stores::{StoreRow, WebhookSecret};

/// Shopify's inventory topic (also what a delivery without a topic is taken for).
pub const SHOPIFY_TOPIC: &str = "inventory_levels/update";

/// Every Shopify topic Restock applies.
pub const SHOPIFY_TOPICS: [&str; 5] = [
    SHOPIFY_TOPIC,
    ORDERS_TOPIC,
    "products/create",
    "products/update",
    "products/delete",
];

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResult {
    /// Inventory: "applied", "stale" (older than what is stored), "restocked",
    /// "unknown_sku" (kept as a rejection) or "ignored" (nothing to apply, see
    /// `reason`); orders: "recorded", or "duplicate" (this order id was recorded
    /// before); Shopify products: "applied" (the catalog holds the product as the
    /// shop describes it), "stale" (not newer than what was applied), "deleted", or
    /// "ignored" (an update of a deleted product); any topic: "duplicate" when this
    /// delivery id was handled before; WooCommerce's ping: "ping".
    pub result: String,
    /// The variant it applied to (absent for a duplicate, or when several were).
    pub sku: Option<String>,
    /// Shopify products: the product's id in the catalog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Always 0: restocks are planned by the workers right after the answer.
    pub planned: u64,
    /// Why nothing (or not everything) was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl WebhookResult {
    fn new(result: &str, sku: Option<String>) -> Self {
        WebhookResult {
            result: result.into(),
            sku,
            product: None,
            planned: 0,
            reason: None,
        }
    }
}

/// How one platform signs and identifies its deliveries.
struct Platform {
    /// The source name in metrics, rejections and the delivery log.
    source: &'static str,
    name: &'static str,
    secret: WebhookSecret,
    signature_header: &'static str,
    delivery_header: &'static str,
    topic_header: &'static str,
}

const SHOPIFY: Platform = Platform {
    source: "shopify",
    name: "Shopify",
    secret: WebhookSecret::Shopify,
    signature_header: "x-shopify-hmac-sha256",
    delivery_header: "x-shopify-webhook-id",
    topic_header: "x-shopify-topic",
};

const WOOCOMMERCE: Platform = Platform {
    source: "woocommerce",
    name: "WooCommerce",
    secret: WebhookSecret::WooCommerce,
    signature_header: "x-wc-webhook-signature",
    delivery_header: "x-wc-webhook-delivery-id",
    topic_header: "x-wc-webhook-topic",
};

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn store_for(app: &App, slug: &str) -> ApiResult<StoreRow> {
    app.db
        .store_by_slug(slug)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownStore, "no such store"))
}

/// Refuses a delivery unless its signature is the platform's signature of the body
/// under the store's secret for that platform.
fn authenticate(
    app: &App,
    platform: &Platform,
    store: &StoreRow,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<()> {
    let Some(stored_secret) = platform.secret.stored(store) else {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!("{} is not connected for this store", platform.name),
        ));
    };
    let secret = app
        .secrets
        .open(platform.secret.column(), stored_secret)
        .map_err(ApiError::internal)?;
    let signature = header(headers, platform.signature_header).unwrap_or_default();
    if !signature::verify(&secret, body, signature) {
        app.metrics
            .intake_rejects
            .with_label_values(&[platform.source, "invalid_signature"])
            .inc();
        tracing::warn!(
            store = store.id,
            platform = platform.source,
            "webhook with a bad or missing signature"
        );
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!("{} does not match the body", platform.signature_header),
        ));
    }
    Ok(())
}

/// Runs `apply` unless this delivery id was handled before, and logs the id with
/// what it did; the delivery itself (body, id, topic, answer) goes to the intake
/// log. Platforms deliver at least once and retry anything but a 2xx: a delivery id
/// seen before is answered as done, whatever it did the first time.
async fn once_per_delivery(
    app: &App,
    platform: &Platform,
    store: StoreId,
    headers: &HeaderMap,
    body: &[u8],
    apply: impl Future<Output = ApiResult<Json<WebhookResult>>>,
) -> ApiResult<Json<WebhookResult>> {
    let delivery = header(headers, platform.delivery_header)
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128 && !id.contains(char::is_control));
    if let Some(id) = delivery
        && app.db.webhook_seen(store, platform.source, id).await?
    {
        return Ok(Json(WebhookResult::new("duplicate", None)));
    }
    let outcome = apply.await;
    let result = match &outcome {
        Ok(Json(r)) => r.result.clone(),
        Err(e) => e.code.to_string(),
    };
    let received = intake::Received {
        format: "json",
        payload: String::from_utf8_lossy(body).into_owned(),
        cursor: delivery.map(str::to_string),
    };
    let topic =
        header(headers, platform.topic_header).map(|t| t.chars().take(64).collect::<String>());
    intake::log_delivery(
        app,
        store,
        platform.source,
        &received,
        serde_json::json!({ "result": &result, "topic": topic }),
    )
    .await;
    if let Some(id) = delivery {
        // A database error here is answered as such: the platform retries, and a
        // retry of an applied update is stale, so nothing is applied twice.
        app.db
            .record_webhook(store, platform.source, id, &result, app.now())
            .await?;
    }
    outcome
}

/// Shopify webhooks, by `X-Shopify-Topic`: `inventory_levels/update` (stock of the
/// variant mapped to the inventory item), `orders/create` (recorded like an API
/// order), `products/create` and `products/update` (the catalog follows the shop:
/// product, variants, prices in the store's `currency`, and the inventory item →
/// variant mapping; an older `updated_at` than the one applied is `stale`; draft and
/// archived products announce no restock; variants the shop no longer lists are kept
/// as removed), and `products/delete` (the product is kept as deleted: not for sale,
/// no new sign-ups). Signed with the store's shared secret (`X-Shopify-Hmac-Sha256`);
/// a bad or missing signature is answered 401 and nothing is applied. Payloads that
/// are signed but cannot be applied (including other topics) are answered with their
/// error code and kept for replay. A delivery whose `X-Shopify-Webhook-Id` was
/// handled before is answered 200 `duplicate` and not applied again.
#[utoipa::path(post, path = "/webhooks/shopify/{store}", tag = "webhooks",
    params(("store" = String, Path, description = "The store's slug", max_length = 64, pattern = "^[a-z0-9-]{1,64}$")),
    request_body(content = String, description = "Shopify InventoryLevel, Order or Product JSON (REST Admin API), as Shopify sends it", content_type = "application/json"),
    responses((status = 200, body = WebhookResult), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "sku_taken or conflict: the product's SKUs or inventory items belong to another product (kept for replay)"),
        (status = 422, body = ErrorBody)))]
pub async fn shopify_inventory(
    State(app): State<App>,
    ApiPath(slug): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookResult>> {
    let store = store_for(&app, &slug).await?;
    authenticate(&app, &SHOPIFY, &store, &headers, &body)?;
    let store_id = store.store_id();
    once_per_delivery(&app, &SHOPIFY, store_id, &headers, &body, async {
        let topic = header(&headers, "x-shopify-topic");
        if let Some(products) = topic.and_then(shopify_products::Topic::from_header) {
            // Product links are built on the shop's domain; keep it for replays.
            if let Some(domain) =
                header(&headers, "x-shopify-shop-domain").and_then(shopify_products::shop_domain)
            {
                app.db.set_shopify_domain(store_id, &domain).await?;
            }
            return apply_shopify_products(&app, store_id, products, &body).await;
        }
        match topic {
            Some(ORDERS_TOPIC) => apply_shopify_order(&app, store_id, &body).await,
            Some(topic) if topic != SHOPIFY_TOPIC => {
                let topic: String = topic.chars().take(64).collect();
                Err(reject(
                    &app,
                    store_id,
                    &body,
                    ErrorCode::UnsupportedTopic,
                    format!(
                        "unsupported topic {topic:?}; only {} are applied",
                        SHOPIFY_TOPICS.join(", ")
                    ),
                )
                .await?)
            }
            _ => apply_shopify(&app, store_id, &body).await,
        }
    })
    .await
}

/// The WooCommerce topics Restock applies.
pub const WOOCOMMERCE_TOPICS: [&str; 3] = ["product.created", "product.updated", "order.created"];

/// WooCommerce `product.created`, `product.updated` and `order.created` (by
/// `X-WC-Webhook-Topic`). Signed with the store's WooCommerce secret
/// (`X-WC-Webhook-Signature`); a bad or missing signature is answered 401 and nothing
/// is applied. A simple product with a SKU and managed stock is applied as its stock
/// level; products with nothing to apply (variable products without their
/// variations' stock, unmanaged stock) are answered 200 `ignored` with a reason.
/// Payloads that are signed but cannot be applied (including other topics) are
/// answered 422 and kept. A delivery whose `X-WC-Webhook-Delivery-ID` was handled
/// before is answered 200 `duplicate`. The unsigned ping WooCommerce sends when a
/// webhook is saved (`webhook_id=N`) is answered 200 `ping`.
#[utoipa::path(post, path = "/webhooks/woocommerce/{store}", tag = "webhooks",
    params(("store" = String, Path, description = "The store's slug", max_length = 64, pattern = "^[a-z0-9-]{1,64}$")),
    request_body(content = String, description = "WooCommerce product or order JSON (REST API v3), as WooCommerce sends it", content_type = "application/json"),
    responses((status = 200, body = WebhookResult), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn woocommerce(
    State(app): State<App>,
    ApiPath(slug): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookResult>> {
    let store = store_for(&app, &slug).await?;
    let topic = header(&headers, "x-wc-webhook-topic");
    if topic.is_none() && woocommerce::is_ping(&body) {
        // Sent unsigned when the merchant saves the webhook; WooCommerce refuses to
        // save it unless the answer is a 2xx.
        return Ok(Json(WebhookResult::new("ping", None)));
    }
    authenticate(&app, &WOOCOMMERCE, &store, &headers, &body)?;
    let store_id = store.store_id();
    once_per_delivery(&app, &WOOCOMMERCE, store_id, &headers, &body, async {
        match topic {
            Some("product.created" | "product.updated") => {
                apply_woocommerce_product(&app, store_id, &body).await
            }
            Some("order.created") => {
                apply_order(
                    &app,
                    store_id,
                    &body,
                    "woocommerce_orders",
                    orders::parse_woocommerce,
                )
                .await
            }
            other => {
                let topic: String = other.unwrap_or_default().chars().take(64).collect();
                Err(reject_from(
                    &app,
                    store_id,
                    &body,
                    WOOCOMMERCE.source,
                    ErrorCode::UnsupportedTopic,
                    format!(
                        "unsupported topic {topic:?}; only {} are applied",
                        WOOCOMMERCE_TOPICS.join(", ")
                    ),
                )
                .await?)
            }
        }
    })
    .await
}

/// Applies a verified WooCommerce product payload (also used to replay one).
pub async fn apply_woocommerce_product(
    app: &App,
    store: StoreId,
    body: &[u8],
) -> ApiResult<Json<WebhookResult>> {
    let source = WOOCOMMERCE.source;
    let updates = match woocommerce::parse_product(body) {
        Ok(ProductChange::Levels(updates)) => updates,
        Ok(ProductChange::Ignored(reason)) => {
            return Ok(Json(WebhookResult {
                reason: Some(reason),
                ..WebhookResult::new("ignored", None)
            }));
        }
        Err((code, reason)) => {
            return Err(reject_from(app, store, body, source, code, reason).await?);
        }
    };
    let out = intake::apply(app, store, source, &updates, &[]).await?;
    let result = if !out.restocks.is_empty() {
        "restocked"
    } else if out.applied > 0 {
        "applied"
    } else if out.unknown_sku.len() == updates.len() {
        "unknown_sku"
    } else {
        "stale"
    };
    // Unknown SKUs are kept as rejections, as the stock API keeps them; the answer
    // is still a 2xx, since WooCommerce disables a webhook that keeps failing.
    let reason = (!out.unknown_sku.is_empty()).then(|| {
        let skus: Vec<&str> = out
            .unknown_sku
            .iter()
            .map(|&i| updates[i].sku.as_str())
            .collect();
        format!(
            "no variant with SKU {skus:?} in this store (kept as rejection {:?})",
            out.rejection_ids
        )
    });
    let sku = match updates.as_slice() {
        [one] => Some(one.sku.as_str().to_string()),
        _ => None,
    };
    Ok(Json(WebhookResult {
        reason,
        ..WebhookResult::new(result, sku)
    }))
}

/// A verified Shopify product delivery; one that cannot be applied is kept under
/// the topic's source and answered with its code.
async fn apply_shopify_products(
    app: &App,
    store: StoreId,
    topic: shopify_products::Topic,
    body: &[u8],
) -> ApiResult<Json<WebhookResult>> {
    let applied = match shopify_products::apply(app, store, topic, body).await? {
        Ok(a) => a,
        Err((code, reason)) => {
            return Err(reject_from(app, store, body, topic.source(), code, reason).await?);
        }
    };
    if let Applied::Synced { product, .. } = &applied
        && let Some(p) = app.db.product(store, product).await?
    {
        // Stock that arrived before the shop's catalog named these SKUs, parked,
        // applies now.
        let skus: Vec<String> = p.variants.iter().map(|v| v.sku.clone()).collect();
        super::rejections::replay_parked(app, store, &skus).await;
    }
    Ok(Json(match applied {
        Applied::Synced {
            product, removed, ..
        } => WebhookResult {
            product: Some(product),
            reason: (!removed.is_empty())
                .then(|| format!("variants no longer in the shop, kept as removed: {removed:?}")),
            ..WebhookResult::new("applied", None)
        },
        Applied::Stale => WebhookResult::new("stale", None),
        Applied::Deleted { product } => WebhookResult {
            reason: product
                .is_none()
                .then(|| "the catalog never held this product".to_string()),
            product,
            ..WebhookResult::new("deleted", None)
        },
        Applied::Ignored(reason) => WebhookResult {
            reason: Some(reason),
            ..WebhookResult::new("ignored", None)
        },
    }))
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
    apply_order(app, store, body, "shopify_orders", orders::parse_shopify).await
}

/// A platform's order payload, parsed by `parse`, recorded like one from the API;
/// one that does not parse is kept under `source`.
async fn apply_order(
    app: &App,
    store: StoreId,
    body: &[u8],
    source: &'static str,
    parse: fn(&[u8]) -> Result<OrderInput, orders::Invalid>,
) -> ApiResult<Json<WebhookResult>> {
    let order = match parse(body) {
        Ok(o) => o,
        Err((code, reason)) => {
            return Err(reject_from(app, store, body, source, code, reason).await?);
        }
    };
    let out = orders::record(app, store, &order).await?;
    let (_, r) = super::orders::answer(order.order_ref.clone(), out);
    Ok(Json(WebhookResult::new(&r.status, None)))
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
        planned,
        ..WebhookResult::new(result, Some(variant.sku))
    }))
}
