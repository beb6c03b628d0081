//! The source interface. Every source — the API, platform webhooks, pollers, streams,
//! CSV — turns its payload into canonical [`StockUpdate`]s (or orders) at the edge and
//! hands them to [`ingest`], which applies the source's validation [`Profile`], the
//! shared intake ([`super::apply`]), and records the source's health and cursor.
//!
//! Configured sources (pollers and streams) live in the `sources` table, their
//! settings sealed because they hold connection strings and tokens; the built-in
//! push sources get a row the first time they deliver, which carries their health
//! and, once the merchant sets one, their profile.

use std::collections::HashMap;

use restock_core::ids::StoreId;
use restock_core::stock::StockUpdate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::storage::rejections::NewRejection;
use crate::storage::sources::{RunReport, SourceRow};
use crate::storage::stock::BatchOutcome;

/// What a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Runs the merchant's query against their PostgreSQL, MySQL/MariaDB or SQLite.
    Sql,
    /// Fetches a JSON document over HTTP.
    Http,
    /// Listens to a WebSocket stream.
    Websocket,
    /// Consumes a NATS JetStream stream through a durable consumer.
    Jetstream,
    /// Built in: `POST /v1/stock`.
    Api,
    /// Built in: Shopify webhooks.
    Shopify,
    /// Built in: WooCommerce webhooks.
    Woocommerce,
    /// Built in: CSV imports.
    Csv,
}

impl Kind {
    pub const CONFIGURED: [Kind; 4] = [Kind::Sql, Kind::Http, Kind::Websocket, Kind::Jetstream];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::Http => "http",
            Kind::Websocket => "websocket",
            Kind::Jetstream => "jetstream",
            Kind::Api => "api",
            Kind::Shopify => "shopify",
            Kind::Woocommerce => "woocommerce",
            Kind::Csv => "csv",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Sql,
            Kind::Http,
            Kind::Websocket,
            Kind::Jetstream,
            Kind::Api,
            Kind::Shopify,
            Kind::Woocommerce,
            Kind::Csv,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Pulled on a schedule (pollers), as opposed to streams and push sources.
    pub fn is_pull(self) -> bool {
        matches!(self, Kind::Sql | Kind::Http)
    }

    /// Has settings and is run by the workers (pollers and streams).
    pub fn is_configured(self) -> bool {
        Kind::CONFIGURED.contains(&self)
    }
}

/// What to do with an update naming a SKU the catalog does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSku {
    /// Keep it as a dead letter and apply it by itself as soon as the catalog gains
    /// the SKU.
    #[default]
    Park,
    /// Keep it as a dead letter, applied only when replayed by hand.
    Reject,
    /// Create a placeholder variant (not open to sign-ups until the catalog names
    /// it) and apply the update at once.
    Placeholder,
}

/// What to do with a negative available quantity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NegativeQuantity {
    /// Apply it: oversold stock counts as out of stock.
    #[default]
    Accept,
    /// Apply it as zero.
    Zero,
    /// Keep it as a dead letter (`negative_quantity`).
    Reject,
}

/// What to do when one delivery names the same SKU and location twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateLines {
    /// The newest (by sequence, then observed time, then position) wins; the others
    /// are ignored as stale.
    #[default]
    LastWins,
    /// Keep every line of the SKU and location as a dead letter (`duplicate_line`):
    /// the source cannot say which is right.
    Reject,
}

/// A source's validation profile: how strict intake is with its quirks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    pub unknown_sku: UnknownSku,
    pub negative_quantity: NegativeQuantity,
    pub duplicate_lines: DuplicateLines,
}

impl Profile {
    /// The stored profile, or the default if the row's JSON does not parse (it is
    /// validated on the way in; a bad row must not stop intake).
    pub fn from_stored(json: &str) -> Profile {
        serde_json::from_str(json).unwrap_or_default()
    }

    /// Applies the quantity and duplicate rules: the updates that pass with their
    /// positions in `updates`, and the refused ones as dead letters (with the source's
    /// name) with theirs.
    pub fn screen(&self, store: StoreId, source: &str, updates: Vec<StockUpdate>) -> Screened {
        let reject = |u: &StockUpdate, code: &str, reason: String| NewRejection {
            store: Some(store),
            source: source.to_string(),
            reason_code: code.to_string(),
            reason,
            payload: serde_json::to_string(&super::api::StockItem::from_update(u))
                .unwrap_or_default(),
        };
        let mut dup = std::collections::HashSet::new();
        if self.duplicate_lines == DuplicateLines::Reject {
            let mut count: HashMap<(&str, &str), usize> = HashMap::new();
            for u in &updates {
                *count
                    .entry((u.sku.as_str(), u.location.as_str()))
                    .or_default() += 1;
            }
            dup = count
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|((s, l), _)| (s.to_string(), l.to_string()))
                .collect();
        }
        let mut out = Screened::default();
        for (i, mut u) in updates.into_iter().enumerate() {
            if !dup.is_empty() && dup.contains(&(u.sku.as_str().to_string(), u.location.clone())) {
                let reason = format!(
                    "SKU {:?} at location {:?} appears more than once in one delivery; this source's profile refuses duplicates",
                    u.sku.as_str(),
                    u.location
                );
                out.refused.push((i, reject(&u, "duplicate_line", reason)));
                continue;
            }
            if u.available < 0 {
                match self.negative_quantity {
                    NegativeQuantity::Accept => {}
                    NegativeQuantity::Zero => u.available = 0,
                    NegativeQuantity::Reject => {
                        let reason = format!(
                            "available is {} for SKU {:?}; this source's profile refuses negative quantities",
                            u.available,
                            u.sku.as_str()
                        );
                        out.refused
                            .push((i, reject(&u, "negative_quantity", reason)));
                        continue;
                    }
                }
            }
            out.kept.push(u);
            out.kept_at.push(i);
        }
        out
    }
}

/// What [`Profile::screen`] let through and refused.
#[derive(Debug, Default)]
pub struct Screened {
    pub kept: Vec<StockUpdate>,
    /// The position in the input of each kept update.
    pub kept_at: Vec<usize>,
    /// Refused updates with their positions in the input.
    pub refused: Vec<(usize, NewRejection)>,
}

/// The settings a configured source of `kind` takes, checked: a JSON object the
/// kind's module accepts. Built-in sources take none.
pub fn check_config(kind: Kind, config: &serde_json::Value) -> Result<(), String> {
    match kind {
        Kind::Sql => super::poll_sql::check_config(config),
        Kind::Http => super::poll_http::check_config(config),
        Kind::Websocket => super::websocket::check_config(config),
        Kind::Jetstream => super::jetstream::check_config(config),
        Kind::Api | Kind::Shopify | Kind::Woocommerce | Kind::Csv => {
            if config.is_null() || config.as_object().is_some_and(|o| o.is_empty()) {
                Ok(())
            } else {
                Err(format!(
                    "a {} source takes no config; only a profile",
                    kind.as_str()
                ))
            }
        }
    }
}

/// A dead letter of a configured source, parsed again with the source's current
/// settings (after a mapping fix, say): the updates it holds, or why not.
pub fn reparse(
    kind: Kind,
    config: &serde_json::Value,
    payload: &str,
    received_at: i64,
) -> Result<Vec<StockUpdate>, (String, String)> {
    match kind {
        Kind::Sql => super::poll_sql::reparse(config, payload, received_at),
        Kind::Http => super::poll_http::reparse(config, payload, received_at),
        Kind::Websocket => super::websocket::reparse(config, payload, received_at),
        Kind::Jetstream => super::jetstream::reparse(config, payload, received_at),
        other => Err((
            "not_replayable".into(),
            format!(
                "{} payloads are replayed by their own source",
                other.as_str()
            ),
        )),
    }
}

/// The sealing context of a source's settings: bound to the store and name, so a
/// sealed value cannot be moved to another source.
pub fn seal_context(store: i64, name: &str) -> String {
    format!("source:{store}:{name}")
}

/// A configured source's settings, opened.
pub fn open_config(app: &App, row: &SourceRow) -> anyhow::Result<serde_json::Value> {
    if row.config.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let plain = app
        .secrets
        .open(&seal_context(row.store_id, &row.name), &row.config)
        .map_err(|e| anyhow::anyhow!("source {:?}: settings cannot be opened: {e}", row.name))?;
    Ok(serde_json::from_str(&plain)?)
}

/// Settings as shown back to the merchant: anything that may be a secret is masked
/// (header values, passwords, tokens, credentials, and the password in a URL).
pub fn redacted(config: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    fn secret_key(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        [
            "password",
            "token",
            "secret",
            "credential",
            "creds",
            "nkey",
            "authorization",
            "headers",
            "key",
        ]
        .iter()
        .any(|s| k.contains(s))
    }
    match config {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if secret_key(k) && !v.is_null() {
                        Value::String("********".into())
                    } else if let Some(s) = v.as_str()
                        && let Ok(mut u) = url::Url::parse(s)
                        && u.password().is_some()
                    {
                        let _ = u.set_password(Some("********"));
                        Value::String(u.to_string())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redacted).collect()),
        v => v.clone(),
    }
}

/// The profile the store set for one of its sources (by name), or the default.
pub async fn profile_of(app: &App, store: StoreId, source: &str) -> Profile {
    match app.db.source(store, source).await {
        Ok(Some(row)) => Profile::from_stored(&row.profile),
        _ => Profile::default(),
    }
}

/// The health report of a run that applied `out`.
pub fn report_of(out: &BatchOutcome, newest_event_at: Option<i64>) -> RunReport {
    RunReport {
        ok: true,
        error: None,
        applied: out.applied as i64,
        rejected: (out.rejection_ids.len()) as i64,
        newest_event_at,
        ..RunReport::default()
    }
}
