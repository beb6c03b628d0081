//! Sign-ups, for the merchant: who is waiting, adding one (a chat agent, a
//! point-of-sale, an import), and cancelling one before a restock.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use restock_core::ids::{ShopperId, SubscriptionId};
use restock_core::planner::SubscriptionStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Merchant;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::storefront::{SubscribeResponse, parse_signup_fields, resolve_target, signup_answer};
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::storage::demand::{ConsentInput, SignUp, SubscriptionRow};

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionPage {
    pub items: Vec<SubscriptionRow>,
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriptionQuery {
    /// Return items after this cursor (the `next` of the previous page).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many items (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only this shopper's sign-ups.
    pub shopper: Option<i64>,
    /// Only sign-ups in this status.
    #[param(pattern = "^(waiting|notified|unsubscribed|cancelled|purchased|expired)$")]
    pub status: Option<String>,
}

/// The store's sign-ups, a page at a time.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "demand", security(("api_key" = [])), params(SubscriptionQuery),
    responses((status = 200, body = SubscriptionPage), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_subscriptions(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiQuery(q): ApiQuery<SubscriptionQuery>,
) -> ApiResult<Json<SubscriptionPage>> {
    if let Some(s) = &q.status
        && SubscriptionStatus::parse(s).is_none()
    {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "status must be waiting, notified, unsubscribed, cancelled, purchased or expired",
        ));
    }
    let limit = super::catalog::check_limit(q.limit)?;
    let after = super::catalog::check_after(q.after)?;
    let items = app
        .db
        .subscriptions(
            store,
            q.shopper.map(ShopperId),
            q.status.as_deref(),
            after,
            limit,
        )
        .await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok(Json(SubscriptionPage { items, next }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    pub email: String,
    /// A variant's SKU, or...
    pub sku: Option<String>,
    /// ...a product (any variant), by the merchant's product id.
    pub product: Option<String>,
    pub market: Option<String>,
    pub time_zone: Option<String>,
    /// Where the shopper agreed: "api" (default), "chat_agent", "import", "pos".
    pub source: Option<String>,
    /// The words the shopper agreed to.
    pub consent_text: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Sign a shopper up on their behalf, with the consent they gave you. Unlike the
/// storefront, this may sign up again a shopper who opted out of everything: the
/// call vouches for a fresh consent.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "demand", security(("api_key" = [])),
    request_body = CreateSubscription,
    responses((status = 201, body = SubscribeResponse), (status = 200, body = SubscribeResponse, description = "merged"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_subscription(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiJson(req): ApiJson<CreateSubscription>,
) -> ApiResult<(StatusCode, Json<SubscribeResponse>)> {
    let (status, body) = sign_up(&app, store, req, true).await?;
    Ok((status, Json(body)))
}

/// The merchant's sign-up path (the API and CSV imports): the fields checked, the
/// target resolved, the sign-up stored or merged with the shopper's earlier one.
/// `vouched`: the caller vouches for a fresh consent, so a shopper who opted out of
/// everything is signed up again; an import of an older list does not, and such an
/// address is refused with `confirmation_required`.
pub async fn sign_up(
    app: &App,
    store: restock_core::ids::StoreId,
    req: CreateSubscription,
    vouched: bool,
) -> ApiResult<(StatusCode, SubscribeResponse)> {
    let row = app
        .db
        .store(store)
        .await?
        .ok_or_else(|| ApiError::not_found("store"))?;
    let (email, market, time_zone) =
        parse_signup_fields(&req.email, req.market.as_deref(), req.time_zone.as_deref())?;
    let source = req.source.unwrap_or_else(|| "api".into());
    if !matches!(source.as_str(), "api" | "chat_agent" | "import" | "pos") {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "source must be api, chat_agent, import or pos",
        ));
    }
    let target = resolve_target(
        app,
        &row,
        req.sku.as_deref(),
        req.product.as_deref(),
        market.as_ref(),
    )
    .await?;
    let signup = SignUp {
        email,
        target,
        market,
        source: source.clone(),
        consent: ConsentInput {
            text: req.consent_text.unwrap_or_default(),
            source,
            ip: req.ip,
            user_agent: req.user_agent,
        },
        time_zone,
        anonymous: !vouched,
    };
    let (status, body) =
        signup_answer(app, app.signups.subscribe(store, &signup, app.now()).await?)?;
    Ok((status, body))
}

/// One sign-up. A cancelled (deleted) one is no longer served here; it stays in
/// the listing (`?status=cancelled`) as history.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = SubscriptionRow), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_subscription(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<SubscriptionRow>> {
    app.db
        .subscription(store, SubscriptionId(id))
        .await?
        .filter(|s| s.status != "cancelled")
        .map(Json)
        .ok_or_else(|| ApiError::not_found("subscription"))
}

/// Cancel a waiting sign-up before a restock: nothing more is sent for it, alerts for
/// it not yet sent are skipped, and it is gone from its own URL (the listing keeps it
/// as history). One that already ended (notified, bought, ...) answers 409.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = SubscriptionRow, description = "the cancelled sign-up"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "it already ended")))]
pub async fn delete_subscription(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<SubscriptionRow>> {
    let id = SubscriptionId(id);
    let before = app
        .db
        .subscription(store, id)
        .await?
        .filter(|s| s.status != "cancelled")
        .ok_or_else(|| ApiError::not_found("subscription"))?;
    if before.status != "waiting" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("this sign-up already ended ({})", before.status),
        ));
    }
    app.db
        .cancel_subscription(store, id, app.now())
        .await?
        .ok_or_else(|| ApiError::not_found("subscription"))?;
    app.db
        .subscription(store, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("subscription"))
}
