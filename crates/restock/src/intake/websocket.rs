//! WebSocket source: a client of the merchant's stock stream. One instance runs it
//! (the runner's lease). Each message is JSON holding one update or an array of them
//! (see `stream_message`), each with the stream's sequence number.
//!
//! Resume: the source's cursor is the last sequence applied. On (re)connecting the
//! client asks for what follows it (`?since=SEQ`, the parameter named by
//! `resume_param`), and it skips any message at or below it, so a server that
//! replays from an earlier point applies nothing twice.
//!
//! Heartbeats: a ping every `ping_interval_ms`; if nothing at all is heard within
//! `pong_timeout_ms` of a ping, the connection is taken as dead and the session
//! ends with an error, so the runner reconnects after its backoff (with jitter).
//!
//! Messages that arrive together are applied together, in chunks of up to `batch`.
//! A message that cannot be read is a dead letter with its reason code.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::runner::{Delivered, SourceCtx};
use super::stream_message::{Fields, parse};
use crate::app::App;

/// A WebSocket source's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `wss://…` (or `ws://…`).
    pub url: String,
    /// Headers sent with the handshake, e.g. `Authorization` (kept sealed, shown
    /// masked).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub fields: Fields,
    /// The query parameter that carries the last sequence applied when
    /// reconnecting; `null`: none is sent (messages already applied are still
    /// skipped).
    #[serde(default = "default_resume_param")]
    pub resume_param: Option<String>,
    #[serde(default = "default_ping")]
    pub ping_interval_ms: u64,
    #[serde(default = "default_pong")]
    pub pong_timeout_ms: u64,
    /// The most updates applied in one transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_resume_param() -> Option<String> {
    Some("since".into())
}
fn default_ping() -> u64 {
    20_000
}
fn default_pong() -> u64 {
    10_000
}
fn default_batch() -> usize {
    500
}

impl Config {
    pub fn parse(config: &serde_json::Value) -> Result<Config, String> {
        let c: Config =
            serde_json::from_value(config.clone()).map_err(|e| format!("websocket config: {e}"))?;
        let url = url::Url::parse(&c.url).map_err(|e| format!("url: {e}"))?;
        if !["ws", "wss"].contains(&url.scheme()) {
            return Err("url must be ws://… or wss://…".into());
        }
        for (name, value) in &c.headers {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a header name"))?;
            HeaderValue::from_str(value)
                .map_err(|_| format!("headers: the value of {name:?} is not a header value"))?;
        }
        if c.resume_param.as_deref().is_some_and(str::is_empty) {
            return Err("resume_param must not be empty (null to send none)".into());
        }
        if !(100..=3_600_000).contains(&c.ping_interval_ms) {
            return Err("ping_interval_ms must be 100 to 3600000".into());
        }
        if !(100..=3_600_000).contains(&c.pong_timeout_ms) {
            return Err("pong_timeout_ms must be 100 to 3600000".into());
        }
        if !(1..=10_000).contains(&c.batch) {
            return Err("batch must be 1 to 10000".into());
        }
        if c.fields.sequence.is_none() {
            return Err("fields.sequence is required: a stream resumes from its sequence".into());
        }
        Ok(c)
    }

    /// The URL to connect to, asking for what follows `since`.
    fn url_after(&self, since: Option<i64>) -> Result<url::Url, url::ParseError> {
        let mut url = url::Url::parse(&self.url)?;
        if let (Some(param), Some(seq)) = (&self.resume_param, since) {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != param)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair(param, &seq.to_string());
        }
        Ok(url)
    }
}

pub fn check_config(config: &serde_json::Value) -> Result<(), String> {
    Config::parse(config).map(|_| ())
}

/// Runs one connection until `stop`; a lost connection, a missed heartbeat or a
/// failed apply ends it with an error so the runner reconnects after a backoff.
pub async fn run(app: &App, ctx: &SourceCtx, stop: CancellationToken) -> anyhow::Result<()> {
    let c = Config::parse(&ctx.config).map_err(|e| anyhow::anyhow!(e))?;
    // The last sequence applied: where the source resumes.
    let mut last_seq: Option<i64> = ctx.cursor.as_deref().and_then(|s| s.parse().ok());
    let mut request = c.url_after(last_seq)?.as_str().into_client_request()?;
    for (name, value) in &c.headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    let connect = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    );
    let (mut ws, _) = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = connect => r
            .map_err(|_| anyhow::anyhow!("WebSocket connect timed out"))?
            .map_err(|e| anyhow::anyhow!("WebSocket connect: {e}"))?,
    };
    tracing::info!(source = %ctx.name, since = ?last_seq, "WebSocket connected");
    let ping_every = Duration::from_millis(c.ping_interval_ms);
    let pong_timeout = Duration::from_millis(c.pong_timeout_ms);
    let mut next_ping = Instant::now() + ping_every;
    // Set when a ping goes out with nothing heard since; cleared by any frame.
    let mut awaiting: Option<Instant> = None;
    loop {
        let deadline = awaiting.map(|t| t + pong_timeout);
        let frame = tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            _ = tokio::time::sleep_until(next_ping) => {
                ws.send(Message::Ping(Default::default())).await
                    .map_err(|e| anyhow::anyhow!("WebSocket ping: {e}"))?;
                awaiting.get_or_insert_with(Instant::now);
                next_ping = Instant::now() + ping_every;
                continue;
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                anyhow::bail!("WebSocket: nothing heard within {} ms of a ping", c.pong_timeout_ms);
            }
            frame = ws.next() => frame,
        };
        awaiting = None;
        // This frame, then whatever else is already waiting, up to a chunk.
        let mut texts = Vec::new();
        let mut next = frame;
        loop {
            match next {
                None => anyhow::bail!("WebSocket closed by the server"),
                Some(Err(e)) => {
                    // Apply what arrived before the failure first.
                    deliver(app, ctx, &c, texts, &mut last_seq).await?;
                    anyhow::bail!("WebSocket: {e}");
                }
                Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_string()),
                Some(Ok(Message::Binary(b))) => {
                    texts.push(String::from_utf8_lossy(&b).into_owned())
                }
                Some(Ok(Message::Close(_))) => {
                    deliver(app, ctx, &c, texts, &mut last_seq).await?;
                    anyhow::bail!("WebSocket closed by the server");
                }
                Some(Ok(_)) => {}
            }
            if texts.len() >= c.batch {
                break;
            }
            match ws.next().now_or_never() {
                Some(f) => next = f,
                None => break,
            }
        }
        deliver(app, ctx, &c, texts, &mut last_seq).await?;
    }
}

/// Applies a chunk of messages, skipping those at or below `last_seq`, and records
/// the new cursor once the chunk committed.
async fn deliver(
    app: &App,
    ctx: &SourceCtx,
    c: &Config,
    texts: Vec<String>,
    last_seq: &mut Option<i64>,
) -> anyhow::Result<()> {
    if texts.is_empty() {
        return Ok(());
    }
    let now = app.now();
    let mut updates = Vec::new();
    let mut rejected = Vec::new();
    let mut newest = *last_seq;
    let mut skipped = 0u64;
    let payload = serde_json::to_string(&texts).unwrap_or_default();
    for text in texts {
        match parse(&c.fields, &text, now) {
            Ok(parsed) => {
                for p in parsed {
                    if let (Some(seq), Some(last)) = (p.sequence, *last_seq)
                        && seq <= last
                    {
                        skipped += 1;
                        continue;
                    }
                    newest = newest.max(p.sequence);
                    updates.push(p.update);
                }
            }
            Err((code, reason)) => rejected.push(ctx.rejection(&code, reason, text)),
        }
    }
    if skipped > 0 {
        tracing::debug!(source = %ctx.name, skipped, "skipped messages already applied");
        app.metrics
            .source_items
            .with_label_values(&[ctx.kind.as_str(), "skipped"])
            .inc_by(skipped);
    }
    let mut d = Delivered::default();
    let received = super::Received {
        format: "messages",
        payload,
        cursor: newest.map(|s| s.to_string()),
    };
    ctx.deliver(app, updates, rejected, received, &mut d)
        .await
        .map_err(|e| anyhow::Error::new(e).context("applying WebSocket messages"))?;
    *last_seq = newest;
    ctx.record(app, &d, newest.map(|s| s.to_string())).await?;
    Ok(())
}

pub fn reparse(
    config: &serde_json::Value,
    payload: &str,
    received_at: i64,
) -> Result<Vec<restock_core::stock::StockUpdate>, (String, String)> {
    let c = Config::parse(config).map_err(|e| ("invalid_config".to_string(), e))?;
    parse(&c.fields, payload, received_at).map(|v| v.into_iter().map(|p| p.update).collect())
}
