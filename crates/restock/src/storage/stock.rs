//! Stock levels, the availability state machine's transitions, restock events, and
//! planning — all inside the transaction that changed the level, so a restock and
//! its plan are committed together or not at all.

use std::collections::{BTreeMap, BTreeSet};

use restock_core::ids::{RestockEventId, StoreId, VariantId};
use restock_core::stock::{
    Availability, StockUpdate, Thresholds, Transition, Version, next_state, resolve,
};

use super::rejections::NewRejection;
use super::{Db, Dialect, Result, with_pool};

/// A restock that happened and how many notifications it planned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestockOutcome {
    pub event_id: RestockEventId,
    pub variant_id: VariantId,
    pub sku: String,
    pub quantity: i64,
    pub planned: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BatchOutcome {
    pub applied: u64,
    /// Older than (or a replay of) what is stored; ignored.
    pub stale: u64,
    /// Indexes of updates naming a SKU this store does not have.
    pub unknown_sku: Vec<usize>,
    pub restocks: Vec<RestockOutcome>,
    pub rejection_ids: Vec<i64>,
}

/// Operations that run inside a caller's write transaction.
pub(crate) trait TxOps {
    /// Re-judges a variant's availability from its levels and thresholds; records the
    /// transition and, for a restock, the event and its plan.
    async fn evaluate_variant(
        &mut self,
        variant: VariantId,
        cause: &str,
        now: i64,
    ) -> Result<Option<RestockOutcome>>;

    /// Plans one notification per eligible waiting subscription (see
    /// `restock_core::planner`), under the (subscription, event) uniqueness key.
    async fn plan_restock(&mut self, event: RestockEventId, now: i64) -> Result<u64>;

    async fn insert_rejection(&mut self, r: &NewRejection, now: i64) -> Result<i64>;
}

#[derive(sqlx::FromRow)]
struct VariantState {
    store_id: i64,
    product_id: i64,
    sku: String,
    in_stock: bool,
    v_min: Option<i64>,
    v_notify: Option<i64>,
    p_min: Option<i64>,
    p_notify: Option<i64>,
    c_min: Option<i64>,
    c_notify: Option<i64>,
    s_min: i64,
    s_notify: i64,
}

// Planning runs as two statements, one per kind of subscription, each bound to
// constant ids so it reads only that variant's (or product's) waiting list through
// its partial index; a single join with an OR lets SQLite fall back to scanning every
// subscription of the store.
macro_rules! plan_columns {
    () => {
        "INSERT INTO notifications (store_id, subscription_id, subscriber_id, restock_event_id, variant_id, \
                                    channel, recipient, state, attempts, due_at, planned_at, updated_at) \
         SELECT s.store_id, s.id, s.subscriber_id, $1, $2, 'email', b.email, 'pending', 0, $4, $4, $4 \
         FROM subscriptions s JOIN subscribers b ON b.id = s.subscriber_id AND b.suppressed_at IS NULL "
    };
}
// `LIMIT 1 OFFSET 0` keeps the in-flight check a per-subscription index probe:
// without it PostgreSQL, lacking statistics on freshly loaded tables, turns NOT
// EXISTS into an anti-join that rereads every in-flight row (including the ones
// this statement is inserting) for each subscriber — quadratic in the waiting list.
macro_rules! plan_not_in_flight {
    () => {
        " AND NOT EXISTS (SELECT 1 FROM notifications n \
                          WHERE n.subscription_id = s.id AND n.state IN ('pending', 'running') \
                          LIMIT 1 OFFSET 0) \
         ORDER BY s.id \
         ON CONFLICT DO NOTHING"
    };
}
const PLAN_VARIANT_SQL: &str = concat!(
    plan_columns!(),
    "WHERE s.variant_id = $2 AND s.status = 'waiting' AND $3 = $3",
    plan_not_in_flight!()
);
const PLAN_PRODUCT_SQL: &str = concat!(
    plan_columns!(),
    "WHERE s.product_id = $3 AND s.variant_id IS NULL AND s.status = 'waiting' AND $2 = $2",
    plan_not_in_flight!()
);

macro_rules! impl_tx_ops {
    ($db:ty) => {
        impl TxOps for sqlx::Transaction<'static, $db> {
            async fn evaluate_variant(
                &mut self,
                variant: VariantId,
                cause: &str,
                now: i64,
            ) -> Result<Option<RestockOutcome>> {
                let Some(v): Option<VariantState> = sqlx::query_as(
                    "SELECT v.store_id, v.product_id, v.sku, v.in_stock, \
                            v.min_stock AS v_min, v.notify_threshold AS v_notify, \
                            p.min_stock AS p_min, p.notify_threshold AS p_notify, \
                            c.min_stock AS c_min, c.notify_threshold AS c_notify, \
                            s.min_stock AS s_min, s.notify_threshold AS s_notify \
                     FROM variants v JOIN products p ON p.id = v.product_id \
                     LEFT JOIN categories c ON c.id = p.category_id \
                     JOIN stores s ON s.id = v.store_id WHERE v.id = $1",
                )
                .bind(variant.0)
                .fetch_optional(&mut **self)
                .await?
                else {
                    return Ok(None);
                };
                // Expired temporary stock no longer counts.
                let (available, until): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT CAST(COALESCE(SUM(available), 0) AS BIGINT), \
                            MIN(CASE WHEN available > 0 THEN available_until END) \
                     FROM stock_levels WHERE variant_id = $1 \
                       AND (available_until IS NULL OR available_until > $2)",
                )
                .bind(variant.0)
                .bind(now)
                .fetch_one(&mut **self)
                .await?;
                let thresholds = Thresholds {
                    min_stock: resolve(&[v.v_min, v.p_min, v.c_min], v.s_min),
                    notify_threshold: resolve(&[v.v_notify, v.p_notify, v.c_notify], v.s_notify),
                };
                let current = Availability::from_in_stock(v.in_stock);
                let (next, transition) = next_state(current, available, thresholds);
                sqlx::query(
                    "UPDATE variants SET available = $2, available_until = $3, in_stock = $4, \
                        state_changed_at = CASE WHEN $5 THEN $6 ELSE state_changed_at END \
                     WHERE id = $1",
                )
                .bind(variant.0)
                .bind(available)
                .bind(until)
                .bind(next == Availability::InStock)
                .bind(transition.is_some())
                .bind(now)
                .execute(&mut **self)
                .await?;
                let Some(transition) = transition else {
                    return Ok(None);
                };
                let transition_id: i64 = sqlx::query_scalar(
                    "INSERT INTO availability_transitions (store_id, variant_id, to_state, quantity, cause, at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(v.store_id)
                .bind(variant.0)
                .bind(next.as_str())
                .bind(available)
                .bind(cause)
                .bind(now)
                .fetch_one(&mut **self)
                .await?;
                if transition != Transition::Restocked {
                    return Ok(None);
                }
                let event_id: i64 = sqlx::query_scalar(
                    "INSERT INTO restock_events (store_id, variant_id, product_id, transition_id, quantity, available_until, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(v.store_id)
                .bind(variant.0)
                .bind(v.product_id)
                .bind(transition_id)
                .bind(available)
                .bind(until)
                .bind(now)
                .fetch_one(&mut **self)
                .await?;
                let event = RestockEventId(event_id);
                let planned = self.plan_restock(event, now).await?;
                Ok(Some(RestockOutcome { event_id: event, variant_id: variant, sku: v.sku, quantity: available, planned }))
            }

            async fn plan_restock(&mut self, event: RestockEventId, now: i64) -> Result<u64> {
                let Some((variant, product)): Option<(i64, i64)> =
                    sqlx::query_as("SELECT variant_id, product_id FROM restock_events WHERE id = $1")
                        .bind(event.0)
                        .fetch_optional(&mut **self)
                        .await?
                else {
                    return Ok(0);
                };
                let mut planned = 0;
                for sql in [PLAN_VARIANT_SQL, PLAN_PRODUCT_SQL] {
                    planned += sqlx::query(sql)
                        .bind(event.0)
                        .bind(variant)
                        .bind(product)
                        .bind(now)
                        .execute(&mut **self)
                        .await?
                        .rows_affected();
                }
                sqlx::query("UPDATE restock_events SET planned_count = planned_count + $2 WHERE id = $1")
                    .bind(event.0)
                    .bind(planned as i64)
                    .execute(&mut **self)
                    .await?;
                Ok(planned)
            }

            async fn insert_rejection(&mut self, r: &NewRejection, now: i64) -> Result<i64> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO rejections (store_id, source, reason_code, reason, payload, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(r.store.map(|s| s.0))
                .bind(&r.source)
                .bind(&r.reason_code)
                .bind(super::rejections::storable(&r.reason).into_owned())
                .bind(super::rejections::storable(&r.payload).into_owned())
                .bind(now)
                .fetch_one(&mut **self)
                .await?)
            }
        }
    };
}

impl_tx_ops!(sqlx::Sqlite);
impl_tx_ops!(sqlx::Postgres);

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct RestockEventRow {
    pub id: i64,
    pub variant_id: i64,
    pub sku: String,
    pub quantity: i64,
    pub available_until: Option<i64>,
    pub planned_count: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TransitionRow {
    pub id: i64,
    pub to_state: String,
    pub quantity: i64,
    pub cause: String,
    pub at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct LevelRow {
    pub location: String,
    pub available: i64,
    pub incoming: Option<i64>,
    pub incoming_at: Option<i64>,
    pub available_until: Option<i64>,
    pub observed_at: i64,
    pub sequence: Option<i64>,
    pub source: String,
}

impl Db {
    /// Applies a batch of updates for one store in one transaction: levels first,
    /// then each touched variant's state machine once, on its total after the batch.
    /// Updates naming an unknown SKU are kept as rejections in the same transaction,
    /// as are `rejected` (input the caller could not parse).
    pub async fn apply_stock_batch(
        &self,
        store: StoreId,
        source: &str,
        updates: &[StockUpdate],
        rejected: &[NewRejection],
        now: i64,
    ) -> Result<BatchOutcome> {
        let mut out = BatchOutcome::default();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let mut variant_ids: BTreeMap<&str, Option<i64>> = BTreeMap::new();
            let mut touched: BTreeSet<i64> = BTreeSet::new();
            for (i, u) in updates.iter().enumerate() {
                let sku = u.sku.as_str();
                let vid = match variant_ids.get(sku) {
                    Some(v) => *v,
                    None => {
                        let v: Option<i64> = sqlx::query_scalar("SELECT id FROM variants WHERE store_id = $1 AND sku = $2")
                            .bind(store.0)
                            .bind(sku)
                            .fetch_optional(&mut *tx)
                            .await?;
                        variant_ids.insert(sku, v);
                        v
                    }
                };
                let Some(vid) = vid else {
                    out.unknown_sku.push(i);
                    let payload = serde_json::to_string(&crate::intake::api::StockItem::from_update(u)).unwrap_or_default();
                    let id = tx.insert_rejection(&NewRejection {
                        store: Some(store),
                        source: source.to_string(),
                        reason_code: "unknown_sku".into(),
                        reason: format!("no variant with SKU {sku:?} in this store"),
                        payload,
                    }, now).await?;
                    out.rejection_ids.push(id);
                    continue;
                };
                let stored: Option<(i64, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT observed_at, sequence, available FROM stock_levels WHERE variant_id = $1 AND location = $2",
                )
                .bind(vid)
                .bind(&u.location)
                .fetch_optional(&mut *tx)
                .await?;
                // Stale: older than what is stored, or the same version with the same
                // quantity (a replay). The same version with a different quantity
                // comes from a source whose clock is coarser than its updates (or
                // from two receipt-stamped updates in one millisecond): the one
                // received later wins.
                if let Some((observed_at_ms, sequence, available)) = stored {
                    let stored_version = Version { observed_at_ms, sequence };
                    let replay = u.version == stored_version && u.available == available;
                    if replay || (u.version != stored_version && !u.version.is_newer(&stored_version)) {
                        out.stale += 1;
                        continue;
                    }
                }
                sqlx::query(
                    "INSERT INTO stock_levels (variant_id, location, store_id, available, incoming, incoming_at, \
                                               available_until, observed_at, sequence, source, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (variant_id, location) DO UPDATE SET \
                       available = excluded.available, incoming = excluded.incoming, \
                       incoming_at = excluded.incoming_at, available_until = excluded.available_until, \
                       observed_at = excluded.observed_at, sequence = excluded.sequence, \
                       source = excluded.source, updated_at = excluded.updated_at",
                )
                .bind(vid)
                .bind(&u.location)
                .bind(store.0)
                .bind(u.available)
                .bind(u.incoming)
                .bind(u.incoming_at_ms)
                .bind(u.available_until_ms)
                .bind(u.version.observed_at_ms)
                .bind(u.version.sequence)
                .bind(source)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                out.applied += 1;
                touched.insert(vid);
            }
            for r in rejected {
                out.rejection_ids.push(tx.insert_rejection(r, now).await?);
            }
            for vid in touched {
                if let Some(restock) = tx.evaluate_variant(VariantId(vid), source, now).await? {
                    out.restocks.push(restock);
                }
            }
            tx.commit().await?;
        });
        Ok(out)
    }

    pub async fn restock_events(&self, store: StoreId, limit: i64) -> Result<Vec<RestockEventRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT e.id, e.variant_id, v.sku, e.quantity, e.available_until, e.planned_count, e.created_at \
                 FROM restock_events e JOIN variants v ON v.id = e.variant_id \
                 WHERE e.store_id = $1 ORDER BY e.id DESC LIMIT $2",
            )
            .bind(store.0)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn transitions(&self, variant: VariantId) -> Result<Vec<TransitionRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, to_state, quantity, cause, at FROM availability_transitions \
                 WHERE variant_id = $1 ORDER BY id",
            )
            .bind(variant.0)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn stock_levels(&self, variant: VariantId) -> Result<Vec<LevelRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT location, available, incoming, incoming_at, available_until, observed_at, sequence, source \
                 FROM stock_levels WHERE variant_id = $1 ORDER BY location",
            )
            .bind(variant.0)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Re-judges variants whose temporary stock has passed its `available_until`, so
    /// they read as sold out (and take sign-ups again) without waiting for the next
    /// stock update. Returns how many variants were re-judged.
    pub async fn expire_temporary_stock(&self, now: i64, limit: i64) -> Result<usize> {
        with_pool!(self, pool => {
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM variants WHERE available_until IS NOT NULL AND available_until <= $1 \
                 ORDER BY available_until LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            for id in &ids {
                let mut tx = pool.begin_write().await?;
                tx.evaluate_variant(VariantId(*id), "expiry", now).await?;
                tx.commit().await?;
            }
            Ok(ids.len())
        })
    }

    /// Re-plans a restock event (used by tests and operators to prove replanning is
    /// harmless): returns how many new notifications it added.
    pub async fn replan(&self, event: RestockEventId, now: i64) -> Result<u64> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = tx.plan_restock(event, now).await?;
            tx.commit().await?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The planner must read only the restocked variant's (or product's) waiting list:
    /// each statement searches its partial index and scans no table.
    #[tokio::test]
    async fn planning_reads_only_the_waiting_list() {
        let dir =
            std::env::temp_dir().join(format!("restock-plan-{}", crate::util::random_token(6)));
        let db = Db::connect_url(&format!("sqlite://{}/p.db", dir.display()), 2)
            .await
            .expect("db");
        db.migrate().await.expect("migrate");
        let Db::Sqlite(pool) = &db else {
            unreachable!("sqlite")
        };
        for (sql, index) in [
            (PLAN_VARIANT_SQL, "subscriptions_waiting_variant"),
            (PLAN_PRODUCT_SQL, "subscriptions_waiting_product"),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(1_i64)
                    .bind(1_i64)
                    .bind(1_i64)
                    .bind(1_i64)
                    .fetch_all(pool)
                    .await
                    .expect("explain");
            let steps: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(
                steps.iter().any(|s| s.contains(index)),
                "{index} not used: {steps:?}"
            );
            assert!(
                steps.iter().any(|s| s.contains("notifications_in_flight")),
                "in-flight check is not an index probe: {steps:?}"
            );
            assert!(
                !steps.iter().any(|s| s.starts_with("SCAN")),
                "a table scan on the hot path: {steps:?}"
            );
        }
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
