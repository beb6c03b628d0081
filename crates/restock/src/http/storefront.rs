//! The public storefront API the "Notify me" widget calls from shoppers' browsers.
//!
//! Authenticated by the store's publishable key in the path (safe to embed in
//! pages); browsers may call it only from the merchant's configured origins (CORS).
//! Requests without an `Origin` header (server to server) are allowed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use restock_core::ids::{ProductId, SubscriptionId, VariantId};
use restock_core::token::Purpose;
use restock_core::values::{Email, Market, TimeZone};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, ErrorBody, ErrorCode};
use crate::app::App;
use crate::storage::demand::{
    ConsentInput, SignUp as NewSignUp, SkuFacts, SkuRefusal, SubscribeOutcome, Target,
};
use crate::storage::stores::StoreRow;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// The shopper's address (a plain address: no display name, no quoted local part).
    #[schema(
        max_length = 254,
        pattern = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30})?@[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?)*\\.[A-Za-z]{2,12}$"
    )]
    pub email: String,
    /// Subscribe to this variant...
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
    )]
    pub sku: Option<String>,
    /// ...or to any variant of this product (the merchant's product id).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub product: Option<String>,
    /// Only stock in this market counts (a market the store defined); any location if absent.
    pub market: Option<String>,
    /// The consent text the widget showed, recorded with the sign-up.
    pub consent_text: Option<String>,
    /// The shopper's IANA time zone (the browser's), for quiet hours.
    pub time_zone: Option<String>,
}

/// The documented shape of a sign-up: exactly one of `sku` or `product`.
/// (`SubscribeRequest` parses both so it can say which rule was broken.)
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SignUp {
    Variant(VariantSignUp),
    Product(ProductSignUp),
}

/// A sign-up for one variant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct VariantSignUp {
    /// The shopper's address (a plain address: no display name, no quoted local part).
    #[schema(
        max_length = 254,
        pattern = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30})?@[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?)*\\.[A-Za-z]{2,12}$"
    )]
    email: String,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
    )]
    sku: String,
}

/// A sign-up for any variant of a product (the merchant's product id).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ProductSignUp {
    /// The shopper's address (a plain address: no display name, no quoted local part).
    #[schema(
        max_length = 254,
        pattern = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30})?@[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?)*\\.[A-Za-z]{2,12}$"
    )]
    email: String,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    product: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscribeResponse {
    /// "created", or "merged" when the shopper was already signed up for it.
    pub status: String,
    pub subscription_id: i64,
    /// A signed link with which the shopper can cancel this sign-up.
    pub cancel_url: String,
}

/// The CORS headers for `origin` if the store allows it; `Err` if it does not.
fn cors(
    store: &StoreRow,
    headers: &HeaderMap,
) -> Result<Vec<(header::HeaderName, HeaderValue)>, ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(Vec::new());
    };
    let allowed = origin
        .to_str()
        .ok()
        .is_some_and(|o| store.origins().iter().any(|a| a == o));
    if !allowed {
        return Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            "this origin may not call the store's storefront API",
        ));
    }
    Ok(vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        (header::VARY, HeaderValue::from_static("Origin")),
    ])
}

/// The shopper's address as the nearest proxy reports it, for the consent record.
fn client_ip(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().chars().take(64).collect())
        .filter(|v: &String| !v.is_empty())
}

async fn store_for(app: &App, key: &str) -> Result<StoreRow, ApiError> {
    if let Some(row) = app.storefront_stores.get(key) {
        return Ok(row);
    }
    let row = app
        .db
        .store_by_publishable_key(key)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownStore, "unknown publishable key"))?;
    app.storefront_stores.put(key, row.clone());
    Ok(row)
}

/// CORS preflight for the subscribe endpoint.
#[utoipa::path(options, path = "/storefront/v1/{publishable_key}/subscriptions", tag = "storefront",
    params(("publishable_key" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 204, description = "origin allowed"), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "unknown_store")))]
pub async fn preflight(
    State(app): State<App>,
    ApiPath(key): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    let store = match store_for(&app, &key).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    match cors(&store, &headers) {
        Ok(mut h) => {
            h.push((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            ));
            h.push((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            ));
            h.push((
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            ));
            let mut resp = StatusCode::NO_CONTENT.into_response();
            resp.headers_mut().extend(h);
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Sign a shopper up for a back-in-stock alert. A repeated sign-up is merged.
#[utoipa::path(post, path = "/storefront/v1/{publishable_key}/subscriptions", tag = "storefront",
    params(("publishable_key" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = SignUp,
    responses((status = 201, body = SubscribeResponse), (status = 200, body = SubscribeResponse, description = "merged"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "in_stock, or confirmation_required for an address that opted out of everything"),
        (status = 422, body = ErrorBody)))]
pub async fn subscribe(
    State(app): State<App>,
    ApiPath(key): ApiPath<String>,
    headers: HeaderMap,
    body: Result<ApiJson<SubscribeRequest>, ApiError>,
) -> Response {
    let store = match store_for(&app, &key).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let cors_headers = match cors(&store, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let consent = ConsentInput {
        text: String::new(),
        source: "widget".into(),
        ip: client_ip(&headers),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
    };
    let result = async {
        let ApiJson(req) = body?;
        subscribe_inner(&app, &store, req, consent).await
    }
    .await;
    let mut resp = match result {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(e) => e.into_response(),
    };
    // Errors carry CORS headers too, so the widget can read the reason.
    resp.headers_mut().extend(cors_headers);
    resp
}

async fn subscribe_inner(
    app: &App,
    store: &StoreRow,
    req: SubscribeRequest,
    consent: ConsentInput,
) -> Result<(StatusCode, SubscribeResponse), ApiError> {
    let (email, market, time_zone) =
        parse_signup_fields(&req.email, req.market.as_deref(), req.time_zone.as_deref())?;
    let consent = ConsentInput {
        text: req.consent_text.unwrap_or_default(),
        ..consent
    };
    let fields = {
        let market = market.clone();
        move |target| NewSignUp {
            email: email.clone(),
            target,
            market: market.clone(),
            source: "storefront".into(),
            consent: consent.clone(),
            time_zone,
            anonymous: true,
        }
    };
    let outcome = match (req.sku.as_deref(), req.product.as_deref(), &market) {
        // The storefront's usual sign-up: the variant is read with the writer's
        // group instead of before it.
        (Some(sku), None, None) => app
            .signups
            .subscribe_sku(store.store_id(), sku, Arc::new(fields), app.now())
            .await?
            .map_err(|refusal| sku_refused(sku, refusal))?,
        (sku, product, market) => {
            let target = resolve_target(app, store, sku, product, market.as_ref()).await?;
            app.signups
                .subscribe(store.store_id(), &fields(target), app.now())
                .await?
        }
    };
    signup_answer(app, outcome)
}

/// Why a sign-up for `sku` was refused, as the storefront and the API answer it.
fn sku_refused(sku: &str, refusal: SkuRefusal) -> ApiError {
    match refusal {
        SkuRefusal::Unknown => ApiError::new(
            ErrorCode::UnknownSku,
            format!("no variant with SKU {sku:?}"),
        ),
        SkuRefusal::Discontinued => ApiError::new(
            ErrorCode::Discontinued,
            "this variant was removed from its product: it is no longer sold",
        ),
        SkuRefusal::InStock => ApiError::new(
            ErrorCode::InStock,
            "this variant is in stock: it can be bought now",
        ),
    }
}

/// A sign-up's address, market and time zone, each refused with its own code.
pub fn parse_signup_fields(
    email: &str,
    market: Option<&str>,
    time_zone: Option<&str>,
) -> Result<(Email, Option<Market>, Option<TimeZone>), ApiError> {
    let email =
        Email::parse(email).map_err(|e| ApiError::new(ErrorCode::InvalidEmail, e.to_string()))?;
    let market = market
        .map(Market::parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidMarket, e.to_string()))?;
    let time_zone = time_zone
        .map(TimeZone::parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidTimeZone, e.to_string()))?;
    Ok((email, market, time_zone))
}

/// What a sign-up targets, refusing one that could be bought now.
pub async fn resolve_target(
    app: &App,
    store: &StoreRow,
    sku: Option<&str>,
    product: Option<&str>,
    market: Option<&Market>,
) -> Result<Target, ApiError> {
    if let Some(m) = market
        && !app
            .db
            .markets(store.store_id())
            .await?
            .iter()
            .any(|(name, _)| name == m.as_str())
    {
        return Err(ApiError::new(
            ErrorCode::UnknownMarket,
            format!("the store has no market {:?}", m.as_str()),
        ));
    }
    let market = market.map(|m| m.as_str());
    match (sku, product) {
        (Some(sku), None) => {
            let facts = SkuFacts::sold(app.db.sku_facts(store.store_id(), sku).await?)
                .map_err(|refusal| sku_refused(sku, refusal))?;
            // The variant's own state came with it; a market's is read.
            let in_stock = match market {
                None => facts.in_stock,
                Some(_) => app.db.in_stock_in(VariantId(facts.id), market).await?,
            };
            facts
                .unless_in_stock(in_stock)
                .map_err(|refusal| sku_refused(sku, refusal))
        }
        (None, Some(product)) => {
            let p = app
                .db
                .product(store.store_id(), product)
                .await?
                .filter(|p| {
                    !p.product
                        .external_id
                        .starts_with(crate::storage::catalog::PLACEHOLDER_PREFIX)
                })
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::UnknownProduct, format!("no product {product:?}"))
                })?;
            if p.product.status == "deleted" {
                return Err(ApiError::new(
                    ErrorCode::Discontinued,
                    "this product was deleted from the shop: it is no longer sold",
                ));
            }
            for v in &p.variants {
                if app.db.in_stock_in(VariantId(v.id), market).await? {
                    return Err(ApiError::new(
                        ErrorCode::InStock,
                        "a variant of this product is in stock: it can be bought now",
                    ));
                }
            }
            Ok(Target::Product(ProductId(p.product.id)))
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give exactly one of sku or product",
        )),
    }
}

/// The answer to a sign-up, storefront or API.
pub fn signup_answer(
    app: &App,
    outcome: SubscribeOutcome,
) -> Result<(StatusCode, SubscribeResponse), ApiError> {
    let body = |status: &str, id: SubscriptionId| SubscribeResponse {
        status: status.into(),
        subscription_id: id.0,
        cancel_url: app.public_url(&format!("/t/s/{}", app.signer.sign(Purpose::Cancel, id.0))),
    };
    match outcome {
        SubscribeOutcome::Created(id, _) => Ok((StatusCode::CREATED, body("created", id))),
        SubscribeOutcome::Merged(id, _) => Ok((StatusCode::OK, body("merged", id))),
        SubscribeOutcome::Suppressed => Err(ApiError::new(
            ErrorCode::AddressSuppressed,
            "mail to this address bounced before; ask the store to re-enable it",
        )),
        SubscribeOutcome::ConfirmationRequired => Err(ApiError::new(
            ErrorCode::ConfirmationRequired,
            "this address opted out of all alerts from the store; signing up again needs the shopper's confirmation",
        )),
    }
}
