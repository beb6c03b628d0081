//! Who is calling: a merchant (API key, bearer), or the operator (admin token).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use restock_core::ids::StoreId;
use secrecy::ExposeSecret;

use super::error::ApiError;
use crate::app::App;

/// The store whose API key authenticated the request. Every merchant handler takes
/// this and scopes every query by it.
pub struct Merchant(pub StoreId);

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<App> for Merchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("send the store's API key as: Authorization: Bearer rk_...")
        })?;
        match app.db.store_for_api_key(key).await? {
            Some(store) => {
                tracing::Span::current().record("store", store.0);
                Ok(Merchant(store))
            }
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
    }
}

/// The operator, authenticated with `admin_token`.
pub struct Operator;

impl FromRequestParts<App> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let expected = app.config.admin_token.expose_secret();
        if expected.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "admin_disabled",
                "the admin API is off: set admin_token to enable it",
            ));
        }
        let given = bearer(parts).unwrap_or_default();
        // Compare digests so the comparison time does not depend on the secret.
        let same = crate::util::sha256_hex(given) == crate::util::sha256_hex(expected);
        if same {
            Ok(Operator)
        } else {
            Err(ApiError::unauthorized("invalid admin token"))
        }
    }
}
