//! The HTTP JSON poller: fetches a JSON document on the source's interval (15
//! minutes unless set), reads the array of items a JSON pointer names, and hands
//! only the items that differ from the store's current levels to intake — so, like
//! the SQL poller, it doubles as reconciliation.
//!
//! The last answer's `ETag` and `Last-Modified` are kept in the source's cursor and
//! sent back as `If-None-Match` and `If-Modified-Since`; a `304 Not Modified`
//! delivers nothing. An answer other than 2xx or 304, a body over `max_bytes`, a
//! timeout, or a document without the item array fails the run (the circuit breaker
//! counts it). An item that cannot be read becomes a dead letter holding the item
//! as JSON with sorted keys, replayable with the source's current field mapping.
//! Versions: see [`super::poll`].
//!
//! Settings (`config` of an `http` source):
//! `{"url": "http://erp.internal/stock.json", "headers": {"Authorization": "Bearer …"},
//!   "items_pointer": "/items", "fields": {"sku": "sku", "available": "qty"},
//!   "max_bytes": 52428800, "timeout_secs": 60}`.
//! `https://` URLs are checked against the public web roots; a source behind a
//! private CA names it in `ca_pem` (the CA certificate as PEM text), which is trusted
//! for that source only.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::poll::{self, Cell, Mapping, Reconciler};
use super::runner::{PullOutcome, SourceCtx};
use crate::app::App;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: String,
    /// Request headers (an `Authorization` header, say); kept sealed, shown masked.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON pointer (RFC 6901) to the array of items; "" for a top-level array.
    #[serde(default)]
    pub items_pointer: String,
    #[serde(default)]
    pub fields: Mapping,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// A private CA (PEM) trusted for this source's `https://` URL, beside the
    /// public roots.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

fn default_max_bytes() -> u64 {
    50 * 1024 * 1024
}

fn default_timeout() -> u64 {
    60
}

impl HttpConfig {
    pub fn parse(config: &Value) -> Result<HttpConfig, String> {
        let c: HttpConfig = serde_json::from_value(config.clone())
            .map_err(|e| format!("HTTP source settings: {e}"))?;
        let url = url::Url::parse(&c.url).map_err(|e| format!("url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("url must be an http:// or https:// URL".into());
        }
        if let Some(pem) = &c.ca_pem {
            crate::tls::parse_ca_pem(pem.as_bytes()).map_err(|e| format!("ca_pem: {e}"))?;
        }
        if !c.items_pointer.is_empty() && !c.items_pointer.starts_with('/') {
            return Err("items_pointer must be empty or start with / (RFC 6901)".into());
        }
        for (k, v) in &c.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                return Err(format!("header {k:?} is not a valid HTTP header"));
            }
        }
        if !(1..=1024 * 1024 * 1024).contains(&c.max_bytes) {
            return Err("max_bytes must be 1 to 1073741824".into());
        }
        if !(1..=3600).contains(&c.timeout_secs) {
            return Err("timeout_secs must be 1 to 3600".into());
        }
        c.fields.check()?;
        Ok(c)
    }
}

/// What the last answer said about its version, sent back on the next run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

pub fn check_config(config: &Value) -> Result<(), String> {
    HttpConfig::parse(config).map(|_| ())
}

pub async fn run_once(
    app: &App,
    ctx: &SourceCtx,
    stop: CancellationToken,
) -> anyhow::Result<PullOutcome> {
    tokio::select! {
        r = run(app, ctx) => r,
        _ = stop.cancelled() => anyhow::bail!("the run was stopped before the end (shutdown or lease lost)"),
    }
}

async fn run(app: &App, ctx: &SourceCtx) -> anyhow::Result<PullOutcome> {
    let cfg = HttpConfig::parse(&ctx.config).map_err(anyhow::Error::msg)?;
    let cursor: Cursor = ctx
        .cursor
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    let tls = crate::tls::client_config(cfg.ca_pem.as_deref().map(str::as_bytes))?;
    let client = crate::tls::http_client_builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(cfg.timeout_secs))
        .connect_timeout(Duration::from_secs(cfg.timeout_secs.min(30)))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()?;
    let polled_at = app.now();
    let mut req = client.get(&cfg.url).header("accept", "application/json");
    for (k, v) in &cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(etag) = &cursor.etag {
        req = req.header("if-none-match", etag.as_str());
    }
    if let Some(lm) = &cursor.last_modified {
        req = req.header("if-modified-since", lm.as_str());
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("GET {} failed", cfg.url)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(PullOutcome {
            delivered: Default::default(),
            cursor: ctx.cursor.clone(),
        });
    }
    if !status.is_success() {
        anyhow::bail!("GET {} answered {status}", cfg.url);
    }
    if resp.content_length().is_some_and(|n| n > cfg.max_bytes) {
        anyhow::bail!(
            "the answer is {} bytes, over max_bytes ({})",
            resp.content_length().unwrap_or_default(),
            cfg.max_bytes
        );
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let next = Cursor {
        etag: header("etag"),
        last_modified: header("last-modified"),
    };
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if (body.len() + chunk.len()) as u64 > cfg.max_bytes {
            anyhow::bail!("the answer is over max_bytes ({})", cfg.max_bytes);
        }
        body.extend_from_slice(&chunk);
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("the answer is not JSON: {e}"))?;
    drop(body);
    let Some(Value::Array(items)) = doc.pointer(&cfg.items_pointer) else {
        anyhow::bail!(
            "the answer has no array at items_pointer {:?}",
            cfg.items_pointer
        );
    };
    let mut rec = Reconciler::new(app, ctx);
    for item in items {
        let (parsed, raw) = match item {
            Value::Object(m) => {
                let field =
                    |name: Option<&String>| name.and_then(|n| m.get(n)).map(Cell::from_json);
                let f = &cfg.fields;
                let parsed = poll::parse_record(
                    f,
                    field(Some(&f.sku)).as_ref(),
                    field(Some(&f.available)).as_ref(),
                    field(f.location.as_ref()).as_ref(),
                    field(f.updated_at.as_ref()).as_ref(),
                    polled_at,
                );
                let raw: BTreeMap<String, Value> =
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (parsed, raw)
            }
            other => (
                Err((
                    crate::error_code::ErrorCode::InvalidItem,
                    "the item is not a JSON object".to_string(),
                )),
                BTreeMap::from([("item".to_string(), other.clone())]),
            ),
        };
        rec.push(parsed, || raw).await?;
    }
    rec.flush().await?;
    Ok(PullOutcome {
        delivered: rec.delivered.clone(),
        cursor: Some(serde_json::to_string(&next)?),
    })
}

pub fn reparse(
    config: &Value,
    payload: &str,
    received_at: i64,
) -> Result<Vec<restock_core::stock::StockUpdate>, (String, String)> {
    let cfg = HttpConfig::parse(config).map_err(|e| ("invalid_value".to_string(), e))?;
    poll::reparse_record(&cfg.fields, payload, received_at)
}
