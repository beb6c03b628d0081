//! The JSON stock messages the stream sources (WebSocket, JetStream) receive: a field
//! mapping names where each value sits, and one function turns a message into
//! canonical updates. A message holds one update (an object) or several (an array).

use serde::Deserialize;

use restock_core::stock::StockUpdate;

use super::api::StockItem;

/// Where each value sits in a message's objects: a key, or a dotted path
/// (`data.sku`) into nested objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fields {
    pub sku: String,
    pub available: String,
    /// The source's sequence number (optional unless the source needs it).
    pub sequence: Option<String>,
    /// RFC 3339 time (or unix milliseconds) the source observed the quantity.
    pub updated_at: Option<String>,
    pub location: Option<String>,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            sku: "sku".into(),
            available: "available".into(),
            sequence: Some("sequence".into()),
            updated_at: Some("updated_at".into()),
            location: Some("location".into()),
        }
    }
}

/// One update from a message, with the sequence the message gave it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub update: StockUpdate,
    pub sequence: Option<i64>,
}

fn at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

fn int(v: &serde_json::Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Why a message (or one of its updates) is not an update: a reason code and text.
pub type Refusal = (String, String);

/// The updates in one message, each parsed with `received_at_ms` as the observed
/// time when the message carries none. The whole message is refused if any of its
/// updates is: a dead letter keeps the message whole, and replays it whole.
pub fn parse(fields: &Fields, payload: &str, received_at_ms: i64) -> Result<Vec<Parsed>, Refusal> {
    let value: serde_json::Value = serde_json::from_str(payload)
        .map_err(|e| ("invalid_json".to_string(), format!("not JSON: {e}")))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        v @ serde_json::Value::Object(_) => vec![v],
        _ => {
            return Err((
                "invalid_item".into(),
                "a message must be a JSON object or an array of objects".into(),
            ));
        }
    };
    items
        .iter()
        .map(|item| parse_one(fields, item, received_at_ms))
        .collect()
}

fn parse_one(
    fields: &Fields,
    item: &serde_json::Value,
    received_at_ms: i64,
) -> Result<Parsed, Refusal> {
    let missing = |name: &str, path: &str| {
        (
            "missing_field".to_string(),
            format!("the message has no {name} (mapped to {path:?})"),
        )
    };
    let invalid = |name: &str, path: &str, want: &str| {
        (
            "invalid_field".to_string(),
            format!("{name} (mapped to {path:?}) must be {want}"),
        )
    };
    let sku = match at(item, &fields.sku).ok_or_else(|| missing("sku", &fields.sku))? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(invalid("sku", &fields.sku, "a string")),
    };
    let available = at(item, &fields.available)
        .ok_or_else(|| missing("available", &fields.available))
        .and_then(|v| {
            int(v).ok_or_else(|| invalid("available", &fields.available, "an integer"))
        })?;
    let sequence = match &fields.sequence {
        Some(path) => at(item, path)
            .map(|v| int(v).ok_or_else(|| invalid("sequence", path, "an integer")))
            .transpose()?,
        None => None,
    };
    let observed_at = match &fields.updated_at {
        Some(path) => match at(item, path) {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => Some(
                int(v)
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .ok_or_else(|| {
                        invalid("updated_at", path, "an RFC 3339 time or unix milliseconds")
                    })?
                    .to_rfc3339(),
            ),
        },
        None => None,
    };
    let location = match &fields.location {
        Some(path) => at(item, path)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid("location", path, "a string"))
            })
            .transpose()?,
        None => None,
    };
    let stock = StockItem {
        sku,
        location,
        available,
        reserved: None,
        incoming: None,
        incoming_at: None,
        available_until: None,
        observed_at,
        sequence,
    };
    let update = stock
        .parse(received_at_ms)
        .map_err(|(code, reason)| (code.as_str().to_string(), reason))?;
    Ok(Parsed { update, sequence })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_nested_fields_and_arrays() {
        let fields = Fields {
            sku: "item.code".into(),
            available: "qty".into(),
            sequence: Some("seq".into()),
            updated_at: Some("ts".into()),
            location: None,
        };
        let got = parse(
            &fields,
            r#"[{"item":{"code":"A-1"},"qty":"4","seq":7,"ts":1767323045000},{"item":{"code":"B"},"qty":0,"seq":8}]"#,
            99,
        )
        .expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].update.sku.as_str(), "A-1");
        assert_eq!(got[0].update.available, 4);
        assert_eq!(got[0].sequence, Some(7));
        assert_eq!(got[0].update.version.observed_at_ms, 1_767_323_045_000);
        assert_eq!(got[1].update.version.observed_at_ms, 99);
        assert_eq!(got[1].update.location, "default");
    }

    #[test]
    fn refuses_with_reason_codes() {
        let f = Fields::default();
        let code = |p: &str| parse(&f, p, 0).map(|_| ()).expect_err("refused").0;
        assert_eq!(code("{not json"), "invalid_json");
        assert_eq!(code("42"), "invalid_item");
        assert_eq!(code(r#"{"available":1}"#), "missing_field");
        assert_eq!(code(r#"{"sku":"A","available":"lots"}"#), "invalid_field");
        assert_eq!(code(r#"{"sku":"","available":1}"#), "invalid_sku");
        assert_eq!(
            code(r#"{"sku":"A","available":1,"updated_at":"yesterday"}"#),
            "invalid_time"
        );
    }
}
