//! Catalog: categories, products and variants.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use restock_core::policy::ReleasePolicy;
use restock_core::stock::InventoryPolicy;
use restock_core::values::{Currency, HttpUrl, Sku};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Merchant;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::storage::catalog::{
    CatalogError, CategoryInput, ProductInput, ProductWithVariants, VariantInput, VariantRow,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryBody {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub min_stock: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub notify_threshold: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductBody {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub title: String,
    #[serde(default)]
    #[schema(
        max_length = 5000,
        pattern = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
    )]
    pub description: String,
    /// Absolute http(s) URL without user name or password.
    #[schema(
        max_length = 2048,
        pattern = "^(|https?://[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z][A-Za-z0-9-]*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?)$"
    )]
    pub image_url: Option<String>,
    /// The product page: an absolute http(s) URL without user name or password.
    #[schema(
        max_length = 2048,
        pattern = "^https?://[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z][A-Za-z0-9-]*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$"
    )]
    pub url: String,
    /// Category handle; created if new.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub category: Option<String>,
    /// Price in minor units (cents for EUR; whole yen for JPY).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    #[serde(deserialize_with = "super::int::req")]
    pub price: i64,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: String,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub min_stock: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub notify_threshold: Option<i64>,
    /// How this product's restocks are released, overriding the store's policy:
    /// `{"release": {"mode": "waves", "shoppers_per_unit": 2, "interval_secs": 900},
    /// "early_access": {"tiers": ["vip"], "window_secs": 3600}}`.
    #[schema(value_type = Option<super::schemas::ReleasePolicyBody>)]
    pub release: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub variants: Vec<VariantBody>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantBody {
    /// 1 to 128 characters, no control characters, no spaces at either end.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
    )]
    pub sku: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub title: String,
    /// Option name to value, e.g. {"size": "M", "colour": "Red"}: at most 20, names
    /// up to 64 and values up to 128 characters, without control characters.
    #[serde(default)]
    #[schema(schema_with = options_schema)]
    pub options: BTreeMap<String, String>,
    /// Own price in minor units; the product's if omitted.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub price: Option<i64>,
    #[schema(
        max_length = 2048,
        pattern = "^(|https?://[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z][A-Za-z0-9-]*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?)$"
    )]
    pub image_url: Option<String>,
    /// Deep link to this variant; the product page if omitted.
    #[schema(
        max_length = 2048,
        pattern = "^(|https?://[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z][A-Za-z0-9-]*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?)$"
    )]
    pub url: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub min_stock: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::int::opt")]
    pub notify_threshold: Option<i64>,
    /// Shopify inventory item id, to route Shopify inventory webhooks.
    #[schema(max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub inventory_item_id: Option<String>,
    /// "deny" (sold from stock, the default), "preorder" or "backorder": a variant
    /// sold on pre-order or back-order never fires "back in stock".
    #[schema(pattern = "^(deny|preorder|backorder)$")]
    pub inventory_policy: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub image_url: Option<String>,
    pub url: String,
    pub category: Option<String>,
    pub price: i64,
    pub currency: String,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
    #[schema(value_type = Option<super::schemas::ReleasePolicyBody>)]
    pub release: Option<ReleasePolicy>,
    /// "active"; or, for a product the shop syncs, "draft" or "archived" (not for
    /// sale: no restock is announced) or "deleted" (no new sign-ups).
    pub status: String,
    pub variants: Vec<VariantView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VariantView {
    pub sku: String,
    pub title: String,
    pub options: BTreeMap<String, String>,
    pub price: Option<i64>,
    pub image_url: Option<String>,
    pub url: Option<String>,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
    pub inventory_item_id: Option<String>,
    pub inventory_policy: String,
    /// Available to sell: on hand minus reserved, over locations, unexpired stock only.
    pub available: i64,
    /// "in_stock" or "out_of_stock".
    pub state: String,
    pub available_until: Option<String>,
    /// When the shop removed the variant from its product: kept for its history,
    /// not for sale, no new sign-ups.
    pub removed_at: Option<String>,
}

impl From<VariantRow> for VariantView {
    fn from(v: VariantRow) -> Self {
        VariantView {
            options: serde_json::from_str(&v.options).unwrap_or_default(),
            sku: v.sku,
            title: v.title,
            price: v.price_minor,
            image_url: v.image_url,
            url: v.url,
            min_stock: v.min_stock,
            notify_threshold: v.notify_threshold,
            inventory_item_id: v.inventory_item_id,
            inventory_policy: v.inventory_policy,
            available: v.available,
            state: if v.in_stock {
                "in_stock"
            } else {
                "out_of_stock"
            }
            .into(),
            available_until: v.available_until.map(crate::util::format_ms),
            removed_at: v.removed_at.map(crate::util::format_ms),
        }
    }
}

impl From<ProductWithVariants> for ProductView {
    fn from(p: ProductWithVariants) -> Self {
        let ProductWithVariants {
            product: p,
            variants,
        } = p;
        ProductView {
            id: p.external_id,
            title: p.title,
            description: p.description,
            image_url: p.image_url,
            url: p.url,
            category: p.category,
            price: p.price_minor,
            currency: p.currency,
            min_stock: p.min_stock,
            notify_threshold: p.notify_threshold,
            release: crate::storage::stock::parse_release_policy(p.release_policy.as_deref()),
            status: p.status,
            variants: variants.into_iter().map(Into::into).collect(),
        }
    }
}

/// Variant options as the server checks them: up to 20 names of 1-64 and values of
/// up to 128 characters, none with control characters.
fn options_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(20))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64))
                .pattern(Some(PRINTABLE)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(128))
                .pattern(Some(PRINTABLE)),
        ))
        .build()
}

fn invalid(e: impl ToString) -> ApiError {
    ApiError::new(ErrorCode::InvalidValue, e.to_string())
}

/// Largest price accepted, in minor units (ten billion in major units).
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;
/// Variants in one product request.
pub const MAX_VARIANTS: usize = 1000;

/// A threshold: 0 to [`crate::intake::MAX_QUANTITY`].
fn threshold(field: &str, v: Option<i64>) -> ApiResult<Option<i64>> {
    let max = crate::intake::MAX_QUANTITY;
    match v {
        Some(n) if !(0..=max).contains(&n) => Err(invalid(format!("{field} must be 0 to {max}"))),
        v => Ok(v),
    }
}

fn price(field: &str, v: i64) -> ApiResult<i64> {
    if !(0..=MAX_PRICE_MINOR).contains(&v) {
        return Err(invalid(format!(
            "{field} must be 0 to {MAX_PRICE_MINOR} (minor units, e.g. cents)"
        )));
    }
    Ok(v)
}

/// Text a shopper may read: at most `max` characters and no control characters
/// (line breaks and tabs allowed where `multiline`).
fn text(field: &str, v: &str, max: usize, multiline: bool) -> ApiResult<()> {
    let bad = v
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')));
    if bad || v.chars().count() > max {
        return Err(invalid(format!(
            "{field} must be at most {max} characters, without control characters"
        )));
    }
    Ok(())
}

fn opt_url(v: &Option<String>) -> ApiResult<Option<HttpUrl>> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(HttpUrl::parse)
        .transpose()
        .map_err(invalid)
}

fn valid_handle(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= 128 && !s.chars().any(char::is_control)
}

impl ProductBody {
    /// The product as the catalog holds it, validated (the API and the Shopify product
    /// webhooks go through this one check).
    pub(crate) fn parse(self, external_id: String) -> ApiResult<ProductInput> {
        if self.title.trim().is_empty() {
            return Err(invalid("title must not be empty"));
        }
        text("title", &self.title, 200, false)?;
        text("description", &self.description, 5000, true)?;
        price("price", self.price)?;
        if let Some(c) = &self.category
            && !valid_handle(c)
        {
            return Err(invalid("category must be 1 to 128 printable characters"));
        }
        if self.variants.len() > MAX_VARIANTS {
            return Err(invalid(format!(
                "at most {MAX_VARIANTS} variants per product"
            )));
        }
        let mut variants = Vec::with_capacity(self.variants.len());
        for v in self.variants {
            let sku = Sku::parse(&v.sku)
                .map_err(|e| ApiError::new(ErrorCode::InvalidSku, e.to_string()))?;
            if let Some(p) = v.price {
                price(&format!("variant {}: price", sku.as_str()), p)?;
            }
            text("variant title", &v.title, 200, false)?;
            if v.options.len() > 20 {
                return Err(invalid("at most 20 options per variant"));
            }
            for (name, value) in &v.options {
                if name.is_empty() {
                    return Err(invalid("option names must not be empty"));
                }
                text("option name", name, 64, false)?;
                text("option value", value, 128, false)?;
            }
            if let Some(item) = &v.inventory_item_id {
                text("inventory_item_id", item, 64, false)?;
            }
            variants.push(VariantInput {
                title: v.title.trim().to_string(),
                options: v.options,
                price_minor: v.price,
                image_url: opt_url(&v.image_url)?,
                url: opt_url(&v.url)?,
                min_stock: threshold("min_stock", v.min_stock)?,
                notify_threshold: threshold("notify_threshold", v.notify_threshold)?,
                inventory_item_id: v.inventory_item_id.filter(|s| !s.is_empty()),
                inventory_policy: match v.inventory_policy.as_deref() {
                    None => InventoryPolicy::Deny,
                    Some(p) => InventoryPolicy::parse(p).ok_or_else(|| {
                        invalid("inventory_policy must be deny, preorder or backorder")
                    })?,
                },
                sku,
            });
        }
        let release = match self.release {
            None | Some(serde_json::Value::Null) => None,
            Some(v @ serde_json::Value::Object(_)) => {
                let r: ReleasePolicy = serde_json::from_value(v).map_err(|e| {
                    ApiError::new(ErrorCode::InvalidPolicy, format!("release: {e}"))
                })?;
                r.validate()
                    .map_err(|e| ApiError::new(ErrorCode::InvalidPolicy, e.to_string()))?;
                Some(r)
            }
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    "release must be an object",
                ));
            }
        };
        Ok(ProductInput {
            release,
            external_id,
            title: self.title.trim().to_string(),
            description: self.description,
            image_url: opt_url(&self.image_url)?,
            url: HttpUrl::parse(&self.url).map_err(invalid)?,
            category: self.category,
            price_minor: self.price,
            currency: Currency::parse(&self.currency).map_err(invalid)?,
            min_stock: threshold("min_stock", self.min_stock)?,
            notify_threshold: threshold("notify_threshold", self.notify_threshold)?,
            variants,
        })
    }
}

/// The catalog's one write path (the product API and CSV imports): validates the
/// product, writes it with its variants, judges changed thresholds, and applies
/// stock that was parked for its SKUs.
pub async fn save_product(
    app: &App,
    store: restock_core::ids::StoreId,
    id: &str,
    body: ProductBody,
) -> ApiResult<()> {
    if !valid_handle(id) {
        return Err(invalid("product id must be 1 to 128 printable characters"));
    }
    let input = body.parse(id.to_string())?;
    let (_, restocks) = app
        .db
        .upsert_product(store, &input, app.now())
        .await
        .map_err(|e| match e {
            CatalogError::SkuTaken(_) => ApiError::new(ErrorCode::SkuTaken, e.to_string()),
            CatalogError::InventoryItemTaken(_) => {
                ApiError::new(ErrorCode::Conflict, e.to_string())
            }
            CatalogError::Storage(s) => s.into(),
        })?;
    if !restocks.is_empty() {
        app.plan_ready.notify_one();
    }
    // Stock that arrived before the catalog named these SKUs, parked, applies now.
    let skus: Vec<String> = input
        .variants
        .iter()
        .map(|v| v.sku.as_str().to_string())
        .collect();
    super::rejections::replay_parked(app, store, &skus).await;
    Ok(())
}

/// Create or update a category (thresholds apply to its products' variants).
#[utoipa::path(put, path = "/v1/categories/{handle}", tag = "catalog", security(("api_key" = [])),
    params(("handle" = String, Path, description = "The merchant's category handle", max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")),
    request_body = CategoryBody,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_category(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(handle): ApiPath<String>,
    ApiJson(body): ApiJson<CategoryBody>,
) -> ApiResult<StatusCode> {
    if !valid_handle(&handle) {
        return Err(invalid("handle must be 1 to 128 printable characters"));
    }
    if body.name.trim().is_empty() {
        return Err(invalid("name must not be empty"));
    }
    text("name", &body.name, 128, false)?;
    let input = CategoryInput {
        handle,
        name: body.name,
        min_stock: threshold("min_stock", body.min_stock)?,
        notify_threshold: threshold("notify_threshold", body.notify_threshold)?,
    };
    app.db.upsert_category(store, &input).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create or replace a product and upsert its variants.
#[utoipa::path(put, path = "/v1/products/{id}", tag = "catalog", security(("api_key" = [])),
    params(("id" = String, Path, description = "The merchant's product id", max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")),
    request_body = ProductBody,
    responses((status = 200, body = ProductView), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_product(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ProductBody>,
) -> ApiResult<Json<ProductView>> {
    save_product(&app, store, &id, body).await?;
    let product = app
        .db
        .product(store, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("product"))?;
    Ok(Json(product.into()))
}

/// A product with its variants and their stock state.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog", security(("api_key" = [])),
    params(("id" = String, Path, description = "The merchant's product id", max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")),
    responses((status = 200, body = ProductView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_product(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ProductView>> {
    let product = app
        .db
        .product(store, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("product"))?;
    Ok(Json(product.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Return items after this cursor (the `next` of the previous page).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many items (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

impl Page {
    pub fn after(&self) -> ApiResult<i64> {
        check_after(self.after)
    }
    pub fn limit(&self) -> ApiResult<i64> {
        check_limit(self.limit)
    }
}

/// A cursor as documented: not negative, 0 if not given.
pub fn check_after(after: Option<i64>) -> ApiResult<i64> {
    match after {
        None => Ok(0),
        Some(n) if n >= 0 => Ok(n),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "after must not be negative",
        )),
    }
}

/// A page size as documented: 1 to 500, 100 if not given.
pub fn check_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=500) => Ok(n),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "limit must be 1 to 500",
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductSummary {
    pub id: String,
    pub title: String,
    pub url: String,
    pub price: i64,
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductSummary>,
    /// Cursor for the next page, absent on the last.
    pub next: Option<i64>,
}

/// The store's products, a page at a time.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", security(("api_key" = [])), params(Page),
    responses((status = 200, body = ProductPage), (status = 401, body = ErrorBody)))]
pub async fn list_products(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<ProductPage>> {
    let limit = page.limit()?;
    let rows = app.db.products(store, page.after()?, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(ProductPage {
        items: rows
            .into_iter()
            .map(|p| ProductSummary {
                id: p.external_id,
                title: p.title,
                url: p.url,
                price: p.price_minor,
                currency: p.currency,
            })
            .collect(),
        next,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VariantDetail {
    #[serde(flatten)]
    pub variant: VariantView,
    pub levels: Vec<LevelView>,
    pub transitions: Vec<TransitionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LevelView {
    pub location: String,
    pub available: i64,
    pub incoming: Option<i64>,
    pub incoming_at: Option<String>,
    pub available_until: Option<String>,
    pub observed_at: String,
    pub sequence: Option<i64>,
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionView {
    /// "in_stock" or "out_of_stock".
    pub to_state: String,
    pub quantity: i64,
    /// What caused it: the stock source, or "catalog" for a threshold change.
    pub cause: String,
    pub at: String,
}

/// A variant by SKU, with its levels per location and its availability history.
#[utoipa::path(get, path = "/v1/variants/{sku}", tag = "catalog", security(("api_key" = [])),
    params(("sku" = String, Path, description = "The variant's SKU", max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")),
    responses((status = 200, body = VariantDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_variant(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(sku): ApiPath<String>,
) -> ApiResult<Json<VariantDetail>> {
    let v = app
        .db
        .variant_by_sku(store, &sku)
        .await?
        .ok_or_else(|| ApiError::not_found("variant"))?;
    let id = restock_core::ids::VariantId(v.id);
    let levels = app.db.stock_levels(id).await?;
    let transitions = app.db.transitions(id).await?;
    Ok(Json(VariantDetail {
        variant: v.into(),
        levels: levels
            .into_iter()
            .map(|l| LevelView {
                location: l.location,
                available: l.available,
                incoming: l.incoming,
                incoming_at: l.incoming_at.map(crate::util::format_ms),
                available_until: l.available_until.map(crate::util::format_ms),
                observed_at: crate::util::format_ms(l.observed_at),
                sequence: l.sequence,
                source: l.source,
            })
            .collect(),
        transitions: transitions
            .into_iter()
            .map(|t| TransitionView {
                to_state: t.to_state,
                quantity: t.quantity,
                cause: t.cause,
                at: crate::util::format_ms(t.at),
            })
            .collect(),
    }))
}
