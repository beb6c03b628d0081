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
    /// When it first arrived (ms).
    pub received_at: i64,
    /// When the same payload last arrived again (ms).
    pub last_seen_at: i64,
    /// How many times it arrived.
    pub seen_count: i64,
    pub replayed_at: Option<i64>,
    pub replay_result: Option<String>,
    /// Shoppers waiting on the SKUs it names (its business impact).
    pub waiting: i64,
    /// Those shoppers' value at the variants' current prices, in minor units.
    pub value_minor: i64,
}

macro_rules! columns {
    () => {
        "r.id, r.source, r.reason_code, r.reason, r.payload, r.received_at, \
         COALESCE(r.last_seen_at, r.received_at) AS last_seen_at, r.seen_count, r.replayed_at, r.replay_result, \
         COALESCE(i.waiting, 0) AS waiting, COALESCE(i.value_minor, 0) AS value_minor"
    };
}

/// Each rejection's impact: the shoppers waiting on the SKUs it names (a product-wide
/// sign-up counts for each of the product's variants it names), and their value.
macro_rules! impact_join {
    () => {
        " FROM rejections r LEFT JOIN ( \
            SELECT rs.rejection_id, COUNT(DISTINCT s.shopper_id) AS waiting, \
                   CAST(SUM(COALESCE(v.price_minor, p.price_minor)) AS BIGINT) AS value_minor \
            FROM rejection_skus rs \
            JOIN variants v ON v.store_id = rs.store_id AND v.sku = rs.sku \
            JOIN products p ON p.id = v.product_id \
            JOIN subscriptions s ON s.store_id = v.store_id AND s.product_id = v.product_id \
                 AND s.status = 'waiting' AND (s.variant_id = v.id OR s.variant_id IS NULL) \
            WHERE rs.store_id = $1 \
            GROUP BY rs.rejection_id) i ON i.rejection_id = r.id "
    };
}

/// Which rejections a listing or a bulk replay takes.
#[derive(Debug, Clone, Default)]
pub struct RejectionFilter {
    pub source: Option<String>,
    pub reason_code: Option<String>,
    /// Only those naming this SKU.
    pub sku: Option<String>,
    /// Only those not yet replayed successfully.
    pub open_only: bool,
    /// Only those last seen at or after this time (ms).
    pub since: Option<i64>,
}

/// A fingerprint of what was rejected where and why: the same payload rejected again
/// for the same reason counts on its first row instead of filing a new one.
pub fn fingerprint(r: &NewRejection) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [
        r.store
            .map(|s| s.0.to_string())
            .unwrap_or_default()
            .as_str(),
        &r.source,
        &r.reason_code,
        &r.payload,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The SKUs a payload names: every string under a key called `sku` (any case) at any
/// depth of a JSON payload. At most 100, each at most 255 characters; none with a
/// control character (no SKU has one, and PostgreSQL cannot store U+0000).
pub fn skus_in(payload: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k.eq_ignore_ascii_case("sku") {
                        if let Some(s) = v.as_str().map(str::trim)
                            && !s.is_empty()
                            && s.len() <= 255
                            && !s.chars().any(char::is_control)
                            && !out.iter().any(|o| o == s)
                        {
                            out.push(s.to_string());
                        }
                    } else {
                        walk(v, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) {
        walk(&v, &mut out);
    }
    out.truncate(100);
    out
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

    /// A page of the store's rejections matching `filter` with ids below `before`:
    /// highest impact first (value, then shoppers waiting, then most recently seen)
    /// when `by_impact`, else newest first; skipping `offset`.
    pub async fn rejections(
        &self,
        store: StoreId,
        filter: &RejectionFilter,
        by_impact: bool,
        before: Option<i64>,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RejectionRow>> {
        let order = if by_impact {
            "value_minor DESC, waiting DESC, last_seen_at DESC, r.id DESC"
        } else {
            "r.id DESC"
        };
        self.rejections_in(
            store,
            filter,
            &format!("r.id < $8 ORDER BY {order} LIMIT $7 OFFSET $9"),
            before.unwrap_or(i64::MAX),
            offset,
            limit,
        )
        .await
    }

    async fn rejections_in(
        &self,
        store: StoreId,
        f: &RejectionFilter,
        tail: &str,
        p8: i64,
        p9: i64,
        limit: i64,
    ) -> Result<Vec<RejectionRow>> {
        let sql = format!(
            concat!(
                "SELECT ",
                columns!(),
                impact_join!(),
                "WHERE r.store_id = $1 AND ($2 IS NULL OR r.source = $2) AND ($3 IS NULL OR r.reason_code = $3) \
                 AND ($4 IS NULL OR EXISTS (SELECT 1 FROM rejection_skus k WHERE k.rejection_id = r.id AND k.sku = $4)) \
                 AND ($5 = 0 OR r.replayed_at IS NULL OR r.replay_result NOT LIKE 'applied%') \
                 AND COALESCE(r.last_seen_at, r.received_at) >= $6 AND {}"
            ),
            tail
        );
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(store.0)
                .bind(f.source.as_deref())
                .bind(f.reason_code.as_deref())
                .bind(f.sku.as_deref())
                .bind(i64::from(f.open_only))
                .bind(f.since.unwrap_or(i64::MIN))
                .bind(limit)
                .bind(p8)
                .bind(p9)
                .fetch_all(pool)
                .await?)
        })
    }

    pub async fn rejection(&self, store: StoreId, id: RejectionId) -> Result<Option<RejectionRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", columns!(), impact_join!(), "WHERE r.store_id = $1 AND r.id = $2"))
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

    /// Rewrites a rejection's reason to say where it came from (a CSV import's line),
    /// leaving its payload, and so its fingerprint, as intake stored it.
    pub async fn set_rejection_reason(&self, id: RejectionId, reason: &str) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE rejections SET reason = $2 WHERE id = $1")
                .bind(id.0)
                .bind(storable(reason).into_owned())
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
