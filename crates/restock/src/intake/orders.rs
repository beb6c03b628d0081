//! Orders from the merchant's API, Shopify's `orders/create` and WooCommerce's
//! `order.created` webhooks, each turned
//! into the canonical [`OrderInput`] at the edge and recorded by one function.

use chrono::DateTime;
use restock_core::ids::StoreId;
use restock_core::values::{Currency, Email, Market, Sku};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::error_code::ErrorCode;
use crate::storage::orders::{OrderInput, OrderLineInput, OrderOutcome};

/// The most lines one order may carry.
pub const MAX_LINES: usize = 1_000;
/// The largest quantity one line may carry.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// An order as the merchant's API sends it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    /// The merchant's order id; sending the same order again changes nothing.
    pub order_id: String,
    #[serde(default)]
    pub customer: CustomerBody,
    pub lines: Vec<OrderLineBody>,
    /// ISO 4217 code of the prices.
    pub currency: Option<String>,
    /// The market the order ships to, if the store has markets.
    pub market: Option<String>,
    /// RFC 3339 time the order was placed; receipt time if omitted.
    pub ordered_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    pub email: Option<String>,
    /// The merchant's customer id.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineBody {
    pub sku: String,
    pub quantity: i64,
    /// Unit price in minor units.
    pub price: Option<i64>,
}

/// Why a payload is not an order: the code answered and the reason kept.
pub type Invalid = (ErrorCode, String);

fn time(field: &str, s: &str) -> Result<i64, Invalid> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            (
                ErrorCode::InvalidTime,
                format!("{field} is not an RFC 3339 time ({e})"),
            )
        })
}

fn text_id(field: &str, s: &str) -> Result<String, Invalid> {
    let t = s.trim();
    if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
        return Err((
            ErrorCode::InvalidValue,
            format!("{field} must be 1 to 128 printable characters"),
        ));
    }
    Ok(t.to_string())
}

fn lines(raw: Vec<(String, i64, Option<i64>)>) -> Result<Vec<OrderLineInput>, Invalid> {
    if raw.is_empty() || raw.len() > MAX_LINES {
        return Err((
            ErrorCode::InvalidValue,
            format!("an order has 1 to {MAX_LINES} lines"),
        ));
    }
    raw.into_iter()
        .map(|(sku, quantity, price)| {
            let sku = Sku::parse(&sku).map_err(|e| (ErrorCode::InvalidSku, e.to_string()))?;
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                return Err((
                    ErrorCode::InvalidQuantity,
                    format!(
                        "line {}: quantity must be 1 to {MAX_QUANTITY}",
                        sku.as_str()
                    ),
                ));
            }
            if price.is_some_and(|p| p < 0) {
                return Err((
                    ErrorCode::InvalidValue,
                    format!("line {}: price must not be negative", sku.as_str()),
                ));
            }
            Ok(OrderLineInput {
                sku,
                quantity,
                price_minor: price,
            })
        })
        .collect()
}

impl OrderBody {
    /// The canonical order, or why this is not one.
    pub fn parse(self, received_at: i64) -> Result<OrderInput, Invalid> {
        let email = self
            .customer
            .email
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .map(Email::parse)
            .transpose()
            .map_err(|e| (ErrorCode::InvalidEmail, e.to_string()))?;
        let customer_id = self
            .customer
            .id
            .as_deref()
            .map(|c| text_id("customer.id", c))
            .transpose()?;
        Ok(OrderInput {
            order_ref: text_id("order_id", &self.order_id)?,
            email,
            customer_id,
            source: "api".into(),
            currency: self
                .currency
                .as_deref()
                .map(|c| Currency::parse(c).map(|c| c.as_str().to_string()))
                .transpose()
                .map_err(|e| (ErrorCode::InvalidValue, e.to_string()))?,
            market: self
                .market
                .as_deref()
                .map(Market::parse)
                .transpose()
                .map_err(|e| (ErrorCode::InvalidMarket, e.to_string()))?,
            ordered_at: match self.ordered_at.as_deref() {
                Some(t) => time("ordered_at", t)?,
                None => received_at,
            },
            lines: lines(
                self.lines
                    .into_iter()
                    .map(|l| (l.sku, l.quantity, l.price))
                    .collect(),
            )?,
        })
    }
}

/// Shopify's order payload: the fields Restock reads.
#[derive(Debug, Deserialize)]
struct ShopifyOrder {
    id: serde_json::Value,
    email: Option<String>,
    #[serde(default)]
    customer: Option<ShopifyCustomer>,
    created_at: String,
    currency: Option<String>,
    line_items: Vec<ShopifyLine>,
}

#[derive(Debug, Deserialize)]
struct ShopifyCustomer {
    id: Option<serde_json::Value>,
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ShopifyLine {
    sku: Option<String>,
    quantity: i64,
    price: Option<String>,
}

/// Shopify's `orders/create` payload as the canonical order. Line prices arrive as
/// decimal strings ("19.99") and are kept in minor units.
pub fn parse_shopify(body: &[u8]) -> Result<OrderInput, Invalid> {
    let o: ShopifyOrder = serde_json::from_slice(body).map_err(|e| {
        (
            ErrorCode::InvalidPayload,
            format!("not a Shopify order: {e}"),
        )
    })?;
    let id = match &o.id {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return Err((ErrorCode::InvalidPayload, "id is not an order id".into())),
    };
    let currency = o.currency.as_deref().and_then(|c| Currency::parse(c).ok());
    let email = o
        .email
        .as_deref()
        .or(o.customer.as_ref().and_then(|c| c.email.as_deref()))
        .filter(|e| !e.trim().is_empty())
        .map(Email::parse)
        .transpose()
        .map_err(|e| (ErrorCode::InvalidEmail, e.to_string()))?;
    let customer_id = o
        .customer
        .as_ref()
        .and_then(|c| c.id.as_ref())
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    let minor = |price: &str| -> Option<i64> {
        let digits = currency.map_or(2, |c| c.minor_digits());
        let (whole, frac) = price.split_once('.').unwrap_or((price, ""));
        let frac: String = frac
            .chars()
            .chain(std::iter::repeat('0'))
            .take(digits as usize)
            .collect();
        format!("{whole}{frac}").parse().ok()
    };
    // Lines without a SKU (custom items, tips) cannot be matched to the catalog.
    let raw: Vec<(String, i64, Option<i64>)> = o
        .line_items
        .iter()
        .filter_map(|l| {
            let sku = l.sku.as_deref().filter(|s| !s.trim().is_empty())?;
            Some((
                sku.to_string(),
                l.quantity,
                l.price.as_deref().and_then(minor),
            ))
        })
        .collect();
    Ok(OrderInput {
        order_ref: text_id("id", &id)?,
        email,
        customer_id,
        source: "shopify".into(),
        currency: currency.map(|c| c.as_str().to_string()),
        market: None,
        ordered_at: time("created_at", &o.created_at)?,
        lines: lines(raw)?,
    })
}

/// WooCommerce's order payload (REST API v3): the fields Restock reads.
#[derive(Debug, Deserialize)]
struct WooOrder {
    id: serde_json::Value,
    currency: Option<String>,
    date_created_gmt: String,
    customer_id: Option<i64>,
    billing: Option<WooBilling>,
    line_items: Vec<WooLine>,
}

#[derive(Debug, Deserialize)]
struct WooBilling {
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WooLine {
    sku: Option<String>,
    quantity: i64,
    /// The unit price as a JSON number in major units (19.99).
    price: Option<f64>,
}

/// WooCommerce's `order.created` payload as the canonical order. A guest's
/// `customer_id` is 0 and is not kept.
pub fn parse_woocommerce(body: &[u8]) -> Result<OrderInput, Invalid> {
    let o: WooOrder = serde_json::from_slice(body).map_err(|e| {
        (
            ErrorCode::InvalidPayload,
            format!("not a WooCommerce order: {e}"),
        )
    })?;
    let id = match &o.id {
        serde_json::Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return Err((ErrorCode::InvalidPayload, "id is not an order id".into())),
    };
    let currency = o.currency.as_deref().and_then(|c| Currency::parse(c).ok());
    let email = o
        .billing
        .as_ref()
        .and_then(|b| b.email.as_deref())
        .filter(|e| !e.trim().is_empty())
        .map(Email::parse)
        .transpose()
        .map_err(|e| (ErrorCode::InvalidEmail, e.to_string()))?;
    let scale = 10f64.powi(currency.map_or(2, |c| c.minor_digits()) as i32);
    // Lines without a SKU cannot be matched to the catalog.
    let raw: Vec<(String, i64, Option<i64>)> = o
        .line_items
        .iter()
        .filter_map(|l| {
            let sku = l.sku.as_deref().filter(|s| !s.trim().is_empty())?;
            let price = l
                .price
                .filter(|p| p.is_finite() && (0.0..1e12).contains(p))
                .map(|p| (p * scale).round() as i64);
            Some((sku.to_string(), l.quantity, price))
        })
        .collect();
    Ok(OrderInput {
        order_ref: text_id("id", &id)?,
        email,
        customer_id: o.customer_id.filter(|c| *c > 0).map(|c| c.to_string()),
        source: "woocommerce".into(),
        currency: currency.map(|c| c.as_str().to_string()),
        market: None,
        ordered_at: super::woocommerce::gmt_time("date_created_gmt", &o.date_created_gmt)?,
        lines: lines(raw)?,
    })
}

/// Records an order and starts planning any restock its re-judging caused.
pub async fn record(
    app: &App,
    store: StoreId,
    order: &OrderInput,
) -> Result<OrderOutcome, crate::storage::StorageError> {
    let out = app.db.record_order(store, order, app.now()).await?;
    if let OrderOutcome::Recorded { restocks, .. } = &out
        && !restocks.is_empty()
    {
        app.plan_ready.notify_one();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shopify_order_becomes_the_canonical_order() {
        let body = br#"{"id": 820982911946154508, "email": "Jon@Example.com", "created_at": "2026-03-01T12:00:00-05:00",
            "currency": "EUR", "customer": {"id": 115310627314723954, "email": "jon@example.com"},
            "line_items": [{"sku": "S-42", "quantity": 1, "price": "129.00"}, {"sku": "", "quantity": 1, "price": "5.00"}]}"#;
        let o = parse_shopify(body).expect("parses");
        assert_eq!(o.order_ref, "820982911946154508");
        assert_eq!(o.customer_id.as_deref(), Some("115310627314723954"));
        assert_eq!(
            o.email.map(|e| e.as_str().to_string()).as_deref(),
            Some("Jon@example.com")
        );
        assert_eq!(o.ordered_at, 1_772_384_400_000);
        assert_eq!(o.lines.len(), 1);
        assert_eq!(o.lines[0].price_minor, Some(12900));
    }

    #[test]
    fn a_woocommerce_order_becomes_the_canonical_order() {
        let body = br#"{"id": 727, "status": "processing", "currency": "USD", "customer_id": 0,
            "date_created": "2017-03-22T16:28:02", "date_created_gmt": "2017-03-22T19:28:02",
            "billing": {"first_name": "John", "email": "john.doe@example.com"},
            "line_items": [{"id": 315, "name": "Woo Single #1", "product_id": 93, "variation_id": 0,
                "quantity": 2, "sku": "S-42", "price": 3, "total": "6.00"},
                {"id": 316, "name": "Gift wrap", "quantity": 1, "sku": "", "price": 1.5}]}"#;
        let o = parse_woocommerce(body).expect("parses");
        assert_eq!(o.order_ref, "727");
        assert_eq!(o.customer_id, None);
        assert_eq!(o.ordered_at, 1_490_210_882_000);
        assert_eq!(o.lines.len(), 1);
        assert_eq!(
            (o.lines[0].quantity, o.lines[0].price_minor),
            (2, Some(300))
        );
    }

    #[test]
    fn api_orders_are_refused_with_a_reason() {
        let body: OrderBody = serde_json::from_value(serde_json::json!({
            "order_id": "1001", "lines": [{"sku": "A", "quantity": 0}]
        }))
        .expect("shape");
        assert_eq!(
            body.parse(0).map(|_| ()).map_err(|e| e.0),
            Err(ErrorCode::InvalidQuantity)
        );
        let body: OrderBody = serde_json::from_value(serde_json::json!({
            "order_id": " ", "lines": [{"sku": "A", "quantity": 1}]
        }))
        .expect("shape");
        assert_eq!(
            body.parse(0).map(|_| ()).map_err(|e| e.0),
            Err(ErrorCode::InvalidValue)
        );
    }
}
