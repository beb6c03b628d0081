//! The calling merchant's store settings.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Merchant;
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::storage::stores::{StoreRow, StoreSettingsUpdate};
use restock_core::policy::StorePolicy;

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreBody {
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub publishable_key: String,
    pub allowed_origins: Vec<String>,
    /// A variant at or below this many units is out of stock (store-wide default).
    pub min_stock: i64,
    /// Alerts go out only when the available quantity exceeds this.
    pub notify_threshold: i64,
    pub shopify_connected: bool,
    pub woocommerce_connected: bool,
    /// Days finished notifications and their tracking events are kept.
    pub retention_days: i64,
    /// ISO 4217 code of the store's prices where a source sends none (Shopify's
    /// product webhooks); absent until set.
    pub currency: Option<String>,
    /// The Shopify shop's domain, learned from its signed deliveries; product links
    /// of Shopify products point there.
    pub shopify_domain: Option<String>,
}

impl From<StoreRow> for StoreBody {
    fn from(s: StoreRow) -> Self {
        StoreBody {
            allowed_origins: s.origins(),
            id: s.id,
            name: s.name,
            slug: s.slug,
            publishable_key: s.publishable_key,
            min_stock: s.min_stock,
            notify_threshold: s.notify_threshold,
            shopify_connected: s.shopify_secret.is_some(),
            woocommerce_connected: s.woocommerce_secret.is_some(),
            retention_days: s.retention_days,
            currency: s.currency,
            shopify_domain: s.shopify_domain,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStore {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub min_stock: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub notify_threshold: Option<i64>,
    #[schema(max_items = 50, value_type = Option<Vec<super::admin::OriginText>>)]
    pub allowed_origins: Option<Vec<String>>,
    /// Shopify webhook secret; an empty string disconnects Shopify.
    #[schema(max_length = 512, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub shopify_secret: Option<String>,
    /// WooCommerce webhook secret; an empty string disconnects WooCommerce.
    #[schema(max_length = 512, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub woocommerce_secret: Option<String>,
    /// Days finished notifications and tracking events are kept (1-3650).
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub retention_days: Option<i64>,
    /// ISO 4217 code of the store's prices, e.g. "EUR": Shopify product webhooks
    /// carry prices without a currency and are kept as rejections until it is set.
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
}

/// The store's settings.
#[utoipa::path(get, path = "/v1/store", tag = "store", security(("api_key" = [])),
    responses((status = 200, body = StoreBody), (status = 401, body = ErrorBody)))]
pub async fn get_store(
    State(app): State<App>,
    Merchant(store): Merchant,
) -> ApiResult<Json<StoreBody>> {
    let row = app
        .db
        .store(store)
        .await?
        .ok_or_else(|| ApiError::not_found("store"))?;
    Ok(Json(row.into()))
}

/// Change thresholds, allowed origins, the currency or the Shopify and WooCommerce secrets.
#[utoipa::path(patch, path = "/v1/store", tag = "store", security(("api_key" = [])), request_body = UpdateStore,
    responses((status = 200, body = StoreBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_store(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiJson(req): ApiJson<UpdateStore>,
) -> ApiResult<Json<StoreBody>> {
    let max = crate::intake::MAX_QUANTITY;
    if [req.min_stock, req.notify_threshold]
        .iter()
        .flatten()
        .any(|v| !(0..=max).contains(v))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            format!("thresholds must be 0 to {max}"),
        ));
    }
    if req.retention_days.is_some_and(|d| !(1..=3650).contains(&d)) {
        return Err(ApiError::invalid("retention_days must be 1 to 3650"));
    }
    if let Some(name) = &req.name {
        super::admin::check_name(name)?;
    }
    if let Some(secret) = &req.shopify_secret {
        super::admin::check_secret("shopify_secret", secret)?;
    }
    if let Some(secret) = &req.woocommerce_secret {
        super::admin::check_secret("woocommerce_secret", secret)?;
    }
    let currency = req
        .currency
        .as_deref()
        .map(restock_core::values::Currency::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let origins = req
        .allowed_origins
        .as_deref()
        .map(super::admin::parse_origins)
        .transpose()?;
    let update = StoreSettingsUpdate {
        name: req.name.map(|n| n.trim().to_string()),
        min_stock: req.min_stock,
        notify_threshold: req.notify_threshold,
        allowed_origins: origins,
        shopify_secret: req.shopify_secret.map(|s| {
            Some(s)
                .filter(|s| !s.is_empty())
                .map(|s| app.secrets.seal("shopify_secret", &s))
        }),
        woocommerce_secret: req.woocommerce_secret.map(|s| {
            Some(s)
                .filter(|s| !s.is_empty())
                .map(|s| app.secrets.seal("woocommerce_secret", &s))
        }),
        retention_days: req.retention_days,
        currency,
    };
    let row = app.db.update_store_settings(store, &update).await?;
    app.storefront_stores.clear();
    Ok(Json(row.into()))
}

/// The store's rules for releasing restocks: how (everyone at once, or waves sized to
/// the stock), early access, quiet hours, frequency cap, recent-purchase and interest
/// windows, holdout share, reminder, channel order. Every setting is described in the
/// README; absent ones are off.
#[utoipa::path(get, path = "/v1/store/policy", tag = "store", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
pub async fn get_policy(
    State(app): State<App>,
    Merchant(store): Merchant,
) -> ApiResult<Json<StorePolicy>> {
    let row = app
        .db
        .store(store)
        .await?
        .ok_or_else(|| ApiError::not_found("store"))?;
    Ok(Json(row.policy()))
}

/// Replace the store's rules. Restocks already being released keep the rules they
/// started with.
#[utoipa::path(put, path = "/v1/store/policy", tag = "store", security(("api_key" = [])),
    request_body = super::schemas::PolicyBody,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn put_policy(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiJson(policy): ApiJson<StorePolicy>,
) -> ApiResult<Json<StorePolicy>> {
    policy
        .validate()
        .map_err(|e| ApiError::new(ErrorCode::InvalidPolicy, e.to_string()))?;
    let row = app.db.set_store_policy(store, &policy).await?;
    app.storefront_stores.clear();
    Ok(Json(row.policy()))
}
