//! The merchant's own stock API: `POST /v1/stock` with a batch of items.

use chrono::DateTime;
use restock_core::ids::StoreId;
use restock_core::stock::{StockUpdate, Version};
use restock_core::values::Sku;

use super::MAX_QUANTITY;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error_code::ErrorCode;
use crate::storage::rejections::NewRejection;

/// One stock observation as the merchant sends it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockItem {
    #[schema(min_length = 1, max_length = 128)]
    pub sku: String,
    /// Location (warehouse, store) the quantity is for; "default" if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub location: Option<String>,
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub available: i64,
    /// Units of `available` reserved or committed to orders: not for sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub incoming: Option<i64>,
    /// RFC 3339 time the incoming quantity is expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_at: Option<String>,
    /// RFC 3339 time temporary or seasonal stock stops counting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<String>,
    /// RFC 3339 time the source observed this quantity. Defaults to receipt time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// The source's monotonically increasing sequence number, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
}

impl StockItem {
    pub fn from_update(u: &StockUpdate) -> StockItem {
        let fmt = |ms: i64| crate::util::format_ms(ms);
        StockItem {
            sku: u.sku.as_str().to_string(),
            location: Some(u.location.clone()),
            available: u.available,
            reserved: (u.reserved != 0).then_some(u.reserved),
            incoming: u.incoming,
            incoming_at: u.incoming_at_ms.map(fmt),
            available_until: u.available_until_ms.map(fmt),
            observed_at: Some(fmt(u.version.observed_at_ms)),
            sequence: u.version.sequence,
        }
    }

    /// The canonical update, or why this item is not one.
    pub fn parse(&self, received_at_ms: i64) -> Result<StockUpdate, (ErrorCode, String)> {
        let sku = Sku::parse(&self.sku).map_err(|e| (ErrorCode::InvalidSku, e.to_string()))?;
        let location = self
            .location
            .as_deref()
            .unwrap_or("default")
            .trim()
            .to_string();
        if location.is_empty()
            || location.chars().count() > 128
            || location.chars().any(char::is_control)
        {
            return Err((
                ErrorCode::InvalidLocation,
                "location must be 1 to 128 characters, none of them control characters".into(),
            ));
        }
        if self.available.abs() > MAX_QUANTITY {
            return Err((
                ErrorCode::InvalidQuantity,
                format!("available must be within ±{MAX_QUANTITY}"),
            ));
        }
        if self
            .reserved
            .is_some_and(|r| !(0..=MAX_QUANTITY).contains(&r))
        {
            return Err((
                ErrorCode::InvalidQuantity,
                format!("reserved must be 0 to {MAX_QUANTITY}"),
            ));
        }
        if self
            .incoming
            .is_some_and(|i| !(0..=MAX_QUANTITY).contains(&i))
        {
            return Err((
                ErrorCode::InvalidQuantity,
                format!("incoming must be 0 to {MAX_QUANTITY}"),
            ));
        }
        let time =
            |field: &'static str, v: &Option<String>| -> Result<Option<i64>, (ErrorCode, String)> {
                v.as_deref()
                    .map(|s| {
                        DateTime::parse_from_rfc3339(s)
                            .map(|t| t.timestamp_millis())
                            .map_err(|e| {
                                (
                                    ErrorCode::InvalidTime,
                                    format!("{field} is not an RFC 3339 time ({e}): {s:?}"),
                                )
                            })
                    })
                    .transpose()
            };
        Ok(StockUpdate {
            sku,
            location,
            available: self.available,
            reserved: self.reserved.unwrap_or(0),
            incoming: self.incoming,
            incoming_at_ms: time("incoming_at", &self.incoming_at)?,
            available_until_ms: time("available_until", &self.available_until)?,
            version: Version {
                observed_at_ms: time("observed_at", &self.observed_at)?.unwrap_or(received_at_ms),
                sequence: self.sequence,
            },
        })
    }
}

/// Splits raw JSON items into parsed updates and rejections (kept whole, with the
/// reason). Items that are not even objects of the right shape are rejected too.
pub fn parse_batch(
    store: StoreId,
    items: &[serde_json::Value],
    received_at_ms: i64,
) -> (Vec<StockUpdate>, Vec<(usize, NewRejection)>) {
    let mut updates = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        let parsed = serde_json::from_value::<StockItem>(raw.clone())
            .map_err(|e| (ErrorCode::InvalidItem, e.to_string()))
            .and_then(|item| item.parse(received_at_ms));
        match parsed {
            Ok(u) => updates.push(u),
            Err((code, reason)) => rejected.push((
                i,
                NewRejection {
                    store: Some(store),
                    source: "api".into(),
                    reason_code: code.as_str().into(),
                    reason,
                    payload: raw.to_string(),
                },
            )),
        }
    }
    (updates, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_times_and_defaults() {
        let item: StockItem = serde_json::from_value(serde_json::json!({
            "sku": "A-1", "available": 3, "observed_at": "2026-01-02T03:04:05Z",
            "available_until": "2026-02-01T00:00:00+01:00"
        }))
        .expect("valid item");
        let u = item.parse(99).expect("parses");
        assert_eq!(u.location, "default");
        assert_eq!(u.version.observed_at_ms, 1_767_323_045_000);
        assert_eq!(u.available_until_ms, Some(1_769_900_400_000));
    }

    #[test]
    fn rejects_with_a_reason() {
        let (ok, bad) = parse_batch(
            StoreId(1),
            &[
                serde_json::json!({"sku": "A", "available": 1}),
                serde_json::json!({"sku": "", "available": 1}),
                serde_json::json!({"sku": "B", "available": "lots"}),
                serde_json::json!({"sku": "C", "available": 1, "observed_at": "yesterday"}),
                serde_json::json!({"sku": "D", "available": 1, "colour": "red"}),
            ],
            0,
        );
        assert_eq!(ok.len(), 1);
        let codes: Vec<_> = bad
            .iter()
            .map(|(i, r)| (*i, r.reason_code.as_str()))
            .collect();
        assert_eq!(
            codes,
            vec![
                (1, "invalid_sku"),
                (2, "invalid_item"),
                (3, "invalid_time"),
                (4, "invalid_item")
            ]
        );
        assert!(bad[3].1.reason.contains("colour"), "{}", bad[3].1.reason);
    }

    proptest! {
        #[test]
        fn round_trips_through_the_wire_format(sku in "[A-Za-z0-9-]{1,20}", qty in -5i64..1000, seq in proptest::option::of(0i64..1_000_000), t in 0i64..4_000_000_000_000) {
            let item = StockItem {
                sku, location: Some("wh-1".into()), available: qty, reserved: None, incoming: None, incoming_at: None,
                available_until: None, observed_at: Some(crate::util::format_ms(t)), sequence: seq,
            };
            let u = item.parse(0).expect("valid");
            let again = StockItem::from_update(&u).parse(0).expect("valid");
            prop_assert_eq!(u, again);
        }

        #[test]
        fn never_panics_on_arbitrary_json(s in ".{0,60}", n in any::<i64>()) {
            let _ = parse_batch(StoreId(1), &[serde_json::json!({"sku": s, "available": n, "observed_at": s})], 0);
        }
    }
}
