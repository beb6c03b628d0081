//! Markets: which of the store's locations serve which market.

use axum::Json;
use axum::extract::State;
use restock_core::values::Market;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Merchant;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::app::App;
use crate::error_code::ErrorCode;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketBody {
    /// Locations (as named in stock updates) whose stock serves this market; empty
    /// removes the market.
    #[schema(max_items = 1000, inline)]
    pub locations: Vec<LocationName>,
}

/// A location as named in stock updates.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    min_length = 1,
    max_length = 128,
    pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
)]
pub struct LocationName(pub String);

#[derive(Debug, Serialize, ToSchema)]
pub struct MarketView {
    pub market: String,
    pub locations: Vec<String>,
}

/// Define a market by the locations serving it. Sign-ups naming the market are
/// told only when stock at those locations is available; availability is judged
/// again for every variant stocked there.
#[utoipa::path(put, path = "/v1/markets/{market}", tag = "stock", security(("api_key" = [])),
    params(("market" = String, Path, description = "1-32 of a-z, 0-9, - and _ (compared lower-cased)", pattern = "^[A-Za-z0-9_-]{1,32}$")), request_body = MarketBody,
    responses((status = 200, body = MarketView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn put_market(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(market): ApiPath<String>,
    ApiJson(body): ApiJson<MarketBody>,
) -> ApiResult<Json<MarketView>> {
    let market = Market::parse(&market)
        .map_err(|e| ApiError::new(ErrorCode::InvalidMarket, e.to_string()))?;
    if body.locations.len() > 1_000 {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "at most 1000 locations",
        ));
    }
    let mut locations = Vec::with_capacity(body.locations.len());
    for l in body.locations {
        let l = l.0.trim().to_string();
        if l.is_empty() || l.len() > 128 || l.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::InvalidLocation,
                "a location is 1 to 128 printable characters",
            ));
        }
        locations.push(l);
    }
    locations.sort();
    locations.dedup();
    let restocks = app
        .db
        .put_market(store, &market, &locations, app.now())
        .await?;
    if !restocks.is_empty() {
        app.plan_ready.notify_one();
    }
    Ok(Json(MarketView {
        market: market.as_str().to_string(),
        locations,
    }))
}

/// The store's markets.
#[utoipa::path(get, path = "/v1/markets", tag = "stock", security(("api_key" = [])),
    responses((status = 200, body = Vec<MarketView>), (status = 401, body = ErrorBody)))]
pub async fn list_markets(
    State(app): State<App>,
    Merchant(store): Merchant,
) -> ApiResult<Json<Vec<MarketView>>> {
    Ok(Json(
        app.db
            .markets(store)
            .await?
            .into_iter()
            .map(|(market, locations)| MarketView { market, locations })
            .collect(),
    ))
}
