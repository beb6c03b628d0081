//! Shopify's product webhooks (`products/create`, `products/update`,
//! `products/delete`): the catalog and the inventory item → variant mapping follow
//! the shop, so `inventory_levels/update` applies without mapping by hand.
//!
//! The payload is the REST Admin `Product` resource. It becomes the body the catalog
//! API takes (`PUT /v1/products/{id}`) and goes through the same validation:
//! - the product's id in the catalog is Shopify's product id (a product already
//!   holding one of its SKUs or inventory items keeps its own id, and its sign-ups);
//! - title, description (`body_html` as plain text), image (`image`, else the first
//!   of `images`), category (`product_type`, for a product new to the catalog), and
//!   the link `https://{shop domain}/products/{handle}`, with `?variant={id}` for
//!   each variant;
//! - prices are decimal strings read exactly into minor units of the store's
//!   `currency` (a setting: the payload names none); the product's price is its
//!   lowest variant price;
//! - one variant per SKU; a variant without a SKU (or repeating one an earlier
//!   variant of the product has) is keyed `shopify-{variant id}`; its
//!   `inventory_item_id` is recorded, and Shopify's inventory policy `continue`
//!   (selling while out of stock) is Restock's `backorder`, which never announces a
//!   restock;
//! - status `active` (and `unlisted`, still for sale by link) is on sale; `draft`
//!   and `archived` are not: their variants count as having nothing to sell, so
//!   nobody is told until the product is active again;
//! - a variant the shop no longer lists is kept, marked removed: not for sale, no
//!   new sign-ups, its history and sign-ups intact;
//! - `products/delete` marks the product deleted and its variants removed, for good
//!   (Shopify never reuses product ids, and a late update must not bring it back);
//! - the newest `updated_at` per product wins: an older delivery is `stale`.
//!
//! `inventory_quantity` is not applied: stock comes per location from
//! `inventory_levels/update`, and a total beside those levels would count twice.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use restock_core::ids::StoreId;
use restock_core::values::Currency;
use serde::Deserialize;
use serde_json::Value;

use super::shopify::id_text;
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::http::catalog::{ProductBody, VariantBody};
use crate::storage::StorageError;
use crate::storage::catalog::CatalogError;
use crate::storage::shopify::{ProductSync, SyncOutcome};

/// Rejections of `products/create` and `products/update` payloads.
pub const SOURCE: &str = "shopify_products";
/// Rejections of `products/delete` payloads (kept apart: replaying one deletes).
pub const DELETE_SOURCE: &str = "shopify_product_deletes";

/// Why a delivery cannot be applied: kept as a rejection with this code and reason.
pub type Refusal = (ErrorCode, String);

/// What a product topic asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `products/create` or `products/update`: the product as it is now.
    Upsert,
    /// `products/delete`.
    Delete,
}

impl Topic {
    pub fn from_header(topic: &str) -> Option<Topic> {
        match topic {
            "products/create" | "products/update" => Some(Topic::Upsert),
            "products/delete" => Some(Topic::Delete),
            _ => None,
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Topic::Upsert => SOURCE,
            Topic::Delete => DELETE_SOURCE,
        }
    }
}

/// What a delivery did.
#[derive(Debug)]
pub enum Applied {
    /// The catalog holds the product as the shop describes it.
    Synced {
        product: String,
        /// SKUs of variants the shop no longer lists (kept, marked removed).
        removed: Vec<String>,
        restocks: usize,
    },
    /// Not newer than what was applied before.
    Stale,
    /// The product is marked deleted (`None`: the catalog never held it).
    Deleted { product: Option<String> },
    /// Nothing to apply, and why.
    Ignored(String),
}

impl Applied {
    /// As a replay reports it: "applied", "stale" or "ignored", and what happened.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Applied::Synced {
                product,
                removed,
                restocks,
            } => (
                "applied",
                format!(
                    "product {product} synced ({restocks} restock(s), {} variant(s) removed)",
                    removed.len()
                ),
            ),
            Applied::Stale => ("stale", "a newer version of the product was applied".into()),
            Applied::Deleted { product } => (
                "applied",
                match product {
                    Some(p) => format!("product {p} marked deleted"),
                    None => "deletion recorded (the catalog never held the product)".into(),
                },
            ),
            Applied::Ignored(reason) => ("ignored", reason.clone()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Product {
    id: Value,
    title: Option<String>,
    handle: Option<String>,
    body_html: Option<String>,
    product_type: Option<String>,
    status: Option<String>,
    updated_at: Option<String>,
    variants: Option<Vec<Variant>>,
    options: Option<Vec<ProductOption>>,
    images: Option<Vec<Image>>,
    image: Option<Image>,
    variant_gids: Option<Vec<VariantGid>>,
}

#[derive(Debug, Deserialize)]
struct Variant {
    id: Value,
    title: Option<String>,
    /// A decimal string ("19.99"); a JSON number is refused (it may be a float).
    price: Option<Value>,
    sku: Option<String>,
    inventory_item_id: Option<Value>,
    inventory_policy: Option<String>,
    option1: Option<String>,
    option2: Option<String>,
    option3: Option<String>,
    image_id: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ProductOption {
    name: Option<String>,
    position: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Image {
    id: Option<Value>,
    src: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VariantGid {
    admin_graphql_api_id: Option<String>,
}

/// The shop's settings a product needs that its payload does not carry.
#[derive(Debug, Clone)]
pub struct ShopSettings {
    pub currency: Currency,
    /// The shop's domain, e.g. `my-shop.myshopify.com`.
    pub domain: String,
}

fn invalid(reason: impl Into<String>) -> Refusal {
    (ErrorCode::InvalidPayload, reason.into())
}

/// At most `max` characters of `s`, trimmed.
fn clip(s: &str, max: usize) -> String {
    s.trim()
        .chars()
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The largest part of `body_html` read. Descriptions are cut to 5,000 characters,
/// which this much HTML holds in all but markup-heavy cases; the bound also keeps
/// the conversion's cost small (it grows with the square of the nesting depth).
const MAX_HTML_BYTES: usize = 16 * 1024;

/// `body_html` as plain text: markup dropped, entities decoded, control characters
/// other than line breaks and tabs removed, blank runs collapsed, cut to the
/// catalog's 5,000 characters.
pub fn description_text(html: &str) -> String {
    let text = html2text::config::plain_no_decorate()
        .string_from_read(
            crate::util::prefix_within(html, MAX_HTML_BYTES).as_bytes(),
            100_000,
        )
        .unwrap_or_default();
    let mut out = String::new();
    let mut blank = true;
    for line in text.lines() {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            if !blank && !out.is_empty() {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
        blank = false;
    }
    clip(&out, 5000)
}

/// A shop domain as `X-Shopify-Shop-Domain` names it: a lower-case host name.
pub fn shop_domain(header: &str) -> Option<String> {
    let d = header.trim().to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(d)
}

/// Shopify image sources may be scheme-relative (`//cdn.shopify.com/...`).
fn image_url(src: &str) -> String {
    match src.strip_prefix("//") {
        Some(rest) => format!("https://{rest}"),
        None => src.to_string(),
    }
}

fn time_ms(field: &str, value: Option<&str>) -> Result<i64, Refusal> {
    let value = value.ok_or_else(|| invalid(format!("{field} is missing")))?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            (
                ErrorCode::InvalidTime,
                format!("{field} is not an RFC 3339 time: {e}"),
            )
        })
}

/// The id of a `products/delete` payload (`{"id": 788032119674292922}`).
pub fn parse_delete(body: &[u8]) -> Result<String, Refusal> {
    #[derive(Deserialize)]
    struct Deleted {
        id: Value,
    }
    let d: Deleted = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("not a Shopify product deletion: {e}")))?;
    id_text(&d.id).ok_or_else(|| invalid("id is not a product id"))
}

/// A `products/create` / `products/update` body as the catalog would hold it.
pub fn parse_product(body: &[u8], shop: &ShopSettings) -> Result<ProductSync, Refusal> {
    let p: Product =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not a Shopify product: {e}")))?;
    let shopify_id = id_text(&p.id).ok_or_else(|| invalid("id is not a product id"))?;
    let updated_at_ms = time_ms("updated_at", p.updated_at.as_deref())?;
    let status = match p.status.as_deref() {
        None | Some("active") | Some("unlisted") => "active",
        Some("draft") => "draft",
        Some("archived") => "archived",
        Some(other) => {
            let other: String = other.chars().take(32).collect();
            return Err(invalid(format!(
                "status {other:?} is not one of active, unlisted, draft, archived"
            )));
        }
    };
    let handle = p
        .handle
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("handle is missing"))?;
    let mut url = url::Url::parse(&format!("https://{}/", shop.domain))
        .map_err(|_| invalid("the shop domain does not make a URL"))?;
    url.path_segments_mut()
        .map_err(|_| invalid("the shop domain does not make a URL"))?
        .clear()
        .push("products")
        .push(handle);
    let images: Vec<Image> = p.images.unwrap_or_default();
    let image_src: BTreeMap<String, String> = images
        .iter()
        .filter_map(|i| Some((id_text(i.id.as_ref()?)?, image_url(i.src.as_deref()?))))
        .collect();
    let product_image = p
        .image
        .as_ref()
        .and_then(|i| i.src.as_deref())
        .or_else(|| images.iter().find_map(|i| i.src.as_deref()))
        .map(image_url);
    // Option names by position (option1 is position 1).
    let mut option_names: BTreeMap<i64, String> = BTreeMap::new();
    for (i, o) in p.options.unwrap_or_default().iter().enumerate() {
        let position = o.position.unwrap_or(i as i64 + 1);
        if let Some(name) = o
            .name
            .as_deref()
            .map(|n| clip(n, 64))
            .filter(|n| !n.is_empty())
        {
            option_names.insert(position, name);
        }
    }

    let variants = p.variants.unwrap_or_default();
    let mut bodies = Vec::with_capacity(variants.len());
    let mut variant_ids = Vec::with_capacity(variants.len());
    let mut skus_seen = BTreeSet::new();
    let mut lowest: Option<i64> = None;
    for v in &variants {
        let vid = id_text(&v.id).ok_or_else(|| invalid("a variant's id is not an id"))?;
        let price = match &v.price {
            Some(Value::String(s)) => shop.currency.parse_amount(s.trim()).map_err(|e| {
                (
                    ErrorCode::InvalidValue,
                    format!("variant {vid}: price: {e}"),
                )
            })?,
            Some(_) => {
                return Err(invalid(format!(
                    "variant {vid}: price must be a decimal string such as \"19.99\""
                )));
            }
            None => return Err(invalid(format!("variant {vid}: price is missing"))),
        };
        lowest = Some(lowest.map_or(price, |l| l.min(price)));
        let sku = v
            .sku
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .filter(|s| !skus_seen.contains(*s))
            .map(str::to_string)
            .unwrap_or_else(|| format!("shopify-{vid}"));
        skus_seen.insert(sku.clone());
        let inventory_item_id = match &v.inventory_item_id {
            None | Some(Value::Null) => None,
            Some(item) => Some(id_text(item).ok_or_else(|| {
                invalid(format!("variant {vid}: inventory_item_id is not an id"))
            })?),
        };
        let mut options = BTreeMap::new();
        for (position, value) in [(1, &v.option1), (2, &v.option2), (3, &v.option3)] {
            let Some(value) = value.as_deref().map(|s| clip(s, 128)) else {
                continue;
            };
            let name = option_names
                .get(&position)
                .cloned()
                .unwrap_or_else(|| format!("option{position}"));
            // Shopify's stand-in for a product without options.
            if name == "Title" && value == "Default Title" {
                continue;
            }
            options.insert(name, value);
        }
        let title = v
            .title
            .as_deref()
            .map(|t| clip(t, 200))
            .filter(|t| t != "Default Title")
            .unwrap_or_default();
        let mut variant_url = url.clone();
        variant_url.query_pairs_mut().append_pair("variant", &vid);
        bodies.push(VariantBody {
            sku,
            title,
            options,
            price: Some(price),
            image_url: v
                .image_id
                .as_ref()
                .and_then(id_text)
                .and_then(|id| image_src.get(&id).cloned()),
            url: Some(variant_url.to_string()),
            min_stock: None,
            notify_threshold: None,
            inventory_item_id,
            inventory_policy: Some(
                match v.inventory_policy.as_deref() {
                    Some("continue") => "backorder",
                    _ => "deny",
                }
                .into(),
            ),
        });
        variant_ids.push(vid);
    }
    let mut listed_variant_ids: BTreeSet<String> = variant_ids.iter().cloned().collect();
    for gid in p.variant_gids.unwrap_or_default() {
        if let Some(id) = gid
            .admin_graphql_api_id
            .as_deref()
            .and_then(|g| g.strip_prefix("gid://shopify/ProductVariant/"))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        {
            listed_variant_ids.insert(id.to_string());
        }
    }
    let body = ProductBody {
        title: clip(p.title.as_deref().unwrap_or_default(), 200),
        description: description_text(p.body_html.as_deref().unwrap_or_default()),
        image_url: product_image,
        url: url.to_string(),
        category: p
            .product_type
            .as_deref()
            .map(|t| clip(t, 128))
            .filter(|t| !t.is_empty()),
        price: lowest.unwrap_or(0),
        currency: shop.currency.as_str().to_string(),
        min_stock: None,
        notify_threshold: None,
        release: None,
        variants: bodies,
    };
    let product = body
        .parse(shopify_id.clone())
        .map_err(|e| (e.code, e.message))?;
    Ok(ProductSync {
        shopify_id,
        updated_at_ms,
        status,
        product,
        variant_ids,
        listed_variant_ids,
    })
}

/// The store's settings a product delivery needs, or what is missing.
async fn shop_settings(
    app: &App,
    store: StoreId,
) -> Result<Result<ShopSettings, Refusal>, StorageError> {
    let Some(row) = app.db.store(store).await? else {
        return Ok(Err((ErrorCode::UnknownStore, "no such store".into())));
    };
    let Some(currency) = row
        .currency
        .as_deref()
        .and_then(|c| Currency::parse(c).ok())
    else {
        return Ok(Err((
            ErrorCode::StoreSettingMissing,
            "the store has no currency, and Shopify's product prices name none: \
             set it (PATCH /v1/store {\"currency\": \"USD\"}) and replay"
                .into(),
        )));
    };
    let Some(domain) = row.shopify_domain else {
        return Ok(Err((
            ErrorCode::StoreSettingMissing,
            "the shop's domain is unknown (Shopify names it in X-Shopify-Shop-Domain)".into(),
        )));
    };
    Ok(Ok(ShopSettings { currency, domain }))
}

/// Applies a verified product delivery (or replays a kept one). A refusal is
/// returned, not kept: the caller keeps it (a webhook) or reports it (a replay).
pub async fn apply(
    app: &App,
    store: StoreId,
    topic: Topic,
    body: &[u8],
) -> Result<Result<Applied, Refusal>, StorageError> {
    if topic == Topic::Delete {
        let id = match parse_delete(body) {
            Ok(id) => id,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let product = app.db.delete_shopify_product(store, &id, app.now()).await?;
        return Ok(Ok(Applied::Deleted { product }));
    }
    let shop = match shop_settings(app, store).await? {
        Ok(s) => s,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let sync = match parse_product(body, &shop) {
        Ok(s) => s,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let outcome = match app.db.sync_shopify_product(store, &sync, app.now()).await {
        Ok(o) => o,
        Err(CatalogError::Storage(e)) => return Err(e),
        Err(e @ CatalogError::SkuTaken(_)) => {
            return Ok(Err((ErrorCode::SkuTaken, e.to_string())));
        }
        Err(e @ CatalogError::InventoryItemTaken(_)) => {
            return Ok(Err((ErrorCode::Conflict, e.to_string())));
        }
    };
    Ok(Ok(match outcome {
        SyncOutcome::Applied {
            external_id,
            removed,
            restocks,
        } => {
            if !restocks.is_empty() {
                app.metrics
                    .restocks
                    .with_label_values(&[SOURCE])
                    .inc_by(restocks.len() as u64);
                app.plan_ready.notify_one();
            }
            Applied::Synced {
                product: external_id,
                removed,
                restocks: restocks.len(),
            }
        }
        SyncOutcome::Stale => Applied::Stale,
        SyncOutcome::Deleted => Applied::Ignored(
            "the product was deleted in the shop; a deleted product is not brought back".into(),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/shopify/product.json");

    fn shop(code: &str) -> ShopSettings {
        ShopSettings {
            currency: Currency::parse(code).expect("currency"),
            domain: "jadepuma.myshopify.com".into(),
        }
    }

    #[test]
    fn maps_the_documented_product_to_the_catalog() {
        let s = parse_product(FIXTURE.as_bytes(), &shop("USD")).expect("parses");
        let p = &s.product;
        assert_eq!(s.shopify_id, "632910392");
        assert_eq!(s.status, "active");
        assert_eq!(p.external_id, "632910392");
        assert_eq!(p.title, "IPod Nano - 8GB");
        assert!(
            p.description
                .starts_with("It's the small iPod with one very big idea: Video."),
            "{}",
            p.description
        );
        assert!(!p.description.contains('<'), "{}", p.description);
        assert_eq!(
            p.url.as_str(),
            "https://jadepuma.myshopify.com/products/ipod-nano"
        );
        assert_eq!(
            p.image_url.as_ref().map(|u| u.as_str()),
            Some(
                "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/ipod-nano.png?v=1706740930"
            )
        );
        assert_eq!(p.category.as_deref(), Some("Cult Products"));
        assert_eq!((p.price_minor, p.currency.as_str()), (19900, "USD"));
        let skus: Vec<&str> = p.variants.iter().map(|v| v.sku.as_str()).collect();
        assert_eq!(
            skus,
            [
                "IPOD2008PINK",
                "IPOD2008RED",
                "IPOD2008GREEN",
                "shopify-457924702"
            ]
        );
        let pink = &p.variants[0];
        assert_eq!(pink.title, "Pink");
        assert_eq!(pink.inventory_item_id.as_deref(), Some("808950810"));
        assert_eq!(pink.price_minor, Some(19900));
        assert_eq!(pink.options.get("Color").map(String::as_str), Some("Pink"));
        assert_eq!(
            pink.url.as_ref().map(|u| u.as_str()),
            Some("https://jadepuma.myshopify.com/products/ipod-nano?variant=808950810")
        );
        assert_eq!(
            pink.image_url.as_ref().map(|u| u.as_str()),
            Some(
                "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/ipod-nano-pink.png?v=1706740930"
            )
        );
        assert_eq!(p.variants[1].price_minor, Some(20950));
        assert_eq!(
            p.variants[3].inventory_policy,
            restock_core::stock::InventoryPolicy::Backorder,
            "Shopify's continue sells while out of stock"
        );
        assert_eq!(
            s.variant_ids,
            ["808950810", "49148385", "39072856", "457924702"]
        );
        assert_eq!(s.listed_variant_ids.len(), 4);
        assert_eq!(s.updated_at_ms, 1_704_067_200_000);
        // Past 100 variants Shopify lists the rest by id only: they are still there.
        let more = FIXTURE.replacen(
            "\"variant_gids\": [",
            "\"variant_gids\": [{\"admin_graphql_api_id\": \"gid://shopify/ProductVariant/457924703\", \"updated_at\": \"2024-01-01T00:00:00.000Z\"},",
            1,
        );
        let s = parse_product(more.as_bytes(), &shop("USD")).expect("parses");
        assert!(s.listed_variant_ids.contains("457924703"));
        assert_eq!(s.product.variants.len(), 4);
    }

    #[test]
    fn prices_are_read_in_the_currency_minor_units() {
        // Yen have no minor unit: 209.50 cannot be held exactly, 209.00 can.
        assert_eq!(
            parse_product(FIXTURE.as_bytes(), &shop("JPY"))
                .map(|_| ())
                .map_err(|e| e.0),
            Err(ErrorCode::InvalidValue)
        );
        let yen = FIXTURE.replace("\"209.50\"", "\"209.00\"");
        let s = parse_product(yen.as_bytes(), &shop("JPY")).expect("parses");
        assert_eq!(s.product.price_minor, 199);
        assert_eq!(s.product.variants[1].price_minor, Some(209));
        let kwd = parse_product(FIXTURE.as_bytes(), &shop("KWD")).expect("parses");
        assert_eq!(kwd.product.price_minor, 199_000);
        let float = FIXTURE.replacen("\"price\": \"199.00\"", "\"price\": 199.0", 1);
        assert_eq!(
            parse_product(float.as_bytes(), &shop("USD"))
                .map(|_| ())
                .map_err(|e| e.0),
            Err(ErrorCode::InvalidPayload)
        );
        let cents = FIXTURE.replacen("\"price\": \"199.00\"", "\"price\": \"199.005\"", 1);
        assert_eq!(
            parse_product(cents.as_bytes(), &shop("USD"))
                .map(|_| ())
                .map_err(|e| e.0),
            Err(ErrorCode::InvalidValue)
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (what, body) in [
            ("not JSON", "webhook_id=1".to_string()),
            ("no id", FIXTURE.replacen("\"id\": 632910392,", "", 1)),
            (
                "unknown status",
                FIXTURE.replacen("\"status\": \"active\"", "\"status\": \"sold\"", 1),
            ),
            (
                "no updated_at",
                FIXTURE.replacen("\"updated_at\": \"2024-01-01T00:00:00+00:00\",", "", 1),
            ),
        ] {
            assert!(
                parse_product(body.as_bytes(), &shop("USD")).is_err(),
                "{what}"
            );
        }
        assert_eq!(
            parse_delete(br#"{"id": 788032119674292922}"#).as_deref(),
            Ok("788032119674292922")
        );
        assert!(parse_delete(br#"{"id": "x"}"#).is_err());
    }

    #[test]
    fn descriptions_are_plain_text_and_hostile_markup_is_harmless() {
        assert_eq!(
            description_text(
                "<p>Fits <strong>everyone</strong> &amp; more.</p>\n<p>Wash cold.</p>"
            ),
            "Fits everyone & more.\n\nWash cold."
        );
        assert_eq!(description_text(""), "");
        assert_eq!(description_text("a\u{0}b\u{7}c"), "abc");
        let deep = "<div>".repeat(100_000) + "deep";
        let text = description_text(&deep);
        assert!(text.chars().count() <= 5000);
        let long = "<p>".to_string() + &"x".repeat(20_000) + "</p>";
        assert_eq!(description_text(&long).chars().count(), 5000);
    }

    #[test]
    fn shop_domains_are_host_names() {
        assert_eq!(
            shop_domain("Jadepuma.myshopify.com").as_deref(),
            Some("jadepuma.myshopify.com")
        );
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.com",
            "evil.com/x",
            "a.com:80",
            "a b.com",
        ] {
            assert_eq!(shop_domain(bad), None, "{bad}");
        }
    }
}
