//! Outbound events: what Restock tells the merchant's other systems (and further
//! Restock instances) about — `restock.detected`, `notification.sent`,
//! `source.stale`, … Each is logged; when a publisher is connected (JetStream, see
//! `intake::jetstream`), it is handed to it too.

use std::sync::OnceLock;

use restock_core::ids::StoreId;
use serde::Serialize;
use tokio::sync::mpsc;

/// One event, as published.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundEvent {
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
}

impl Events {
    /// Connects a publisher; events emitted from now on are handed to it.
    pub fn connect(&self, tx: mpsc::Sender<OutboundEvent>) -> bool {
        self.publisher.set(tx).is_ok()
    }

    pub fn emit(&self, event: &str, store: Option<StoreId>, data: serde_json::Value) {
        let e = OutboundEvent {
            event: event.to_string(),
            store_id: store.map(|s| s.0),
            at: chrono::Utc::now().timestamp_millis(),
            data,
        };
        tracing::info!(target: "restock::events", event = %e.event, store = ?e.store_id, data = %e.data, "event");
        if let Some(tx) = self.publisher.get()
            && let Err(err) = tx.try_send(e)
        {
            tracing::warn!(error = %err, "event publisher is behind; event not published");
        }
    }
}
