//! What the two pollers (SQL and HTTP JSON) share: a record's fields read into
//! [`Cell`]s, the one parser from a record to a [`StockUpdate`] (also used to replay
//! a dead-lettered record), and the [`Reconciler`] that compares polled records in
//! chunks with the store's current levels and hands only what changed to intake.
//!
//! ## Versions
//! A polled record says what the source holds at the moment it was read, so its
//! version is that moment: the time the run started (Restock's clock), with no
//! sequence. When the source maps an `updated_at` field, the record's own time is
//! used instead, capped at the run's start (a clock running ahead cannot make a row
//! win over updates still to come). Under `restock_core::stock`'s ordering a webhook
//! observed after the run started (or after the row's `updated_at`) is newer and
//! stays; anything older than the poll gives way to it.

use std::collections::HashSet;

use restock_core::stock::{StockUpdate, Version};
use restock_core::values::Sku;
use serde::Deserialize;
use serde_json::Value;

use super::runner::{Delivered, SourceCtx};
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::storage::rejections::NewRejection;

/// Polled records compared with the store per chunk of this many.
pub const CHUNK: usize = 5_000;

/// Which field of a record holds what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default = "default_sku")]
    pub sku: String,
    #[serde(default = "default_available")]
    pub available: String,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

fn default_sku() -> String {
    "sku".into()
}

fn default_available() -> String {
    "available".into()
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            sku: default_sku(),
            available: default_available(),
            location: None,
            updated_at: None,
        }
    }
}

impl Mapping {
    pub fn check(&self) -> Result<(), String> {
        for (what, name) in [
            ("sku", Some(&self.sku)),
            ("available", Some(&self.available)),
            ("location", self.location.as_ref()),
            ("updated_at", self.updated_at.as_ref()),
        ] {
            if let Some(n) = name
                && (n.is_empty() || n.len() > 200)
            {
                return Err(format!("the {what} field name must be 1 to 200 characters"));
            }
        }
        Ok(())
    }
}

/// One field of a polled record, as read from the source.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    /// An integer too large for `i64` (an unsigned column).
    BigInt(u64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// A timestamp column, in Unix milliseconds.
    Time(i64),
    /// A value of a type the poller does not read (named).
    Other(String),
}

impl Cell {
    /// The cell as it is kept in a dead letter.
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::from(*i),
            Cell::BigInt(u) => Value::from(*u),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Time(ms) => chrono::DateTime::from_timestamp_millis(*ms)
                .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
                .unwrap_or(Value::Null),
            Cell::Other(t) => Value::String(format!("<{t}>")),
        }
    }

    /// A field of a JSON record (an HTTP item, or a dead letter being replayed).
    pub fn from_json(v: &Value) -> Cell {
        match v {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Cell::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Cell::BigInt(u)
                } else {
                    Cell::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => Cell::Text(s.clone()),
            Value::Array(_) => Cell::Other("array".into()),
            Value::Object(_) => Cell::Other("object".into()),
        }
    }
}

/// Why a record could not be read: a reason code and a sentence.
pub type Refusal = (ErrorCode, String);

/// The one parser from a polled record's fields to the canonical update. A field the
/// mapping names but the record lacks is `None`.
pub fn parse_record(
    mapping: &Mapping,
    sku: Option<&Cell>,
    available: Option<&Cell>,
    location: Option<&Cell>,
    updated_at: Option<&Cell>,
    polled_at: i64,
) -> Result<StockUpdate, Refusal> {
    let sku = match sku {
        None => {
            return Err((
                ErrorCode::InvalidItem,
                format!("the record has no field {:?} (the SKU)", mapping.sku),
            ));
        }
        Some(Cell::Text(s)) => Sku::parse(s).map_err(|_| {
            (
                ErrorCode::InvalidSku,
                format!(
                    "SKU {s:?} is empty, longer than 128 characters or holds control characters"
                ),
            )
        })?,
        Some(Cell::Int(i)) => {
            Sku::parse(&i.to_string()).map_err(|_| (ErrorCode::InvalidSku, "bad SKU".into()))?
        }
        Some(Cell::BigInt(i)) => {
            Sku::parse(&i.to_string()).map_err(|_| (ErrorCode::InvalidSku, "bad SKU".into()))?
        }
        Some(Cell::Null) => return Err((ErrorCode::InvalidSku, "the SKU is null".into())),
        Some(other) => {
            return Err((
                ErrorCode::InvalidSku,
                format!("the SKU is not text: {}", other.to_json()),
            ));
        }
    };
    let available = match available {
        None => {
            return Err((
                ErrorCode::InvalidItem,
                format!(
                    "the record has no field {:?} (the available quantity)",
                    mapping.available
                ),
            ));
        }
        Some(c) => quantity(c)?,
    };
    let location = match location {
        None | Some(Cell::Null) => "default".to_string(),
        Some(Cell::Text(s)) => {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
                return Err((
                    ErrorCode::InvalidLocation,
                    format!(
                        "location {s:?} is empty, longer than 128 characters or holds control characters"
                    ),
                ));
            }
            s.to_string()
        }
        Some(Cell::Int(i)) => i.to_string(),
        Some(other) => {
            return Err((
                ErrorCode::InvalidLocation,
                format!("the location is not text: {}", other.to_json()),
            ));
        }
    };
    let observed_at = match updated_at {
        None | Some(Cell::Null) => polled_at,
        Some(c) => time_ms(c)?.min(polled_at),
    };
    Ok(StockUpdate {
        sku,
        location,
        available,
        reserved: 0,
        incoming: None,
        incoming_at_ms: None,
        available_until_ms: None,
        version: Version {
            observed_at_ms: observed_at,
            sequence: None,
        },
    })
}

fn quantity(c: &Cell) -> Result<i64, Refusal> {
    let bad = |why: String| Err((ErrorCode::InvalidQuantity, why));
    let q = match c {
        Cell::Int(i) => *i,
        Cell::Float(f) if f.fract() == 0.0 && f.abs() <= super::MAX_QUANTITY as f64 => *f as i64,
        Cell::Text(s) => match s.trim().parse::<i64>() {
            Ok(i) => i,
            Err(_) => match s.trim().parse::<f64>() {
                // "12.0" from a DECIMAL column is an integer.
                Ok(f) if f.fract() == 0.0 && f.abs() <= super::MAX_QUANTITY as f64 => f as i64,
                _ => return bad(format!("available quantity {s:?} is not an integer")),
            },
        },
        Cell::Null => return bad("the available quantity is null".into()),
        other => {
            return bad(format!(
                "available quantity {} is not an integer",
                other.to_json()
            ));
        }
    };
    if q.abs() > super::MAX_QUANTITY {
        return bad(format!(
            "available quantity {q} is beyond ±{}",
            super::MAX_QUANTITY
        ));
    }
    Ok(q)
}

/// A record's time: a timestamp, RFC 3339 text, or a Unix time in seconds (or
/// milliseconds, when above 10^11).
fn time_ms(c: &Cell) -> Result<i64, Refusal> {
    let bad = || {
        Err((
            ErrorCode::InvalidTime,
            format!(
                "updated_at {} is not a timestamp, RFC 3339 time or Unix time",
                c.to_json()
            ),
        ))
    };
    match c {
        Cell::Time(ms) => Ok(*ms),
        Cell::Int(i) if *i > 100_000_000_000 => Ok(*i),
        Cell::Int(i) if *i >= 0 => Ok(i * 1000),
        Cell::Text(s) => match chrono::DateTime::parse_from_rfc3339(s.trim()) {
            Ok(t) => Ok(t.timestamp_millis()),
            Err(_) => match chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f")
            {
                Ok(t) => Ok(t.and_utc().timestamp_millis()),
                Err(_) => bad(),
            },
        },
        _ => bad(),
    }
}

/// A dead-lettered record (a JSON object of the record's fields) parsed again with
/// the source's current mapping.
pub fn reparse_record(
    mapping: &Mapping,
    payload: &str,
    received_at: i64,
) -> Result<Vec<StockUpdate>, (String, String)> {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(payload) else {
        return Err((
            ErrorCode::InvalidPayload.as_str().into(),
            "the dead letter is not a JSON object".into(),
        ));
    };
    let field = |name: Option<&String>| name.and_then(|n| m.get(n)).map(Cell::from_json);
    parse_record(
        mapping,
        field(Some(&mapping.sku)).as_ref(),
        field(Some(&mapping.available)).as_ref(),
        field(mapping.location.as_ref()).as_ref(),
        field(mapping.updated_at.as_ref()).as_ref(),
        received_at,
    )
    .map(|u| vec![u])
    .map_err(|(code, reason)| (code.as_str().to_string(), reason))
}

/// Compares polled records with the store chunk by chunk and delivers what changed.
pub struct Reconciler<'a> {
    app: &'a App,
    ctx: &'a SourceCtx,
    pending: Vec<StockUpdate>,
    rejected: Vec<NewRejection>,
    pub delivered: Delivered,
    /// Records read, readable or not.
    pub scanned: u64,
    /// Records that differed from the store and were handed to intake.
    pub changed: u64,
}

impl<'a> Reconciler<'a> {
    pub fn new(app: &'a App, ctx: &'a SourceCtx) -> Self {
        Reconciler {
            app,
            ctx,
            pending: Vec::with_capacity(CHUNK),
            rejected: Vec::new(),
            delivered: Delivered::default(),
            scanned: 0,
            changed: 0,
        }
    }

    /// One record: parsed, or refused with its raw fields (`raw` builds them only
    /// when needed).
    pub async fn push(
        &mut self,
        parsed: Result<StockUpdate, Refusal>,
        raw: impl FnOnce() -> std::collections::BTreeMap<String, Value>,
    ) -> Result<(), crate::storage::StorageError> {
        self.scanned += 1;
        match parsed {
            Ok(u) => self.pending.push(u),
            Err((code, reason)) => {
                // Keys sorted, so one bad record seen on every run is one dead
                // letter counted again.
                let payload = serde_json::to_string(&raw()).unwrap_or_default();
                self.rejected
                    .push(self.ctx.rejection(code.as_str(), reason, payload));
            }
        }
        if self.pending.len() + self.rejected.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Compares the pending chunk with the store and delivers what differs.
    pub async fn flush(&mut self) -> Result<(), crate::storage::StorageError> {
        let updates = std::mem::take(&mut self.pending);
        let rejected = std::mem::take(&mut self.rejected);
        if updates.is_empty() && rejected.is_empty() {
            return Ok(());
        }
        let skus: Vec<&str> = updates
            .iter()
            .map(|u| u.sku.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let snap = if skus.is_empty() {
            Default::default()
        } else {
            self.app
                .db
                .reconcile_snapshot(self.ctx.store, &self.ctx.name, &skus)
                .await?
        };
        let changed: Vec<StockUpdate> = updates
            .into_iter()
            .filter(|u| {
                let sku = u.sku.as_str();
                if !snap.known.contains(sku) {
                    // Waiting for the catalog already: the parked update applies
                    // when the SKU appears, and the next run corrects its quantity.
                    return !snap.parked.contains(sku);
                }
                snap.levels.get(&(sku.to_string(), u.location.clone())) != Some(&u.available)
            })
            .collect();
        self.changed += changed.len() as u64;
        if changed.is_empty() && rejected.is_empty() {
            return Ok(());
        }
        // Logged: the records that differed, as stock items (the rows that did not
        // parse are kept whole as dead letters).
        let items: Vec<_> = changed
            .iter()
            .map(super::api::StockItem::from_update)
            .collect();
        let received = super::Received {
            format: "rows",
            payload: serde_json::to_string(&items).unwrap_or_default(),
            cursor: None,
        };
        self.ctx
            .deliver(self.app, changed, rejected, received, &mut self.delivered)
            .await
    }
}
