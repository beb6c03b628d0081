//! What a poller compares its rows with: the store's current levels for a set of
//! SKUs, which of them the catalog knows, and which already wait as parked dead
//! letters from the same source (so an unknown SKU is not dead-lettered again on
//! every run while it waits for the catalog).

use std::collections::{HashMap, HashSet};

use restock_core::ids::StoreId;

use super::{Db, Result};

/// SKU, and its location and available quantity when it has a level.
type LevelRow = (String, Option<String>, Option<i64>);

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
        // One read for the catalog and its levels (a known SKU with no level comes back
        // with no location), one for the parked SKUs. On PostgreSQL the SKUs are joined
        // as an unnested array: `= ANY($2)` lets a cached generic plan compare every
        // variant of the store with the whole chunk.
        let (rows, parked): (Vec<LevelRow>, Vec<String>) = match self {
            Db::Sqlite(pool) => {
                let list = serde_json::to_string(skus).unwrap_or_default();
                let rows = sqlx::query_as(
                    "SELECT v.sku, l.location, l.available FROM json_each($2) s \
                     JOIN variants v ON v.store_id = $1 AND v.sku = s.value \
                     LEFT JOIN stock_levels l ON l.variant_id = v.id",
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
                (rows, parked)
            }
            Db::Postgres(pool) => {
                let rows = sqlx::query_as(
                    "SELECT v.sku, l.location, l.available FROM unnest($2::text[]) AS s(sku) \
                     JOIN variants v ON v.store_id = $1 AND v.sku = s.sku \
                     LEFT JOIN stock_levels l ON l.variant_id = v.id",
                )
                .bind(store.0)
                .bind(skus)
                .fetch_all(pool)
                .await?;
                let parked = sqlx::query_scalar(
                        "SELECT DISTINCT rs.sku FROM unnest($2::text[]) AS s(sku) \
                         JOIN rejection_skus rs ON rs.store_id = $1 AND rs.sku = s.sku \
                         JOIN rejections r ON r.id = rs.rejection_id \
                         WHERE r.source = $3 AND r.reason_code = 'unknown_sku' AND r.replayed_at IS NULL",
                    )
                    .bind(store.0)
                    .bind(skus)
                    .bind(source)
                    .fetch_all(pool)
                    .await?;
                (rows, parked)
            }
        };
        for (sku, location, available) in rows {
            if let (Some(location), Some(available)) = (location, available) {
                snap.levels.insert((sku.clone(), location), available);
            }
            snap.known.insert(sku);
        }
        snap.parked = parked.into_iter().collect();
        Ok(snap)
    }
}
