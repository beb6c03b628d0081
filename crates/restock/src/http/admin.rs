//! Operator API: creating stores.

use axum::extract::State;
use axum::http::StatusCode;
use restock_core::values::Origin;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Operator;
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use crate::app::App;
use crate::storage::stores::NewStore;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStore {
    pub name: String,
    /// URL-safe identifier, used in webhook URLs.
    pub slug: String,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub shopify_secret: Option<String>,
}

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

pub fn parse_origins(origins: &[String]) -> ApiResult<Vec<String>> {
    origins
        .iter()
        .map(|o| Origin::parse(o).map(|o| o.as_str().to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::unprocessable("invalid_value", e.to_string()))
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
        return Err(ApiError::unprocessable(
            "invalid_value",
            "slug must be 1-64 of a-z, 0-9 and -",
        ));
    }
    if req.name.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "name must not be empty",
        ));
    }
    let origins = parse_origins(&req.allowed_origins)?;
    let created = app
        .db
        .create_store(
            NewStore {
                name: req.name.trim(),
                slug: &req.slug,
                allowed_origins: &origins,
                shopify_secret: req.shopify_secret.as_deref().filter(|s| !s.is_empty()),
            },
            app.now(),
        )
        .await
        .map_err(|e| {
            if e.unique_violation() {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "a store with this slug exists",
                )
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
