//! Outbound events: what Restock tells the merchant's other systems (and further
//! Restock instances) about — `restock.detected`, `notification.sent`,
//! `source.stale`, … Each is logged at debug level (`source.stale` is also a warning
//! where it is raised); when a publisher is connected (JetStream, see
//! [`start_jetstream`]), it is handed to it too.
//!
//! Publishing never slows or fails the main path: events wait in a bounded buffer,
//! and when it is full (NATS down or slow) they are dropped, logged and counted.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::IntCounterVec;
use restock_core::ids::StoreId;
use secrecy::ExposeSecret;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::EventsConfig;

/// One event, as published.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundEvent {
    /// Unique per event, and sent as `Nats-Msg-Id`: a publish retried after a lost
    /// acknowledgement is stored once (within the stream's duplicate window), and a
    /// consumer can tell a repeat by it.
    pub id: String,
    /// The event's name, e.g. `source.stale`.
    pub event: String,
    pub store_id: Option<i64>,
    /// When it happened (unix ms).
    pub at: i64,
    pub data: serde_json::Value,
}

#[derive(Default)]
pub struct Events {
    publisher: OnceLock<mpsc::Sender<OutboundEvent>>,
    /// `restock_outbound_events_total` by outcome, once the app's metrics are attached.
    counter: OnceLock<IntCounterVec>,
}

impl Events {
    /// Connects a publisher; events emitted from now on are handed to it.
    pub fn connect(&self, tx: mpsc::Sender<OutboundEvent>) -> bool {
        self.publisher.set(tx).is_ok()
    }

    /// Counts events by outcome (`dropped` here; the publisher counts the rest).
    pub fn count_with(&self, counter: IntCounterVec) {
        let _ = self.counter.set(counter);
    }

    fn count(&self, outcome: &str) {
        if let Some(c) = self.counter.get() {
            c.with_label_values(&[outcome]).inc();
        }
    }

    pub fn emit(&self, event: &str, store: Option<StoreId>, data: serde_json::Value) {
        let e = OutboundEvent {
            id: crate::util::random_token(16),
            event: event.to_string(),
            store_id: store.map(|s| s.0),
            at: chrono::Utc::now().timestamp_millis(),
            data,
        };
        // One a restock and one a send: at debug, or a large restock floods the log.
        tracing::debug!(target: "restock::events", event = %e.event, store = ?e.store_id, data = %e.data, "event");
        if let Some(tx) = self.publisher.get()
            && let Err(err) = tx.try_send(e)
        {
            self.count("dropped");
            tracing::warn!(error = %err, "event publisher is behind; event not published");
        }
    }
}

/// Connects the app's events to JetStream when `events.jetstream_url` is set: a
/// task publishes them in order, each confirmed by the server, retrying while NATS
/// is unreachable (the buffer holds what arrives meanwhile). Returns the task.
pub fn start_jetstream(
    app: &crate::App,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let config = app.config.events.clone();
    if config.jetstream_url.expose_secret().is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::channel(config.buffer.max(1));
    if !app.events.connect(tx) {
        tracing::warn!("an event publisher is already connected; JetStream events are off");
        return None;
    }
    let counter = app.metrics.events.clone();
    Some(tokio::spawn(publish_loop(config, counter, rx, stop)))
}

async fn connect(config: &EventsConfig) -> anyhow::Result<async_nats::jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.jetstream_url.expose_secret())
        .await?;
    let js = async_nats::jetstream::new(client);
    if config.create_stream {
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            ..Default::default()
        })
        .await?;
    }
    Ok(js)
}

async fn publish_loop(
    config: EventsConfig,
    counter: IntCounterVec,
    mut rx: mpsc::Receiver<OutboundEvent>,
    stop: CancellationToken,
) {
    let mut js = None;
    let mut pending: Option<OutboundEvent> = None;
    let mut delay = Duration::from_millis(200);
    loop {
        let event = match pending.take() {
            Some(e) => e,
            None => tokio::select! {
                _ = stop.cancelled() => return,
                e = rx.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            },
        };
        if js.is_none() {
            match connect(&config).await {
                Ok(c) => {
                    js = Some(c);
                    delay = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot reach JetStream for events; retrying");
                    counter.with_label_values(&["failed"]).inc();
                    pending = Some(event);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        let Some(ctx) = &js else { continue };
        let subject = format!("{}.{}", config.subject_prefix, event.event);
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.as_str());
        let sent = match ctx
            .publish_with_headers(subject, headers, body.into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(anyhow::Error::new),
            Err(e) => Err(anyhow::Error::new(e)),
        };
        match sent {
            Ok(()) => counter.with_label_values(&["published"]).inc(),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), event = %event.event, "publishing an event failed; retrying");
                counter.with_label_values(&["failed"]).inc();
                js = None;
                pending = Some(event);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
