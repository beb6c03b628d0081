//! Shoppers, for the merchant: who a shopper is (tier, time zone), what they opted
//! out of, the consents on record, their sign-ups, and every decision about them —
//! planned, deferred (with when it will go), held back (with why), sent.

use axum::Json;
use axum::extract::State;
use restock_core::ids::ShopperId;
use restock_core::planner::OptOuts;
use restock_core::values::{Channel, Email, Tier, TimeZone};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Merchant;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::storage::demand::{
    ConsentInput, ConsentRow, ContactRow, PreferenceChange, ShopperMessageRow, ShopperRow,
    ShopperUpdate, SubscriptionRow,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct PreferencesView {
    /// Opted out of every alert from the store.
    pub opted_out_all: bool,
    /// Category handles opted out of.
    pub categories_opted_out: Vec<String>,
    /// Channels opted out of.
    pub channels_opted_out: Vec<String>,
}

impl From<OptOuts> for PreferencesView {
    fn from(o: OptOuts) -> Self {
        PreferencesView {
            opted_out_all: o.all,
            categories_opted_out: o.categories,
            channels_opted_out: o.channels.iter().map(|c| c.as_str().to_string()).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShopperView {
    pub id: i64,
    pub customer_id: Option<String>,
    pub tier: Option<String>,
    pub time_zone: Option<String>,
    pub preferred_channel: Option<String>,
    pub preferences: PreferencesView,
    pub contacts: Vec<ContactRow>,
    pub last_order_at: Option<String>,
    pub created_at: String,
}

async fn view(app: &App, s: ShopperRow) -> ApiResult<ShopperView> {
    let contacts = app.db.shopper_contacts(ShopperId(s.id)).await?;
    Ok(ShopperView {
        preferences: s.opt_outs().into(),
        id: s.id,
        customer_id: s.customer_id,
        tier: s.tier,
        time_zone: s.time_zone,
        preferred_channel: s.preferred_channel,
        contacts,
        last_order_at: s.last_order_at.map(crate::util::format_ms),
        created_at: crate::util::format_ms(s.created_at),
    })
}

async fn shopper(app: &App, store: restock_core::ids::StoreId, id: i64) -> ApiResult<ShopperRow> {
    app.db
        .shopper(store, ShopperId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("shopper"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShopperLookup {
    /// The shopper's email address (matched case-insensitively).
    #[param(
        max_length = 254,
        pattern = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,30})?@[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?)*\\.[A-Za-z]{2,12}$"
    )]
    pub email: String,
}

/// Find a shopper by email address.
#[utoipa::path(get, path = "/v1/shoppers", tag = "demand", security(("api_key" = [])), params(ShopperLookup),
    responses((status = 200, body = ShopperView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn find_shopper(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiQuery(q): ApiQuery<ShopperLookup>,
) -> ApiResult<Json<ShopperView>> {
    let email = Email::parse(&q.email)
        .map_err(|e| ApiError::new(ErrorCode::InvalidEmail, e.to_string()))?;
    let s = app
        .db
        .shopper_by_email(store, &email)
        .await?
        .ok_or_else(|| ApiError::not_found("shopper"))?;
    Ok(Json(view(&app, s).await?))
}

/// One shopper.
#[utoipa::path(get, path = "/v1/shoppers/{id}", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ShopperView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_shopper(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ShopperView>> {
    let s = shopper(&app, store, id).await?;
    Ok(Json(view(&app, s).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateShopper {
    /// Loyalty tier (early-access tiers are named in the release policy); null clears it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9_-]{1,32}$")]
    pub tier: Option<Option<String>>,
    /// IANA time zone for quiet hours; null clears it (the store's applies).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<super::schemas::TimeZoneName>)]
    pub time_zone: Option<Option<String>>,
    /// The merchant's customer id (orders naming it are this shopper's).
    #[serde(default, with = "double_option")]
    #[schema(
        value_type = Option<String>,
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
    )]
    pub customer_id: Option<Option<String>>,
    /// The channel to try first.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<super::schemas::ChannelName>)]
    pub preferred_channel: Option<Option<String>>,
}

/// Distinguishes a field left out (`None`) from one set to null (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Set a shopper's tier, time zone, customer id or preferred channel.
#[utoipa::path(patch, path = "/v1/shoppers/{id}", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)), request_body = UpdateShopper,
    responses((status = 200, body = ShopperView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_shopper(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateShopper>,
) -> ApiResult<Json<ShopperView>> {
    let bad = |code: ErrorCode, e: String| ApiError::new(code, e);
    let update = ShopperUpdate {
        tier: req
            .tier
            .map(|t| {
                t.map(|t| Tier::parse(&t).map(|t| t.as_str().to_string()))
                    .transpose()
            })
            .transpose()
            .map_err(|e| bad(ErrorCode::InvalidValue, e.to_string()))?,
        time_zone: req
            .time_zone
            .map(|t| {
                t.map(|t| TimeZone::parse(&t).map(|z| z.name().to_string()))
                    .transpose()
            })
            .transpose()
            .map_err(|e| bad(ErrorCode::InvalidTimeZone, e.to_string()))?,
        customer_id: match req.customer_id {
            Some(Some(c)) if c.trim().is_empty() || c.len() > 128 || c.contains('\0') => {
                return Err(bad(
                    ErrorCode::InvalidValue,
                    "customer_id must be 1 to 128 characters".into(),
                ));
            }
            other => other,
        },
        preferred_channel: req
            .preferred_channel
            .map(|c| c.map(|c| Channel::parse(&c)).transpose())
            .transpose()
            .map_err(|e| bad(ErrorCode::InvalidValue, e.to_string()))?,
    };
    let s = app
        .db
        .update_shopper(store, ShopperId(id), &update, app.now())
        .await
        .map_err(|e| {
            if e.unique_violation() {
                ApiError::new(ErrorCode::Conflict, "another shopper has this customer_id")
            } else {
                e.into()
            }
        })?
        .ok_or_else(|| ApiError::not_found("shopper"))?;
    Ok(Json(view(&app, s).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    /// false: opt out of every alert from the store; true: opt in again.
    pub all: Option<bool>,
    /// Product categories (by handle) to opt in to or out of.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub categories: Vec<CategoryPreference>,
    /// Channels to opt in to (true) or out of (false). Opting out of a channel
    /// withdraws its consent (recorded); opting in records one.
    #[serde(default)]
    pub channels: ChannelPreferences,
    /// Where the shopper said so.
    #[schema(pattern = "^(widget|api|chat_agent|import|link|pos)$")]
    pub source: Option<String>,
    /// The words shown to the shopper.
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryPreference {
    /// The category's handle.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
    )]
    pub handle: String,
    pub opted_in: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPreferences {
    pub email: Option<bool>,
    pub sms: Option<bool>,
    pub push: Option<bool>,
    pub in_app: Option<bool>,
    pub webhook: Option<bool>,
}

/// Opt a shopper in or out of everything, of categories, of channels. Honoured when
/// planning and again right before each send.
#[utoipa::path(put, path = "/v1/shoppers/{id}/preferences", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)), request_body = PreferencesBody,
    responses((status = 200, body = PreferencesView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_preferences(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<PreferencesBody>,
) -> ApiResult<Json<PreferencesView>> {
    let mut change = PreferenceChange {
        all: req.all,
        ..PreferenceChange::default()
    };
    if req.categories.len() > 100 {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "at most 100 categories at once",
        ));
    }
    for c in req.categories {
        let handle = c.handle.trim().to_string();
        if handle.is_empty() || handle.chars().count() > 128 || handle.chars().any(char::is_control)
        {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                "a category handle is 1 to 128 printable characters",
            ));
        }
        change.categories.push((handle, c.opted_in));
    }
    let ch = &req.channels;
    for (channel, v) in [
        (Channel::Email, ch.email),
        (Channel::Sms, ch.sms),
        (Channel::Push, ch.push),
        (Channel::InApp, ch.in_app),
        (Channel::Webhook, ch.webhook),
    ] {
        if let Some(v) = v {
            change.channels.push((channel, v));
        }
    }
    if let Some(src) = &req.source
        && !matches!(
            src.as_str(),
            "widget" | "api" | "chat_agent" | "import" | "link" | "pos"
        )
    {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "source must be widget, api, chat_agent, import, link or pos",
        ));
    }
    let consent = ConsentInput {
        text: req.text.unwrap_or_default(),
        source: req.source.unwrap_or_else(|| "api".into()),
        ip: None,
        user_agent: None,
    };
    let o = app
        .db
        .change_preferences(store, ShopperId(id), &change, &consent, app.now())
        .await?
        .ok_or_else(|| ApiError::not_found("shopper"))?;
    Ok(Json(o.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    #[schema(value_type = super::schemas::ChannelName)]
    pub channel: String,
    /// true: consent given; false: withdrawn.
    pub granted: bool,
    /// The words shown to the shopper.
    #[serde(default)]
    pub text: String,
    /// Where the shopper said so.
    #[schema(pattern = "^(widget|api|chat_agent|import|link|pos)$")]
    pub source: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentList {
    /// Newest first.
    pub items: Vec<ConsentRow>,
}

/// Record a consent given or withdrawn for a channel (kept with the text, source,
/// time, IP and user agent).
#[utoipa::path(post, path = "/v1/shoppers/{id}/consents", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)), request_body = ConsentBody,
    responses((status = 201, body = ConsentList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_consent(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ConsentBody>,
) -> ApiResult<(axum::http::StatusCode, Json<ConsentList>)> {
    let channel = Channel::parse(&req.channel)
        .map_err(|e| ApiError::new(ErrorCode::InvalidValue, e.to_string()))?;
    if !matches!(
        req.source.as_str(),
        "widget" | "api" | "chat_agent" | "import" | "link" | "pos"
    ) {
        return Err(ApiError::new(
            ErrorCode::InvalidValue,
            "source must be widget, api, chat_agent, import, link or pos",
        ));
    }
    let consent = ConsentInput {
        text: req.text,
        source: req.source,
        ip: req.ip,
        user_agent: req.user_agent,
    };
    if !app
        .db
        .record_consent(
            store,
            ShopperId(id),
            channel,
            req.granted,
            &consent,
            app.now(),
        )
        .await?
    {
        return Err(ApiError::not_found("shopper"));
    }
    let items = app.db.shopper_consents(ShopperId(id), 50).await?;
    Ok((axum::http::StatusCode::CREATED, Json(ConsentList { items })))
}

/// The consents on record for a shopper, newest first.
#[utoipa::path(get, path = "/v1/shoppers/{id}/consents", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ConsentList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_consents(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ConsentList>> {
    shopper(&app, store, id).await?;
    let items = app.db.shopper_consents(ShopperId(id), 200).await?;
    Ok(Json(ConsentList { items }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShopperAlerts {
    pub items: Vec<SubscriptionRow>,
}

/// A shopper's alerts (sign-ups), oldest first.
#[utoipa::path(get, path = "/v1/shoppers/{id}/subscriptions", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ShopperAlerts), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn shopper_subscriptions(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ShopperAlerts>> {
    shopper(&app, store, id).await?;
    let items = app
        .db
        .subscriptions(store, Some(ShopperId(id)), None, 0, 500)
        .await?;
    Ok(Json(ShopperAlerts { items }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: i64,
    pub restock_id: i64,
    pub sku: String,
    /// alert or reminder.
    pub purpose: String,
    pub channel: String,
    pub recipient: String,
    pub wave: i64,
    /// planned (pending, due now), deferred (pending, due later: `due_at` says when),
    /// held (held back at planning: `reason` says why), running, done (sent),
    /// skipped (held back at send time: `reason`), failed, dead.
    pub status: String,
    /// Why it was held back, skipped or deferred: opted_out, holdout, recent_purchase,
    /// already_pending, expired, suppressed, no_consent, ended, sold_out, acted,
    /// quiet_hours, frequency_cap.
    pub reason: Option<String>,
    /// When it goes (pending) or went out.
    pub due_at: Option<String>,
    pub planned_at: String,
    pub sent_at: Option<String>,
}

impl MessageView {
    pub fn from_row(r: ShopperMessageRow) -> Self {
        let status = match r.state.as_str() {
            "pending" if r.due_at > r.planned_at => "deferred",
            "pending" => "planned",
            s => s,
        }
        .to_string();
        MessageView {
            due_at: (r.state == "pending").then(|| crate::util::format_ms(r.due_at)),
            id: r.id,
            restock_id: r.restock_event_id,
            sku: r.sku,
            purpose: r.purpose,
            channel: r.channel,
            recipient: r.recipient,
            wave: r.wave,
            status,
            reason: r.reason,
            planned_at: crate::util::format_ms(r.planned_at),
            sent_at: r.sent_at.map(crate::util::format_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// Newest first.
    pub items: Vec<MessageView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// Messages older than this id.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// 1-500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Every decision about a shopper: planned, deferred (and when it goes), held back
/// (and why), sent, skipped.
#[utoipa::path(get, path = "/v1/shoppers/{id}/messages", tag = "demand", security(("api_key" = [])),
    params(("id" = i64, Path), MessageQuery),
    responses((status = 200, body = MessagePage), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn shopper_messages(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> ApiResult<Json<MessagePage>> {
    shopper(&app, store, id).await?;
    let limit = super::catalog::check_limit(q.limit)?;
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "before must be positive",
        ));
    }
    let rows = app
        .db
        .shopper_messages(store, ShopperId(id), q.before.unwrap_or(i64::MAX), limit)
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(MessagePage {
        items: rows.into_iter().map(MessageView::from_row).collect(),
        next,
    }))
}
