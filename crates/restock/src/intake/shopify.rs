//! Shopify's `inventory_levels/update` webhook.
//!
//! Shopify signs the raw request body with the app's shared secret: the
//! `X-Shopify-Hmac-Sha256` header is base64(HMAC-SHA256(secret, body)) (see
//! [`super::signature`]).
//! The payload names an inventory item and a location; the merchant maps inventory
//! items to variants in the catalog (`inventory_item_id`).

use chrono::DateTime;
use restock_core::stock::{StockUpdate, Version};
use restock_core::values::Sku;
use serde::Deserialize;

use crate::error_code::ErrorCode;

pub use super::signature::{sign, verify};

#[derive(Debug, Deserialize)]
pub struct InventoryLevelUpdate {
    pub inventory_item_id: serde_json::Value,
    pub location_id: serde_json::Value,
    pub available: Option<i64>,
    pub updated_at: String,
}

/// Shopify ids arrive as JSON numbers; keep them as the decimal text Shopify shows.
pub(crate) fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
            Some(s.clone())
        }
        _ => None,
    }
}

#[derive(Debug)]
pub struct Parsed {
    pub inventory_item_id: String,
    pub location: String,
    pub available: i64,
    pub observed_at_ms: i64,
}

pub fn parse(body: &[u8]) -> Result<Parsed, (ErrorCode, String)> {
    let p: InventoryLevelUpdate = serde_json::from_slice(body).map_err(|e| {
        (
            ErrorCode::InvalidPayload,
            format!("not an inventory level: {e}"),
        )
    })?;
    let inventory_item_id = id_text(&p.inventory_item_id).ok_or((
        ErrorCode::InvalidPayload,
        "inventory_item_id is not an id".to_string(),
    ))?;
    let location_id = id_text(&p.location_id).ok_or((
        ErrorCode::InvalidPayload,
        "location_id is not an id".to_string(),
    ))?;
    // Shopify sends "available": null for items it does not track; there is no
    // quantity to apply.
    let available = p.available.ok_or((
        ErrorCode::UntrackedItem,
        "available is null: Shopify does not track this item".to_string(),
    ))?;
    if available.abs() > super::MAX_QUANTITY {
        return Err((
            ErrorCode::InvalidQuantity,
            format!("available must be within ±{}", super::MAX_QUANTITY),
        ));
    }
    let observed_at_ms = DateTime::parse_from_rfc3339(&p.updated_at)
        .map_err(|e| {
            (
                ErrorCode::InvalidPayload,
                format!("updated_at is not an RFC 3339 time: {e}"),
            )
        })?
        .timestamp_millis();
    Ok(Parsed {
        inventory_item_id,
        location: format!("shopify:{location_id}"),
        available,
        observed_at_ms,
    })
}

impl Parsed {
    pub fn into_update(self, sku: Sku) -> StockUpdate {
        StockUpdate {
            sku,
            location: self.location,
            available: self.available,
            reserved: 0,
            incoming: None,
            incoming_at_ms: None,
            available_until_ms: None,
            version: Version {
                observed_at_ms: self.observed_at_ms,
                sequence: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently with Python: base64(hmac.new(b"hush", body, sha256).digest()).
    const BODY: &str = r#"{"inventory_item_id":271878346596884015,"location_id":24826418,"available":5,"updated_at":"2021-12-31T19:00:00-05:00","admin_graphql_api_id":"gid://shopify/InventoryLevel/24826418?inventory_item_id=271878346596884015"}"#;

    #[test]
    fn verifies_shopify_signatures() {
        let sig = sign("hush", BODY.as_bytes());
        assert_eq!(sig, "0VwqtgT4Aw+FppiaP1EoqZeAi8UL09PW7DD0tyZaDEk=");
        assert!(verify("hush", BODY.as_bytes(), &sig));
        assert!(!verify("other", BODY.as_bytes(), &sig));
        assert!(!verify("hush", BODY.replace('5', "6").as_bytes(), &sig));
        assert!(!verify("hush", BODY.as_bytes(), ""));
        assert!(!verify("hush", BODY.as_bytes(), "not base64!"));
    }

    #[test]
    fn parses_the_documented_payload() {
        let p = parse(BODY.as_bytes()).expect("parses");
        assert_eq!(p.inventory_item_id, "271878346596884015");
        assert_eq!(p.location, "shopify:24826418");
        assert_eq!(p.available, 5);
        assert_eq!(p.observed_at_ms, 1_640_995_200_000);
        let untracked = BODY.replace("\"available\":5", "\"available\":null");
        assert_eq!(
            parse(untracked.as_bytes()).map_err(|e| e.0).err(),
            Some(ErrorCode::UntrackedItem)
        );
    }
}
