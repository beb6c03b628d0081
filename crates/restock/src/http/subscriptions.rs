//! The merchant's view of who is waiting.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Merchant;
use super::catalog::Page;
use super::error::{ApiQuery, ApiResult, ErrorBody};
use crate::app::App;
use crate::storage::demand::SubscriptionRow;

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionPage {
    pub items: Vec<SubscriptionRow>,
    pub next: Option<i64>,
}

/// The store's subscriptions, a page at a time.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "demand", security(("api_key" = [])), params(Page),
    responses((status = 200, body = SubscriptionPage), (status = 401, body = ErrorBody)))]
pub async fn list_subscriptions(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<SubscriptionPage>> {
    let limit = page.limit()?;
    let items = app.db.subscriptions(store, page.after()?, limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok(Json(SubscriptionPage { items, next }))
}
