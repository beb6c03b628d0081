//! Intake: each source's payload becomes the canonical `StockUpdate` in one function
//! per source, and every source hands it to [`apply`]. What cannot be parsed is kept
//! as a rejection with its reason.

pub mod api;
pub mod orders;
pub mod shopify;
pub mod shopify_products;
pub mod signature;
pub mod woocommerce;

use restock_core::ids::StoreId;
use restock_core::stock::StockUpdate;

use crate::app::App;

/// The largest quantity (available or incoming) accepted from any source. Far above
/// any real stock level, and low enough that summing one variant's levels over any
/// number of locations stays far from overflow. Larger values are rejected per
/// item with `invalid_quantity` and kept for replay.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
use crate::storage::rejections::NewRejection;
use crate::storage::stock::BatchOutcome;

/// Applies parsed updates (and keeps the unparseable ones), then wakes dispatch if
/// anything was planned.
pub async fn apply(
    app: &App,
    store: StoreId,
    source: &str,
    updates: &[StockUpdate],
    rejected: &[NewRejection],
) -> Result<BatchOutcome, crate::storage::StorageError> {
    let out = app
        .db
        .apply_stock_batch(store, source, updates, rejected, app.now())
        .await?;
    for r in rejected {
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
    if !out.restocks.is_empty() {
        app.metrics
            .restocks
            .with_label_values(&[source])
            .inc_by(out.restocks.len() as u64);
    }
    if !out.restocks.is_empty() {
        app.plan_ready.notify_one();
    }
    Ok(out)
}
