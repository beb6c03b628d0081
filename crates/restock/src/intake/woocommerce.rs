//! WooCommerce's product webhooks (`product.created`, `product.updated`).
//!
//! WooCommerce signs the raw body with the webhook's secret: `X-WC-Webhook-Signature`
//! is base64(HMAC-SHA256(secret, body)), as Shopify does (see [`super::signature`]).
//! The payload is a REST API v3 product. A simple product with a SKU whose stock
//! WooCommerce manages becomes one stock level at location "default", observed at
//! the product's `date_modified_gmt`, so a late redelivery of an older edit is stale.
//! A variation's own change arrives as `product.updated` whose payload is the
//! variation (`"type": "variation"`, with its own SKU and `parent_id`): it is applied
//! like a simple product; a variation whose stock the parent manages
//! (`manage_stock: "parent"`) reports the parent's shared count under its own SKU.
//! The parent's `product.updated` lists only variation ids: there is nothing to apply
//! then unless the payload carries the variation objects themselves.

use chrono::{DateTime, NaiveDateTime};
use restock_core::stock::{StockUpdate, Version};
use restock_core::values::Sku;
use serde::Deserialize;
use serde_json::Value;

use crate::error_code::ErrorCode;

type Invalid = (ErrorCode, String);

/// The location every WooCommerce level is recorded at: WooCommerce keeps one
/// stock count per product.
pub const LOCATION: &str = "default";

/// What a product delivery asks for.
#[derive(Debug)]
pub enum ProductChange {
    /// Stock levels to apply, one per SKU.
    Levels(Vec<StockUpdate>),
    /// Nothing to apply, and why (answered 200 so WooCommerce does not retry).
    Ignored(String),
}

#[derive(Debug, Deserialize)]
struct Product {
    id: Value,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(flatten)]
    stock: Stock,
    #[serde(default)]
    variations: Vec<Value>,
}

/// The stock fields a product and a variation share.
#[derive(Debug, Deserialize)]
struct Stock {
    sku: Option<String>,
    /// `true`, `false`, or for a variation `"parent"` (the parent's count applies).
    manage_stock: Option<Value>,
    stock_quantity: Option<i64>,
    date_modified_gmt: Option<String>,
}

/// WooCommerce's `*_gmt` times are UTC without an offset ("2017-03-23T20:01:14");
/// an RFC 3339 time is accepted too.
pub fn gmt_time(field: &str, s: &str) -> Result<i64, Invalid> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|e| {
            (
                ErrorCode::InvalidTime,
                format!("{field} is not a GMT time like 2017-03-23T20:01:14 ({e})"),
            )
        })
}

/// Whether the body is the ping WooCommerce sends when a webhook is saved
/// (`webhook_id=N`, form-encoded, unsigned).
pub fn is_ping(body: &[u8]) -> bool {
    body.strip_prefix(b"webhook_id=")
        .is_some_and(|id| !id.is_empty() && id.len() <= 20 && id.iter().all(u8::is_ascii_digit))
}

impl Stock {
    /// The level this product or variation reports, `None` when it has nothing to
    /// apply (no SKU, or stock not managed), or why it is invalid.
    fn level(&self, inherited_time: Option<&str>) -> Result<Option<StockUpdate>, Invalid> {
        let Some(sku) = self.sku.as_deref().filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        if matches!(self.manage_stock, Some(Value::Bool(false)) | None) {
            return Ok(None);
        }
        let Some(available) = self.stock_quantity else {
            return Ok(None);
        };
        let sku = Sku::parse(sku).map_err(|e| (ErrorCode::InvalidSku, e.to_string()))?;
        if available.abs() > super::MAX_QUANTITY {
            return Err((
                ErrorCode::InvalidQuantity,
                format!(
                    "{}: stock_quantity must be within ±{}",
                    sku.as_str(),
                    super::MAX_QUANTITY
                ),
            ));
        }
        let modified = self
            .date_modified_gmt
            .as_deref()
            .or(inherited_time)
            .ok_or((
                ErrorCode::InvalidPayload,
                "date_modified_gmt is missing".to_string(),
            ))?;
        Ok(Some(StockUpdate {
            sku,
            location: LOCATION.into(),
            available,
            reserved: 0,
            incoming: None,
            incoming_at_ms: None,
            available_until_ms: None,
            version: Version {
                observed_at_ms: gmt_time("date_modified_gmt", modified)?,
                sequence: None,
            },
        }))
    }
}

/// A `product.created` / `product.updated` body as the stock it reports.
pub fn parse_product(body: &[u8]) -> Result<ProductChange, Invalid> {
    let p: Product = serde_json::from_slice(body).map_err(|e| {
        (
            ErrorCode::InvalidPayload,
            format!("not a WooCommerce product: {e}"),
        )
    })?;
    if !(p.id.is_u64() || p.id.is_i64()) {
        return Err((ErrorCode::InvalidPayload, "id is not a product id".into()));
    }
    match p.kind.as_deref() {
        Some("variable") => {
            let parent_time = p.stock.date_modified_gmt.as_deref();
            let mut levels = Vec::new();
            for v in p.variations.iter().filter(|v| v.is_object()) {
                let stock: Stock = serde_json::from_value(v.clone()).map_err(|e| {
                    (
                        ErrorCode::InvalidPayload,
                        format!("not a WooCommerce variation: {e}"),
                    )
                })?;
                levels.extend(stock.level(parent_time)?);
            }
            if levels.is_empty() {
                Ok(ProductChange::Ignored(
                    "variable product: WooCommerce sends no per-variation stock with the parent; \
                     send the variations' levels to POST /v1/stock"
                        .into(),
                ))
            } else {
                Ok(ProductChange::Levels(levels))
            }
        }
        Some("simple" | "variation") | None => match p.stock.level(None)? {
            Some(level) => Ok(ProductChange::Levels(vec![level])),
            None => Ok(ProductChange::Ignored(
                "no SKU, or WooCommerce does not manage this product's stock".into(),
            )),
        },
        Some(other) => {
            let other: String = other.chars().take(32).collect();
            Ok(ProductChange::Ignored(format!(
                "{other:?} products carry no stock of their own"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_simple_product_and_ignores_what_has_no_stock() {
        let body = br#"{"id": 794, "name": "Premium Quality", "type": "simple", "sku": "S-42",
            "manage_stock": true, "stock_quantity": 7, "stock_status": "instock",
            "date_modified_gmt": "2017-03-23T20:01:14", "variations": []}"#;
        let ProductChange::Levels(l) = parse_product(body).expect("parses") else {
            panic!("a level");
        };
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].sku.as_str(), l[0].available), ("S-42", 7));
        assert_eq!(l[0].version.observed_at_ms, 1_490_299_274_000);
        let unmanaged = br#"{"id": 794, "type": "simple", "sku": "S-42", "manage_stock": false,
            "stock_quantity": null, "date_modified_gmt": "2017-03-23T20:01:14"}"#;
        assert!(matches!(
            parse_product(unmanaged),
            Ok(ProductChange::Ignored(_))
        ));
        let variable = br#"{"id": 799, "type": "variable", "sku": "", "manage_stock": false,
            "date_modified_gmt": "2017-03-23T20:01:14", "variations": [733, 732]}"#;
        assert!(matches!(
            parse_product(variable),
            Ok(ProductChange::Ignored(_))
        ));
        assert_eq!(
            parse_product(b"webhook_id=12").map(|_| ()).map_err(|e| e.0),
            Err(ErrorCode::InvalidPayload)
        );
    }

    #[test]
    fn reads_a_variation_and_a_variable_product_carrying_its_variations() {
        // A variation's own product.updated, as the REST API v3 shows a variation.
        let variation = br#"{"id": 733, "parent_id": 799, "name": "Ship Your Idea - Black", "type": "variation",
            "sku": "SYI-BLACK", "manage_stock": true, "stock_quantity": 3, "stock_status": "instock",
            "date_modified_gmt": "2017-03-23T20:01:14", "variations": []}"#;
        let ProductChange::Levels(l) = parse_product(variation).expect("parses") else {
            panic!("a level");
        };
        assert_eq!((l[0].sku.as_str(), l[0].available), ("SYI-BLACK", 3));
        // Stock kept by the parent: the shared count, under the variation's SKU.
        let shared = br#"{"id": 734, "parent_id": 799, "type": "variation", "sku": "SYI-GREEN",
            "manage_stock": "parent", "stock_quantity": 11, "date_modified_gmt": "2017-03-23T20:01:14"}"#;
        let ProductChange::Levels(l) = parse_product(shared).expect("parses") else {
            panic!("a level");
        };
        assert_eq!((l[0].sku.as_str(), l[0].available), ("SYI-GREEN", 11));
        // A variable product whose payload carries its variations' objects.
        let variable = br#"{"id": 799, "type": "variable", "sku": "", "manage_stock": false,
            "date_modified_gmt": "2017-03-23T20:01:14",
            "variations": [{"id": 733, "sku": "SYI-BLACK", "manage_stock": true, "stock_quantity": 0},
                           {"id": 732, "sku": "SYI-WHITE", "manage_stock": true, "stock_quantity": 5}]}"#;
        let ProductChange::Levels(l) = parse_product(variable).expect("parses") else {
            panic!("levels");
        };
        let got: Vec<(&str, i64)> = l.iter().map(|u| (u.sku.as_str(), u.available)).collect();
        assert_eq!(got, [("SYI-BLACK", 0), ("SYI-WHITE", 5)]);
        assert_eq!(
            l[1].version.observed_at_ms, 1_490_299_274_000,
            "the parent's time"
        );
    }

    #[test]
    fn recognises_the_ping() {
        assert!(is_ping(b"webhook_id=12"));
        assert!(!is_ping(b"webhook_id="));
        assert!(!is_ping(b"{\"id\": 12}"));
    }
}
