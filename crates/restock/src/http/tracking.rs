//! Signed links in messages: click-through redirect and unsubscribe (page, form and
//! RFC 8058 one-click POST). No login: the signed token is the authority.

use axum::Form;
use axum::extract::State;
use axum::http::{Method, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::context;
use restock_core::ids::NotificationId;
use restock_core::token::Purpose;
use serde::Deserialize;

use super::error::{ApiError, ApiPath, ErrorBody, ErrorCode};
use crate::app::App;

fn bad_token() -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, "this link is not valid")
}

fn page(app: &App, name: &str, ctx: minijinja::Value) -> Response {
    match app.renderer.page(name, ctx) {
        Ok(html) => ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => ApiError::internal(anyhow::anyhow!("rendering {name}: {e}")).into_response(),
    }
}

/// Click-through: records the click, then redirects to the variant's page. A HEAD
/// request (link scanners, previews) gets the same redirect but is not counted.
#[utoipa::path(get, path = "/t/c/{token}", tag = "tracking", params(("token" = String, Path, max_length = 64, pattern = "^[0-9]{1,19}\\.[A-Za-z0-9_-]{1,40}$")),
    responses((status = 303, description = "to the variant's page"), (status = 404, body = ErrorBody)))]
pub async fn click(
    State(app): State<App>,
    method: Method,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = app
        .signer
        .verify(Purpose::Click, &token)
        .ok_or_else(bad_token)?;
    let n = NotificationId(id);
    let target = app.db.link_target(n).await?.ok_or_else(bad_token)?;
    if method != Method::HEAD {
        app.db
            .record_tracking_event(target.store_id, n, "click", app.now())
            .await?;
    }
    let mut url = url::Url::parse(&target.url)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored URL: {e}")))?;
    url.query_pairs_mut()
        .append_pair("utm_source", "restock")
        .append_pair("utm_medium", "email")
        .append_pair("utm_campaign", "back_in_stock");
    Ok(Redirect::to(url.as_str()).into_response())
}

/// The unsubscribe page: asks whether to end this alert or all of the store's.
/// A GET never unsubscribes (mail scanners follow links).
#[utoipa::path(get, path = "/t/u/{token}", tag = "tracking", params(("token" = String, Path, max_length = 64, pattern = "^[0-9]{1,19}\\.[A-Za-z0-9_-]{1,40}$")),
    responses((status = 200, description = "HTML page", content_type = "text/html"), (status = 404, body = ErrorBody)))]
pub async fn unsubscribe_page(
    State(app): State<App>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = app
        .signer
        .verify(Purpose::Unsubscribe, &token)
        .ok_or_else(bad_token)?;
    let target = app
        .db
        .link_target(NotificationId(id))
        .await?
        .ok_or_else(bad_token)?;
    Ok(page(
        &app,
        "unsubscribe.html",
        context! {
            store_name => target.store_name,
            product_title => target.product_title,
            variant_title => target.variant_title,
            action => format!("/t/u/{token}"),
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct UnsubscribeForm {
    /// RFC 8058 one-click: "One-Click".
    #[serde(rename = "List-Unsubscribe")]
    pub list_unsubscribe: Option<String>,
    /// From the page's form: "this" or "all".
    pub scope: Option<String>,
}

/// Unsubscribe: the RFC 8058 one-click POST (`List-Unsubscribe=One-Click`) ends this
/// alert; the page's form can end all of the shopper's alerts at the store.
#[utoipa::path(post, path = "/t/u/{token}", tag = "tracking", params(("token" = String, Path, max_length = 64, pattern = "^[0-9]{1,19}\\.[A-Za-z0-9_-]{1,40}$")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "List-Unsubscribe=One-Click, or scope=this|all"),
    responses((status = 200, description = "HTML confirmation", content_type = "text/html"), (status = 404, body = ErrorBody)))]
pub async fn unsubscribe(
    State(app): State<App>,
    ApiPath(token): ApiPath<String>,
    form: Result<Form<UnsubscribeForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let id = app
        .signer
        .verify(Purpose::Unsubscribe, &token)
        .ok_or_else(bad_token)?;
    let n = NotificationId(id);
    let target = app.db.link_target(n).await?.ok_or_else(bad_token)?;
    // RFC 8058 clients post `List-Unsubscribe=One-Click`; anything unparseable is
    // treated as the narrow choice (this alert only).
    let all = form.as_ref().ok().and_then(|f| f.scope.as_deref()) == Some("all");
    let now = app.now();
    let subscription = restock_core::ids::SubscriptionId(target.subscription_id);
    app.db.unsubscribe(subscription, all, now).await?;
    app.db
        .record_tracking_event(
            target.store_id,
            n,
            if all {
                "unsubscribe_all"
            } else {
                "unsubscribe"
            },
            now,
        )
        .await?;
    Ok(page(
        &app,
        "unsubscribed.html",
        context! { store_name => target.store_name, product_title => target.product_title, all => all },
    ))
}

/// The page behind a sign-up's cancel link: what it is for, and a button to cancel.
/// A GET never cancels (mail scanners follow links).
#[utoipa::path(get, path = "/t/s/{token}", tag = "tracking", params(("token" = String, Path, max_length = 64, pattern = "^[0-9]{1,19}\\.[A-Za-z0-9_-]{1,40}$")),
    responses((status = 200, description = "HTML page", content_type = "text/html"), (status = 404, body = ErrorBody)))]
pub async fn cancel_page(
    State(app): State<App>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = app
        .signer
        .verify(Purpose::Cancel, &token)
        .ok_or_else(bad_token)?;
    let target = app
        .db
        .signup_target(restock_core::ids::SubscriptionId(id))
        .await?
        .ok_or_else(bad_token)?;
    Ok(page(
        &app,
        "cancel.html",
        context! {
            store_name => target.store_name,
            product_title => target.product_title,
            variant_title => target.variant_title,
            status => target.status,
            action => format!("/t/s/{token}"),
            done => false,
        },
    ))
}

/// Cancel the sign-up the signed link names (the form on the page, or a POST from
/// the storefront widget).
#[utoipa::path(post, path = "/t/s/{token}", tag = "tracking", params(("token" = String, Path, max_length = 64, pattern = "^[0-9]{1,19}\\.[A-Za-z0-9_-]{1,40}$")),
    responses((status = 200, description = "HTML confirmation", content_type = "text/html"), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(app): State<App>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = app
        .signer
        .verify(Purpose::Cancel, &token)
        .ok_or_else(bad_token)?;
    let sub = restock_core::ids::SubscriptionId(id);
    let target = app.db.signup_target(sub).await?.ok_or_else(bad_token)?;
    let status = app
        .db
        .cancel_subscription(restock_core::ids::StoreId(target.store_id), sub, app.now())
        .await?
        .unwrap_or(target.status);
    Ok(page(
        &app,
        "cancel.html",
        context! {
            store_name => target.store_name,
            product_title => target.product_title,
            variant_title => target.variant_title,
            status => status,
            action => format!("/t/s/{token}"),
            done => true,
        },
    ))
}
