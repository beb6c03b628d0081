//! Stock levels, the availability state machine's transitions and restock events,
//! inside the transaction that changed the level: a restock is committed with the
//! stock change or not at all. Planning who is told happens afterwards, in the
//! workers (`storage::planning`), so a stock update answers in milliseconds whatever
//! the waiting list.
//!
//! Availability is judged per scope: the variant as a whole (every location) and each
//! market the store has defined (the locations serving it). Each scope has its own
//! state and its own restock events; a sign-up naming a market waits for that
//! market's. The rule — available to sell, thresholds, the state machine, whether a
//! pre-order variant fires — is `restock_core::stock`'s; this module only fetches the
//! facts and records what it decided.

use std::collections::{BTreeMap, BTreeSet};

use restock_core::ids::{RestockEventId, StoreId, VariantId};
use restock_core::policy::{ReleasePolicy, StorePolicy};
use restock_core::stock::{
    Availability, InventoryPolicy, Level, LevelFacts, OrderedUnits, StockUpdate, Thresholds,
    Transition, Version, available_to_sell, next_state, resolve,
};

use super::rejections::NewRejection;
use super::{Db, Dialect, Result, with_pool};

/// A restock that happened: planning it is the workers' job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestockOutcome {
    pub event_id: RestockEventId,
    pub variant_id: VariantId,
    pub sku: String,
    /// The market whose stock returned; `None` for the variant as a whole.
    pub market: Option<String>,
    pub quantity: i64,
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
    /// Re-judges a variant's availability in every scope from its levels, orders and
    /// thresholds; records transitions and, for each restock, the event (to be
    /// planned by the workers).
    async fn evaluate_variant(
        &mut self,
        variant: VariantId,
        cause: &str,
        now: i64,
    ) -> Result<Vec<RestockOutcome>>;

    async fn insert_rejection(&mut self, r: &NewRejection, now: i64) -> Result<i64>;
}

#[derive(sqlx::FromRow)]
struct VariantState {
    store_id: i64,
    product_id: i64,
    sku: String,
    in_stock: bool,
    inventory_policy: String,
    v_min: Option<i64>,
    v_notify: Option<i64>,
    p_min: Option<i64>,
    p_notify: Option<i64>,
    c_min: Option<i64>,
    c_notify: Option<i64>,
    s_min: i64,
    s_notify: i64,
    store_policy: String,
    release_policy: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LevelRowFacts {
    location: String,
    available: i64,
    reserved: i64,
    available_until: Option<i64>,
    observed_at: i64,
}

/// The store's policy, or the default if the stored JSON does not parse (it is
/// validated on the way in; a bad row must not stop stock from being applied).
pub(crate) fn parse_store_policy(json: &str) -> StorePolicy {
    serde_json::from_str(json).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "stored store policy does not parse; using the defaults");
        StorePolicy::default()
    })
}

/// The rules a restock was snapshotted with; the defaults for restocks recorded
/// before policies existed (NULL), or if the stored JSON does not parse.
pub(crate) fn parse_restock_policy(json: Option<&str>) -> restock_core::policy::Policy {
    json.and_then(|j| {
        serde_json::from_str(j)
            .map_err(|e| tracing::warn!(error = %e, "stored restock policy does not parse; using the defaults"))
            .ok()
    })
    .unwrap_or_default()
}

pub(crate) fn parse_release_policy(json: Option<&str>) -> Option<ReleasePolicy> {
    json.and_then(|j| {
        serde_json::from_str(j)
            .map_err(|e| tracing::warn!(error = %e, "stored release policy does not parse; using the store's"))
            .ok()
    })
}

macro_rules! impl_tx_ops {
    ($db:ty) => {
        impl TxOps for sqlx::Transaction<'static, $db> {
            async fn evaluate_variant(
                &mut self,
                variant: VariantId,
                cause: &str,
                now: i64,
            ) -> Result<Vec<RestockOutcome>> {
                let Some(v): Option<VariantState> = sqlx::query_as(
                    "SELECT v.store_id, v.product_id, v.sku, v.in_stock, v.inventory_policy, \
                            v.min_stock AS v_min, v.notify_threshold AS v_notify, \
                            p.min_stock AS p_min, p.notify_threshold AS p_notify, \
                            c.min_stock AS c_min, c.notify_threshold AS c_notify, \
                            s.min_stock AS s_min, s.notify_threshold AS s_notify, \
                            s.policy AS store_policy, p.release_policy \
                     FROM variants v JOIN products p ON p.id = v.product_id \
                     LEFT JOIN categories c ON c.id = p.category_id \
                     JOIN stores s ON s.id = v.store_id WHERE v.id = $1",
                )
                .bind(variant.0)
                .fetch_optional(&mut **self)
                .await?
                else {
                    return Ok(Vec::new());
                };
                let levels: Vec<LevelRowFacts> = sqlx::query_as(
                    "SELECT location, available, reserved, available_until, observed_at \
                     FROM stock_levels WHERE variant_id = $1",
                )
                .bind(variant.0)
                .fetch_all(&mut **self)
                .await?;
                let levels: Vec<LevelFacts> = levels
                    .into_iter()
                    .map(|l| LevelFacts {
                        location: l.location,
                        available: l.available,
                        reserved: l.reserved,
                        available_until_ms: l.available_until,
                        observed_at_ms: l.observed_at,
                    })
                    .collect();
                let oldest_observed = levels.iter().map(|l| l.observed_at_ms).min().unwrap_or(now);
                let orders: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
                    "SELECT ordered_at, quantity, market FROM order_lines \
                     WHERE variant_id = $1 AND ordered_at > $2",
                )
                .bind(variant.0)
                .bind(oldest_observed)
                .fetch_all(&mut **self)
                .await?;
                let orders: Vec<OrderedUnits> = orders
                    .into_iter()
                    .map(|(at, q, m)| OrderedUnits { ordered_at_ms: at, quantity: q, market: m })
                    .collect();
                let markets: Vec<(String, String)> = sqlx::query_as(
                    "SELECT market, location FROM market_locations WHERE store_id = $1 ORDER BY market, location",
                )
                .bind(v.store_id)
                .fetch_all(&mut **self)
                .await?;
                let mut by_market: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (m, l) in markets {
                    by_market.entry(m).or_default().push(l);
                }
                let market_state: Vec<(String, bool)> = sqlx::query_as(
                    "SELECT market, in_stock FROM variant_markets WHERE variant_id = $1",
                )
                .bind(variant.0)
                .fetch_all(&mut **self)
                .await?;
                let market_state: BTreeMap<String, bool> = market_state.into_iter().collect();

                let thresholds = Thresholds {
                    min_stock: resolve(&[v.v_min, v.p_min, v.c_min], v.s_min),
                    notify_threshold: resolve(&[v.v_notify, v.p_notify, v.c_notify], v.s_notify),
                };
                let fires = InventoryPolicy::parse(&v.inventory_policy).unwrap_or_default().fires_restock();
                // Expired temporary stock no longer counts; the earliest expiry of what
                // still counts is when the sweep must look again.
                let until = levels
                    .iter()
                    .filter(|l| l.available > l.reserved && l.available_until_ms.is_some_and(|u| u > now))
                    .filter_map(|l| l.available_until_ms)
                    .min();
                let mut scopes: Vec<(Option<String>, i64, bool)> = vec![(
                    None,
                    available_to_sell(&levels, None, None, &orders, now),
                    v.in_stock,
                )];
                for (m, locs) in &by_market {
                    scopes.push((
                        Some(m.clone()),
                        available_to_sell(&levels, Some(locs), Some(m), &orders, now),
                        market_state.get(m).copied().unwrap_or(false),
                    ));
                }
                let mut restocks = Vec::new();
                let mut policy: Option<String> = None;
                for (market, available, in_stock) in scopes {
                    let (next, transition) =
                        next_state(Availability::from_in_stock(in_stock), available, thresholds);
                    match &market {
                        None => {
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
                        }
                        Some(m) => {
                            sqlx::query(
                                "INSERT INTO variant_markets (variant_id, market, store_id, available, in_stock, state_changed_at) \
                                 VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN $7 END) \
                                 ON CONFLICT (variant_id, market) DO UPDATE SET available = excluded.available, \
                                   in_stock = excluded.in_stock, \
                                   state_changed_at = COALESCE(excluded.state_changed_at, variant_markets.state_changed_at)",
                            )
                            .bind(variant.0)
                            .bind(m)
                            .bind(v.store_id)
                            .bind(available)
                            .bind(next == Availability::InStock)
                            .bind(transition.is_some())
                            .bind(now)
                            .execute(&mut **self)
                            .await?;
                        }
                    }
                    let Some(transition) = transition else { continue };
                    let transition_id: i64 = sqlx::query_scalar(
                        "INSERT INTO availability_transitions (store_id, variant_id, market, to_state, quantity, cause, at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    )
                    .bind(v.store_id)
                    .bind(variant.0)
                    .bind(market.as_deref())
                    .bind(next.as_str())
                    .bind(available)
                    .bind(cause)
                    .bind(now)
                    .fetch_one(&mut **self)
                    .await?;
                    if transition != Transition::Restocked || !fires {
                        continue;
                    }
                    // An earlier restock of this scope still being released is over:
                    // the variant sold out since, and this one takes its place.
                    sqlx::query(
                        "UPDATE restock_events SET plan_state = 'superseded', finished_at = $3, lease_until = NULL \
                         WHERE variant_id = $1 AND COALESCE(market, '') = COALESCE($2, '') \
                           AND plan_state IN ('pending', 'waiting')",
                    )
                    .bind(variant.0)
                    .bind(market.as_deref())
                    .bind(now)
                    .execute(&mut **self)
                    .await?;
                    // The rules this restock is released under, fixed now.
                    let policy = policy.get_or_insert_with(|| {
                        let store = parse_store_policy(&v.store_policy);
                        let release = parse_release_policy(v.release_policy.as_deref());
                        serde_json::to_string(&store.for_product(release.as_ref())).unwrap_or_default()
                    });
                    let event_id: i64 = sqlx::query_scalar(
                        "INSERT INTO restock_events (store_id, variant_id, product_id, transition_id, quantity, available_until, \
                                                     created_at, market, policy, plan_state, next_run_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $7) RETURNING id",
                    )
                    .bind(v.store_id)
                    .bind(variant.0)
                    .bind(v.product_id)
                    .bind(transition_id)
                    .bind(available)
                    .bind(until)
                    .bind(now)
                    .bind(market.as_deref())
                    .bind(policy.as_str())
                    .fetch_one(&mut **self)
                    .await?;
                    restocks.push(RestockOutcome {
                        event_id: RestockEventId(event_id),
                        variant_id: variant,
                        sku: v.sku.clone(),
                        market,
                        quantity: available,
                    });
                }
                Ok(restocks)
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
    pub market: Option<String>,
    pub quantity: i64,
    pub available_until: Option<i64>,
    pub planned_count: i64,
    pub held_count: i64,
    pub held_out_count: i64,
    pub deferred_count: i64,
    pub plan_state: String,
    pub wave: i64,
    pub next_run_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct WaveRow {
    pub wave: i64,
    pub started_at: i64,
    pub available: i64,
    pub capacity: Option<i64>,
    pub planned: i64,
    pub held: i64,
}

macro_rules! event_columns {
    () => {
        "e.id, e.variant_id, v.sku, e.market, e.quantity, e.available_until, e.planned_count, e.held_count, \
         e.held_out_count, e.deferred_count, e.plan_state, e.wave, e.next_run_at, e.last_error, e.created_at, e.finished_at"
    };
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
                // Stale or a replay: the core's ordering rule decides.
                let stored = stored.map(|(observed_at_ms, sequence, available)| Level {
                    available,
                    version: Version { observed_at_ms, sequence },
                });
                let incoming = Level { available: u.available, version: u.version };
                if restock_core::stock::apply(stored.as_ref(), incoming).is_none() {
                    out.stale += 1;
                    continue;
                }
                sqlx::query(
                    "INSERT INTO stock_levels (variant_id, location, store_id, available, incoming, incoming_at, \
                                               available_until, observed_at, sequence, source, updated_at, reserved) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (variant_id, location) DO UPDATE SET \
                       available = excluded.available, reserved = excluded.reserved, incoming = excluded.incoming, \
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
                .bind(u.reserved)
                .execute(&mut *tx)
                .await?;
                out.applied += 1;
                touched.insert(vid);
            }
            for r in rejected {
                out.rejection_ids.push(tx.insert_rejection(r, now).await?);
            }
            for vid in touched {
                out.restocks.extend(tx.evaluate_variant(VariantId(vid), source, now).await?);
            }
            tx.commit().await?;
        });
        Ok(out)
    }

    pub async fn restock_events(&self, store: StoreId, limit: i64) -> Result<Vec<RestockEventRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", event_columns!(),
                " FROM restock_events e JOIN variants v ON v.id = e.variant_id \
                 WHERE e.store_id = $1 ORDER BY e.id DESC LIMIT $2"))
            .bind(store.0)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// One restock of a store, with its waves.
    pub async fn restock_event(
        &self,
        store: StoreId,
        id: RestockEventId,
    ) -> Result<Option<(RestockEventRow, Vec<WaveRow>)>> {
        with_pool!(self, pool => {
            let row: Option<RestockEventRow> = sqlx::query_as(concat!("SELECT ", event_columns!(),
                " FROM restock_events e JOIN variants v ON v.id = e.variant_id \
                 WHERE e.store_id = $1 AND e.id = $2"))
            .bind(store.0)
            .bind(id.0)
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let waves: Vec<WaveRow> = sqlx::query_as(
                "SELECT wave, started_at, available, capacity, planned, held FROM restock_waves \
                 WHERE restock_event_id = $1 ORDER BY wave",
            )
            .bind(id.0)
            .fetch_all(pool)
            .await?;
            Ok(Some((row, waves)))
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
}
