//! What a poller compares its rows with: the store's current levels for a set of
//! SKUs, which of them the catalog knows, and which already wait as parked dead
//! letters from the same source (so an unknown SKU is not dead-lettered again on
//! every run while it waits for the catalog).

use std::collections::{HashMap, HashSet};

use restock_core::ids::StoreId;

use super::{Db, Result};

/// SKU, location, available.
type LevelRow = (String, String, i64);

/// The store's side of one chunk of polled rows.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Available quantity by (SKU, location).
    pub levels: HashMap<(String, String), i64>,
    /// SKUs the catalog has.
    pub known: HashSet<String>,
    /// SKUs with an open `unknown_sku` dead letter from this source.
    pub parked: HashSet<String>,
}

impl Db {
    /// The store's levels, catalog and parked SKUs for `skus`, as seen by `source`.
    pub async fn reconcile_snapshot(
        &self,
        store: StoreId,
        source: &str,
        skus: &[&str],
    ) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let (known, levels, parked): (Vec<String>, Vec<LevelRow>, Vec<String>) = match self {
            Db::Sqlite(pool) => {
                let list = serde_json::to_string(skus).unwrap_or_default();
                let known = sqlx::query_scalar(
                        "SELECT sku FROM variants WHERE store_id = $1 AND sku IN (SELECT value FROM json_each($2))",
                    )
                    .bind(store.0)
                    .bind(&list)
                    .fetch_all(pool)
                    .await?;
                let levels = sqlx::query_as(
                    "SELECT v.sku, l.location, l.available FROM variants v \
                         JOIN stock_levels l ON l.variant_id = v.id \
                         WHERE v.store_id = $1 AND v.sku IN (SELECT value FROM json_each($2))",
                )
                .bind(store.0)
                .bind(&list)
                .fetch_all(pool)
                .await?;
                let parked = sqlx::query_scalar(
                        "SELECT DISTINCT rs.sku FROM rejection_skus rs JOIN rejections r ON r.id = rs.rejection_id \
                         WHERE rs.store_id = $1 AND rs.sku IN (SELECT value FROM json_each($2)) \
                           AND r.source = $3 AND r.reason_code = 'unknown_sku' AND r.replayed_at IS NULL",
                    )
                    .bind(store.0)
                    .bind(&list)
                    .bind(source)
                    .fetch_all(pool)
                    .await?;
                (known, levels, parked)
            }
            Db::Postgres(pool) => {
                let known = sqlx::query_scalar(
                    "SELECT sku FROM variants WHERE store_id = $1 AND sku = ANY($2::text[])",
                )
                .bind(store.0)
                .bind(skus)
                .fetch_all(pool)
                .await?;
                let levels = sqlx::query_as(
                    "SELECT v.sku, l.location, l.available FROM variants v \
                         JOIN stock_levels l ON l.variant_id = v.id \
                         WHERE v.store_id = $1 AND v.sku = ANY($2::text[])",
                )
                .bind(store.0)
                .bind(skus)
                .fetch_all(pool)
                .await?;
                let parked = sqlx::query_scalar(
                        "SELECT DISTINCT rs.sku FROM rejection_skus rs JOIN rejections r ON r.id = rs.rejection_id \
                         WHERE rs.store_id = $1 AND rs.sku = ANY($2::text[]) \
                           AND r.source = $3 AND r.reason_code = 'unknown_sku' AND r.replayed_at IS NULL",
                    )
                    .bind(store.0)
                    .bind(skus)
                    .bind(source)
                    .fetch_all(pool)
                    .await?;
                (known, levels, parked)
            }
        };
        snap.known = known.into_iter().collect();
        snap.levels = levels
            .into_iter()
            .map(|(sku, loc, available)| ((sku, loc), available))
            .collect();
        snap.parked = parked.into_iter().collect();
        Ok(snap)
    }
}
