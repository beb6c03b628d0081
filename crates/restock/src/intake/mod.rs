//! Intake: each source's payload becomes the canonical `StockUpdate` in one function
//! per source, and every source hands it to [`apply`]. What cannot be parsed is kept
//! as a rejection with its reason.

pub mod api;
pub mod csv;
pub mod jetstream;
pub mod orders;
pub mod poll;
pub mod poll_http;
pub mod poll_sql;
pub mod runner;
pub mod shopify;
pub mod shopify_products;
pub mod signature;
pub mod source;
pub mod stream_message;
pub mod websocket;
pub mod woocommerce;

use restock_core::ids::StoreId;
use restock_core::stock::StockUpdate;

use crate::app::App;

/// The largest quantity (available or incoming) accepted from any source. Far above
/// any real stock level, and low enough that summing one variant's levels over any
/// number of locations stays far from overflow. Larger values are rejected per
/// item with `invalid_quantity` and kept for replay.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
use crate::storage::intake_log::NewLogEntry;
use crate::storage::rejections::NewRejection;
use crate::storage::stock::BatchOutcome;

/// What a source delivered, as it arrived, for the intake log.
#[derive(Debug, Clone)]
pub struct Received {
    /// `json`, `csv`, `messages` or `rows` (see [`crate::storage::intake_log`]).
    pub format: &'static str,
    pub payload: String,
    /// Where the source stood after it (a sequence, a delivery id, …).
    pub cursor: Option<String>,
}

/// A stock delivery's outcome, as the intake log keeps it.
pub fn stock_outcome(out: &BatchOutcome) -> serde_json::Value {
    serde_json::json!({
        "applied": out.applied,
        "stale": out.stale,
        "rejected": out.rejection_ids.len(),
        "restocks": out.restocks.len(),
    })
}

/// Logs a delivery in the intake log (unless `intake.log_max_bytes` is 0). The
/// delivery was applied already: a failure to log it is reported, not returned.
pub async fn log_delivery(
    app: &App,
    store: StoreId,
    source: &str,
    received: &Received,
    outcome: serde_json::Value,
) {
    let max = app.config.intake.log_max_bytes;
    if max == 0 {
        return;
    }
    let entry = NewLogEntry {
        store,
        source,
        received_at: app.now(),
        format: received.format,
        cursor: received.cursor.as_deref(),
        payload: &received.payload,
        outcome,
    };
    if let Err(e) = app.db.log_intake(&entry, max).await {
        tracing::warn!(source, error = %e, "cannot log a delivery in the intake log");
    }
}

/// Applies parsed updates from `source` (and keeps the unparseable ones) under the
/// profile the store set for that source, records the delivery on a built-in
/// source's health, then wakes planning if anything restocked.
pub async fn apply(
    app: &App,
    store: StoreId,
    source: &str,
    updates: &[StockUpdate],
    rejected: &[NewRejection],
) -> Result<BatchOutcome, crate::storage::StorageError> {
    let profile = source::profile_of(app, store, source).await;
    let out = apply_with(
        app,
        store,
        source,
        &profile,
        updates.to_vec(),
        rejected.to_vec(),
    )
    .await?;
    if source::Kind::parse(source).is_some_and(|k| !k.is_configured()) {
        let newest = updates.iter().map(|u| u.version.observed_at_ms).max();
        app.db
            .record_push(
                store,
                source,
                out.applied as i64,
                out.rejection_ids.len() as i64,
                newest,
                app.now(),
            )
            .await?;
    }
    Ok(out)
}

/// [`apply`] with the profile given: the quantity and duplicate rules first, then
/// placeholders for unknown SKUs if the profile asks, then the stock batch.
pub async fn apply_with(
    app: &App,
    store: StoreId,
    source: &str,
    profile: &source::Profile,
    updates: Vec<StockUpdate>,
    mut rejected: Vec<NewRejection>,
) -> Result<BatchOutcome, crate::storage::StorageError> {
    let screened = profile.screen(store, source, updates);
    let updates = screened.kept;
    let parse_failures = rejected.len();
    rejected.extend(screened.refused.iter().map(|(_, r)| r.clone()));
    if profile.unknown_sku == source::UnknownSku::Placeholder {
        app.db
            .ensure_placeholders(store, &updates, app.now())
            .await?;
    }
    let mut out = {
        let _turn = app.write_turns.take().await;
        app.db
            .apply_stock_batch(store, source, &updates, &rejected, app.now())
            .await?
    };
    // Positions in what the caller passed, not in what the profile let through.
    for i in &mut out.unknown_sku {
        *i = screened.kept_at[*i];
    }
    let refused_ids = out
        .rejection_ids
        .iter()
        .skip(out.unknown_sku.len() + parse_failures)
        .copied();
    out.refused = screened
        .refused
        .into_iter()
        .zip(refused_ids)
        .map(|((i, r), id)| (i, r, id))
        .collect();
    for r in &rejected {
        app.metrics
            .intake_rejects
            .with_label_values(&[source, &r.reason_code])
            .inc();
    }
    if !out.unknown_sku.is_empty() {
        app.metrics
            .intake_rejects
            .with_label_values(&[source, "unknown_sku"])
            .inc_by(out.unknown_sku.len() as u64);
    }
    for r in &out.restocks {
        app.events.emit(
            "restock.detected",
            Some(store),
            serde_json::json!({
                "restock_id": r.event_id.0,
                "variant_id": r.variant_id.0,
                "sku": r.sku,
                "market": r.market,
                "quantity": r.quantity,
                "source": source,
                "detected_at": app.now(),
            }),
        );
    }
    if !out.restocks.is_empty() {
        app.metrics
            .restocks
            .with_label_values(&[source])
            .inc_by(out.restocks.len() as u64);
        app.plan_ready.notify_one();
    }
    Ok(out)
}
