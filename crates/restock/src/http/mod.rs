//! The HTTP server: one file per resource. Routes are registered through
//! `utoipa_axum`, so the OpenAPI document served at `/openapi.json` is generated
//! from the same handlers the router runs and cannot drift from them.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod imports;
pub mod int;
pub mod layers;
pub mod markets;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod rejections;
pub mod schemas;
pub mod server;
pub mod shoppers;
pub mod sources;
pub mod stock;
pub mod store;
pub mod storefront;
pub mod subscriptions;
pub mod tracking;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use openapi::Contract;

#[derive(OpenApi)]
#[openapi(
    info(title = "Restock", description = "Back-in-stock notifications: catalog, stock, storefront sign-ups, outbox, tracking."),
    modifiers(&Security),
    components(schemas(crate::intake::api::StockItem)),
    tags(
        (name = "catalog", description = "Products, variants, categories and their thresholds"),
        (name = "stock", description = "Stock updates and restock events"),
        (name = "webhooks", description = "Signed webhooks from commerce platforms"),
        (name = "storefront", description = "Public API for the shopper-facing widget"),
        (name = "demand", description = "Shoppers, their sign-ups, preferences, consents and every decision about them"),
        (name = "orders", description = "Orders: they end alerts, hold back recent purchasers and count against stock"),
        (name = "outbox", description = "Notifications and their delivery"),
        (name = "intake", description = "Rejected input and its replay"),
        (name = "tracking", description = "Signed links in messages"),
        (name = "store", description = "Store settings"),
        (name = "admin", description = "Operator API"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The store's API key (rk_...)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator's admin_token"))
                    .build(),
            ),
        );
    }
}

/// Body limits per route group: what the largest legitimate request needs.
pub mod limits {
    /// `POST /v1/stock`: 10,000 items of a few hundred bytes.
    pub const STOCK_BATCH: usize = 4 * 1024 * 1024;
    /// Signed webhooks. A Shopify inventory level is a few hundred bytes, but a
    /// product carries up to 100 variants in full, up to 2,048 more by id, its images
    /// and its description.
    pub const WEBHOOK: usize = 2 * 1024 * 1024;
    /// Public storefront sign-ups.
    pub const STOREFRONT: usize = 8 * 1024;
    /// Everything else (catalog, settings, forms).
    pub const DEFAULT: usize = 256 * 1024;
}

/// The documented routes, and the OpenAPI document describing them.
pub fn api() -> (Router<App>, utoipa::openapi::OpenApi) {
    let stock = OpenApiRouter::new()
        .routes(routes!(stock::post_stock))
        .layer(DefaultBodyLimit::max(limits::STOCK_BATCH));
    let webhooks = OpenApiRouter::new()
        .routes(routes!(webhooks::shopify_inventory))
        .routes(routes!(webhooks::woocommerce))
        .layer(DefaultBodyLimit::max(limits::WEBHOOK));
    // CSV imports stream their body; the handler counts it against
    // `http.import_max_bytes` as it reads.
    let imports = OpenApiRouter::new()
        .routes(routes!(imports::post_import))
        .layer(DefaultBodyLimit::disable());
    let storefront = OpenApiRouter::new()
        .routes(routes!(storefront::subscribe, storefront::preflight))
        .layer(DefaultBodyLimit::max(limits::STOREFRONT));
    let rest = OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(admin::create_store))
        .routes(routes!(store::get_store, store::update_store))
        .routes(routes!(store::get_policy, store::put_policy))
        .routes(routes!(markets::list_markets))
        .routes(routes!(markets::put_market))
        .routes(routes!(catalog::put_category))
        .routes(routes!(catalog::put_product, catalog::get_product))
        .routes(routes!(catalog::list_products))
        .routes(routes!(catalog::get_variant))
        .routes(routes!(stock::list_restocks))
        .routes(routes!(stock::get_restock))
        .routes(routes!(orders::post_order))
        .routes(routes!(
            subscriptions::list_subscriptions,
            subscriptions::create_subscription
        ))
        .routes(routes!(
            subscriptions::get_subscription,
            subscriptions::delete_subscription
        ))
        .routes(routes!(shoppers::find_shopper))
        .routes(routes!(shoppers::get_shopper, shoppers::update_shopper))
        .routes(routes!(shoppers::put_preferences))
        .routes(routes!(shoppers::post_consent, shoppers::list_consents))
        .routes(routes!(shoppers::shopper_subscriptions))
        .routes(routes!(shoppers::shopper_messages))
        .routes(routes!(notifications::list_notifications))
        .routes(routes!(notifications::outbox_summary))
        .routes(routes!(notifications::replay_notification))
        .routes(routes!(rejections::list_rejections))
        .routes(routes!(rejections::replay_rejection))
        .routes(routes!(rejections::replay_matching))
        .routes(routes!(sources::list_sources))
        .routes(routes!(
            sources::get_source,
            sources::put_source,
            sources::delete_source
        ))
        .routes(routes!(sources::source_log))
        .routes(routes!(tracking::click))
        .routes(routes!(tracking::unsubscribe_page, tracking::unsubscribe))
        .routes(routes!(tracking::cancel_page, tracking::cancel))
        .layer(DefaultBodyLimit::max(limits::DEFAULT));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(stock)
        .merge(webhooks)
        .merge(imports)
        .merge(storefront)
        .merge(rest)
        .split_for_parts();
    // After the routes are in: the contract completes every operation.
    Contract.modify(&mut doc);
    (router, doc)
}

/// The OpenAPI document as served at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api().1
}

pub fn router(app: App) -> Router {
    let (routes, doc) = api();
    let doc = std::sync::Arc::new(doc);
    let routes = routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(layers::not_found)
        .method_not_allowed_fallback(layers::method_not_allowed);
    layers::apply(routes, &app.config.http).with_state(app)
}
