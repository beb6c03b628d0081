//! Operator API: creating stores.

use axum::extract::State;
use axum::http::StatusCode;
use restock_core::values::Origin;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Operator;
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::storage::stores::NewStore;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStore {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// URL-safe identifier, used in webhook URLs.
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    pub slug: String,
    #[serde(default)]
    #[schema(max_items = 50, value_type = Vec<OriginText>)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 512, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub shopify_secret: Option<String>,
    /// WooCommerce webhook secret (the "Secret" of the store's WooCommerce webhooks).
    #[serde(default)]
    #[schema(max_length = 512, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub woocommerce_secret: Option<String>,
}

/// A web origin as browsers send it: scheme://host[:port], nothing after.
#[derive(ToSchema)]
#[schema(
    pattern = "^https?://[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z][A-Za-z0-9-]*(:[1-9][0-9]{0,3})?$"
)]
pub struct OriginText(pub String);

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedStoreBody {
    pub id: i64,
    pub slug: String,
    /// Shown once; only its hash is stored.
    pub api_key: String,
    pub publishable_key: String,
}

pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A store name: 1 to 200 characters, no control characters.
pub fn check_name(name: &str) -> ApiResult<()> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name must be 1 to 200 characters, none of them control characters",
        ));
    }
    Ok(())
}

/// A webhook secret (`field` names it): at most 512 characters, no control characters.
pub fn check_secret(field: &str, secret: &str) -> ApiResult<()> {
    if secret.chars().count() > 512 || secret.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must be at most 512 characters, none of them control characters"
        )));
    }
    Ok(())
}

pub fn parse_origins(origins: &[String]) -> ApiResult<Vec<String>> {
    origins
        .iter()
        .map(|o| Origin::parse(o).map(|o| o.as_str().to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::new(ErrorCode::InvalidValue, e.to_string()))
}

/// Create a store and its first API key.
#[utoipa::path(post, path = "/admin/stores", tag = "admin", request_body = CreateStore,
    security(("admin_token" = [])),
    responses(
        (status = 201, body = CreatedStoreBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_store(
    State(app): State<App>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateStore>,
) -> ApiResult<(StatusCode, axum::Json<CreatedStoreBody>)> {
    if !valid_slug(&req.slug) {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "slug must be 1-64 of a-z, 0-9 and -",
        ));
    }
    check_name(&req.name)?;
    if let Some(secret) = &req.shopify_secret {
        check_secret("shopify_secret", secret)?;
    }
    if let Some(secret) = &req.woocommerce_secret {
        check_secret("woocommerce_secret", secret)?;
    }
    if req.allowed_origins.len() > 50 {
        return Err(ApiError::invalid("at most 50 allowed_origins"));
    }
    let origins = parse_origins(&req.allowed_origins)?;
    let created = app
        .db
        .create_store(
            NewStore {
                name: req.name.trim(),
                slug: &req.slug,
                allowed_origins: &origins,
                shopify_secret: req
                    .shopify_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| app.secrets.seal("shopify_secret", s))
                    .as_deref(),
                woocommerce_secret: req
                    .woocommerce_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| app.secrets.seal("woocommerce_secret", s))
                    .as_deref(),
            },
            app.now(),
        )
        .await
        .map_err(|e| {
            if e.unique_violation() {
                ApiError::new(ErrorCode::Conflict, "a store with this slug exists")
            } else {
                e.into()
            }
        })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedStoreBody {
            id: created.store.id,
            slug: created.store.slug,
            api_key: created.api_key,
            publishable_key: created.store.publishable_key,
        }),
    ))
}
