//! The intake log: every delivery a source made, as it arrived — the raw payload,
//! its cursor and what became of it — kept for `retention.intake_log_hours`, so an
//! operator can see what a source actually sent when a level looks wrong.

use restock_core::ids::StoreId;

use super::{Db, Result, with_pool};

/// One delivery to log.
#[derive(Debug, Clone)]
pub struct NewLogEntry<'a> {
    pub store: StoreId,
    pub source: &'a str,
    pub received_at: i64,
    /// `json`, `csv`, `messages` or `rows` (see the migration).
    pub format: &'static str,
    pub cursor: Option<&'a str>,
    pub payload: &'a str,
    /// What became of it, as JSON.
    pub outcome: serde_json::Value,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct IntakeLogRow {
    pub id: i64,
    pub source: String,
    /// When it arrived (ms).
    pub received_at: i64,
    /// `json` (a document as received), `csv` (the lines of an import batch),
    /// `messages` (a stream's messages, a JSON array of their texts) or `rows` (a
    /// poller's records that differed from the store, a JSON array of their mapped
    /// fields).
    pub format: String,
    /// Where the source stood after this delivery (a sequence, a delivery id, …).
    pub cursor: Option<String>,
    pub payload: String,
    /// The payload's size as received, in bytes.
    pub bytes: i64,
    /// Only the first `intake.log_max_bytes` of the payload are kept.
    pub truncated: bool,
    /// What became of it: counts for stock, the answer for a webhook (JSON text).
    pub outcome: String,
}

impl Db {
    /// Logs a delivery, keeping at most `max_bytes` of its payload.
    pub async fn log_intake(&self, e: &NewLogEntry<'_>, max_bytes: usize) -> Result<()> {
        let kept = crate::util::prefix_within(e.payload, max_bytes);
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO intake_log (store_id, source, received_at, format, cursor, payload, bytes, truncated, outcome) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(e.store.0)
            .bind(e.source)
            .bind(e.received_at)
            .bind(e.format)
            .bind(e.cursor)
            .bind(kept)
            .bind(e.payload.len() as i64)
            .bind(kept.len() < e.payload.len())
            .bind(e.outcome.to_string())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A source's deliveries, newest first, before the entry `before` if given.
    pub async fn intake_log(
        &self,
        store: StoreId,
        source: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<IntakeLogRow>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, source, received_at, format, cursor, payload, bytes, truncated, outcome \
                 FROM intake_log WHERE store_id = $1 AND source = $2 AND id < $3 \
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(store.0)
            .bind(source)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Deletes log entries received before `cutoff`, `batch` at a time; how many.
    pub async fn purge_intake_log(&self, cutoff: i64, batch: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = with_pool!(self, pool => {
                sqlx::query(
                    "DELETE FROM intake_log WHERE id IN \
                     (SELECT id FROM intake_log WHERE received_at < $1 LIMIT $2)",
                )
                .bind(cutoff)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
            });
            total += n;
            if n < batch as u64 {
                return Ok(total);
            }
        }
    }
}
