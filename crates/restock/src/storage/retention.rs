//! Bounded growth: finished notifications (done, failed, skipped) and tracking
//! events older than their store's `retention_days` are deleted in small batches,
//! and handled webhook delivery ids after seven days. Dead notifications stay until
//! replayed or handled: they are the operator's to-do list.
//!
//! Every statement reads through an index on age (migration 0003), so a purge costs
//! what it deletes, not what is kept.

use restock_core::ids::StoreId;

use super::{Db, Dialect, Result, with_pool};

const DAY_MS: i64 = 86_400_000;
/// How long handled webhook delivery ids are remembered (Shopify retries for 48 h).
pub const WEBHOOK_ID_RETENTION_MS: i64 = 7 * DAY_MS;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub notifications: u64,
    pub tracking_events: u64,
    pub webhook_deliveries: u64,
}

/// `IN (1, 2, 3)` for integer ids (numbers only, so safe to inline).
fn id_list(ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("({})", list.join(", "))
}

impl Db {
    /// Purges what every store's retention allows, at most `batch` rows per
    /// statement, until nothing is left to purge. Returns what was deleted.
    pub async fn purge_expired(&self, now: i64, batch: i64) -> Result<Purged> {
        let mut total = Purged::default();
        let stores: Vec<(i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT id, retention_days FROM stores ORDER BY id")
                .fetch_all(pool)
                .await?
        });
        for (store, days) in stores {
            let cutoff = now - days.max(1) * DAY_MS;
            loop {
                let p = self
                    .purge_store_batch(StoreId(store), cutoff, batch)
                    .await?;
                total.notifications += p.notifications;
                total.tracking_events += p.tracking_events;
                if p.notifications < batch as u64 && p.tracking_events < batch as u64 {
                    break;
                }
            }
        }
        loop {
            let n = with_pool!(self, pool => {
                sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE (store_id, source, delivery_id) IN \
                     (SELECT store_id, source, delivery_id FROM webhook_deliveries WHERE received_at < $1 LIMIT $2)",
                )
                .bind(now - WEBHOOK_ID_RETENTION_MS)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
            });
            total.webhook_deliveries += n;
            if n < batch as u64 {
                break;
            }
        }
        Ok(total)
    }

    async fn purge_store_batch(&self, store: StoreId, cutoff: i64, batch: i64) -> Result<Purged> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM notifications WHERE state IN ('done', 'failed', 'skipped') \
                 AND updated_at < $1 AND store_id = $2 LIMIT $3",
            )
            .bind(cutoff)
            .bind(store.0)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
            let mut out = Purged::default();
            if !ids.is_empty() {
                let list = id_list(&ids);
                out.tracking_events += sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM tracking_events WHERE notification_id IN {list}"
                )))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                out.notifications = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM notifications WHERE id IN {list}"
                )))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            // Old events of notifications that are kept (dead ones, say).
            out.tracking_events += sqlx::query(
                "DELETE FROM tracking_events WHERE id IN \
                 (SELECT id FROM tracking_events WHERE at < $1 AND store_id = $2 LIMIT $3)",
            )
            .bind(cutoff)
            .bind(store.0)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Live queue depth for metrics: pending, running and dead, each counted through
    /// its partial index, so a scrape costs the same however much history is kept.
    pub async fn live_queue_depth(&self) -> Result<[(&'static str, i64); 3]> {
        with_pool!(self, pool => {
            let mut out = [("pending", 0), ("running", 0), ("dead", 0)];
            for (state, n) in out.iter_mut() {
                // A constant per state, so each statement matches its partial index.
                let sql = match *state {
                    "pending" => "SELECT COUNT(*) FROM notifications WHERE state = 'pending'",
                    "running" => "SELECT COUNT(*) FROM notifications WHERE state = 'running'",
                    _ => "SELECT COUNT(*) FROM notifications WHERE state = 'dead'",
                };
                *n = sqlx::query_scalar(sql).fetch_one(pool).await?;
            }
            Ok(out)
        })
    }
}
