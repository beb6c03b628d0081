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

impl Db {
    pub async fn insert_rejection(&self, r: &NewRejection, now: i64) -> Result<RejectionId> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id = tx.insert_rejection(r, now).await?;
            tx.commit().await?;
            Ok(RejectionId(id))
        })
    }

    pub async fn rejections(&self, store: StoreId, limit: i64) -> Result<Vec<RejectionRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", columns!(), " FROM rejections WHERE store_id = $1 ORDER BY id DESC LIMIT $2"))
            .bind(store.0)
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
