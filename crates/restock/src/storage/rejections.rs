//! Dead-lettered input: everything intake refused, whole, with the reason, so an
//! operator can read it and replay it once the cause is fixed.

use restock_core::ids::{RejectionId, StoreId};

use super::stock::TxOps;
use super::{Db, Dialect, Result, with_pool};

#[derive(Debug, Clone)]
pub struct NewRejection {
    pub store: Option<StoreId>,
    pub source: String,
    pub reason_code: String,
    pub reason: String,
    pub payload: String,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct RejectionRow {
    pub id: i64,
    pub source: String,
    pub reason_code: String,
    pub reason: String,
    pub payload: String,
    pub received_at: i64,
    pub replayed_at: Option<i64>,
    pub replay_result: Option<String>,
}

macro_rules! columns {
    () => {
        "id, source, reason_code, reason, payload, received_at, replayed_at, replay_result"
    };
}

/// Text as both databases can store it: PostgreSQL refuses U+0000 in text, SQLite
/// keeps it. A rejected payload carrying one is kept with U+FFFD in its place (such a
/// payload is not valid JSON with a raw NUL anyway), so both keep the same bytes.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

impl Db {
    pub async fn insert_rejection(&self, r: &NewRejection, now: i64) -> Result<RejectionId> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id = tx.insert_rejection(r, now).await?;
            tx.commit().await?;
            Ok(RejectionId(id))
        })
    }

    /// A page of the store's rejections, newest first, with ids below `before`.
    pub async fn rejections(
        &self,
        store: StoreId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RejectionRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", columns!(), " FROM rejections WHERE store_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"))
            .bind(store.0)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn rejection(&self, store: StoreId, id: RejectionId) -> Result<Option<RejectionRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", columns!(), " FROM rejections WHERE store_id = $1 AND id = $2"))
                .bind(store.0)
                .bind(id.0)
                .fetch_optional(pool)
                .await?)
        })
    }

    pub async fn mark_rejection_replayed(
        &self,
        id: RejectionId,
        result: &str,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE rejections SET replayed_at = $2, replay_result = $3 WHERE id = $1")
                .bind(id.0)
                .bind(now)
                .bind(result)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

impl Db {
    /// Whether a webhook delivery with this provider id was handled for the store.
    pub async fn webhook_seen(&self, store: StoreId, source: &str, delivery: &str) -> Result<bool> {
        with_pool!(self, pool => {
            let hit: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM webhook_deliveries WHERE store_id = $1 AND source = $2 AND delivery_id = $3",
            )
            .bind(store.0)
            .bind(source)
            .bind(delivery)
            .fetch_optional(pool)
            .await?;
            Ok(hit.is_some())
        })
    }

    /// Remembers a handled delivery (a concurrent twin's record wins; either is right).
    pub async fn record_webhook(
        &self,
        store: StoreId,
        source: &str,
        delivery: &str,
        result: &str,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_deliveries (store_id, source, delivery_id, result, received_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(store.0)
            .bind(source)
            .bind(delivery)
            .bind(result)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
