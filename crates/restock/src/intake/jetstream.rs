//! NATS JetStream source: a durable pull consumer on the merchant's stream.
//!
//! Every instance runs it (no lease) on the same durable consumer, so the server
//! hands each message to one instance: the instances share the work the way a queue
//! group does, and a pull consumer needs no deliver subject. Messages that are ready
//! together are applied together, in chunks of up to `batch`; each is acknowledged
//! only after its chunk's transaction committed. What an instance received but did
//! not acknowledge (it died, or the apply failed and it sent a nak) is redelivered,
//! and the stock versions make an update applied before stale: a message's observed
//! time is its `updated_at`, or else the time JetStream stored it, the same on every
//! delivery.
//!
//! A message that cannot be parsed is a dead letter and is acknowledged. A message
//! delivered `max_deliver` times (earlier deliveries failed, or stalled past
//! `ack_wait`) is not tried again: it becomes a dead letter (`max_deliver`) and is
//! terminated, so one poison message cannot hold the consumer in a loop; replaying
//! the dead letter applies it. The server's own limit is off, so no message is
//! dropped by the server without a dead letter.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::runner::{Delivered, SourceCtx};
use super::stream_message::{Fields, parse};
use crate::app::App;

/// A JetStream source's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://host:4222` (credentials may be in the URL, `nats://user:pass@host`).
    pub url: String,
    /// A token, for servers that authenticate with one.
    #[serde(default)]
    pub token: Option<String>,
    pub stream: String,
    /// Only messages on subjects matching this filter (`inventory.>`); all if unset.
    #[serde(default)]
    pub subject: Option<String>,
    /// The durable consumer every instance shares.
    #[serde(default = "default_durable")]
    pub durable: String,
    #[serde(default)]
    pub fields: Fields,
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
    #[serde(default = "default_ack_wait")]
    pub ack_wait_secs: u64,
    /// The most messages applied in one transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_durable() -> String {
    "restock".into()
}
fn default_max_deliver() -> i64 {
    10
}
fn default_ack_wait() -> u64 {
    30
}
fn default_batch() -> usize {
    500
}

impl Config {
    pub fn parse(config: &serde_json::Value) -> Result<Config, String> {
        let c: Config =
            serde_json::from_value(config.clone()).map_err(|e| format!("jetstream config: {e}"))?;
        let url = url::Url::parse(&c.url).map_err(|e| format!("url: {e}"))?;
        if !["nats", "tls"].contains(&url.scheme()) {
            return Err("url must be nats://… or tls://…".into());
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        };
        if !name_ok(&c.stream) {
            return Err("stream must be letters, digits, '-' or '_'".into());
        }
        if !name_ok(&c.durable) {
            return Err("durable must be letters, digits, '-' or '_'".into());
        }
        if c.subject
            .as_deref()
            .is_some_and(|s| s.is_empty() || s.chars().any(char::is_whitespace))
        {
            return Err("subject must be a subject filter without spaces".into());
        }
        if !(1..=1000).contains(&c.max_deliver) {
            return Err("max_deliver must be 1 to 1000".into());
        }
        if !(1..=3600).contains(&c.ack_wait_secs) {
            return Err("ack_wait_secs must be 1 to 3600".into());
        }
        if !(1..=10_000).contains(&c.batch) {
            return Err("batch must be 1 to 10000".into());
        }
        Ok(c)
    }
}

pub fn check_config(config: &serde_json::Value) -> Result<(), String> {
    Config::parse(config).map(|_| ())
}

/// Connects to the server and binds the durable consumer (creating it the first
/// time, as a pull consumer with explicit acks).
pub async fn consumer(c: &Config) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let mut opts = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    if let Some(token) = &c.token {
        opts = opts.token(token.clone());
    }
    let client = opts
        .connect(c.url.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("connecting to NATS: {e}"))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&c.stream)
        .await
        .map_err(|e| anyhow::anyhow!("JetStream stream {:?}: {e}", c.stream))?;
    let consumer = stream
        .get_or_create_consumer(
            &c.durable,
            pull::Config {
                durable_name: Some(c.durable.clone()),
                filter_subject: c.subject.clone().unwrap_or_default(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(c.ack_wait_secs),
                // Restock counts deliveries itself and keeps the message as a dead
                // letter; the server's limit would drop it silently.
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("JetStream consumer {:?}: {e}", c.durable))?;
    Ok(consumer)
}

/// Consumes until `stop`; an error (connection lost, apply failed) ends the session
/// so the runner backs off and starts another.
pub async fn run(app: &App, ctx: &SourceCtx, stop: CancellationToken) -> anyhow::Result<()> {
    let c = Config::parse(&ctx.config).map_err(|e| anyhow::anyhow!(e))?;
    let consumer = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = consumer(&c) => r?,
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(c.batch)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("JetStream pull: {e}"))?;
    let mut chunks = messages.ready_chunks(c.batch);
    tracing::info!(source = %ctx.name, stream = %c.stream, durable = %c.durable, "JetStream consumer bound");
    loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            anyhow::bail!("JetStream message stream ended");
        };
        let mut ready = Vec::with_capacity(chunk.len());
        let mut failed = None;
        for m in chunk {
            match m {
                Ok(m) => ready.push(m),
                Err(e) => failed = Some(e),
            }
        }
        apply_chunk(app, ctx, &c, ready).await?;
        if let Some(e) = failed {
            anyhow::bail!("JetStream pull: {e}");
        }
    }
}

/// Applies one chunk: first deliveries together in one transaction, redeliveries one
/// at a time (one of them may be what failed the chunk before), each acknowledged
/// after its commit.
async fn apply_chunk(
    app: &App,
    ctx: &SourceCtx,
    c: &Config,
    chunk: Vec<jetstream::Message>,
) -> anyhow::Result<()> {
    let (first, again): (Vec<_>, Vec<_>) = chunk
        .into_iter()
        .partition(|m| m.info().map(|i| i.delivered <= 1).unwrap_or(true));
    if !again.is_empty() {
        app.metrics
            .source_items
            .with_label_values(&[ctx.kind.as_str(), "redelivered"])
            .inc_by(again.len() as u64);
    }
    if !first.is_empty() {
        apply_group(app, ctx, c, first).await?;
    }
    for m in again {
        apply_group(app, ctx, c, vec![m]).await?;
    }
    Ok(())
}

async fn apply_group(
    app: &App,
    ctx: &SourceCtx,
    c: &Config,
    group: Vec<jetstream::Message>,
) -> anyhow::Result<()> {
    let mut updates = Vec::new();
    let mut rejected = Vec::new();
    let mut terminate = Vec::new();
    let mut ack = Vec::new();
    let mut texts = Vec::with_capacity(group.len());
    let mut last_sequence = None;
    for m in group {
        let payload = String::from_utf8_lossy(&m.payload).into_owned();
        texts.push(payload.clone());
        let (delivered, published_ms) = match m.info() {
            Ok(i) => {
                last_sequence = last_sequence.max(Some(i.stream_sequence));
                (
                    i.delivered,
                    (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
                )
            }
            Err(_) => (1, app.now()),
        };
        if delivered >= c.max_deliver && delivered > 1 {
            rejected.push(ctx.rejection(
                "max_deliver",
                format!(
                    "delivered {delivered} times (max_deliver {}) without being applied",
                    c.max_deliver
                ),
                payload,
            ));
            terminate.push(m);
            continue;
        }
        match parse(&c.fields, &payload, published_ms) {
            Ok(parsed) => updates.extend(parsed.into_iter().map(|p| p.update)),
            Err((code, reason)) => rejected.push(ctx.rejection(&code, reason, payload)),
        }
        ack.push(m);
    }
    let mut d = Delivered::default();
    let received = super::Received {
        format: "messages",
        payload: serde_json::to_string(&texts).unwrap_or_default(),
        cursor: last_sequence.map(|s| s.to_string()),
    };
    if let Err(e) = ctx.deliver(app, updates, rejected, received, &mut d).await {
        for m in ack.iter().chain(terminate.iter()) {
            let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
        return Err(anyhow::Error::new(e).context("applying JetStream messages"));
    }
    for m in &ack {
        if let Err(e) = m.ack().await {
            tracing::warn!(source = %ctx.name, error = %e, "JetStream ack failed; the message will be redelivered and found stale");
        }
    }
    for m in &terminate {
        if let Err(e) = m.ack_with(AckKind::Term).await {
            tracing::warn!(source = %ctx.name, error = %e, "JetStream term failed");
        }
    }
    if let Err(e) = ctx.record(app, &d, None).await {
        tracing::warn!(source = %ctx.name, error = %format!("{e:#}"), "cannot record the source's progress");
    }
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
