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
    /// Every rejection kept: unknown SKUs first, then the caller's, in order.
    pub rejection_ids: Vec<i64>,
    /// Updates the source's profile refused (position in the caller's updates, the
    /// dead letter, its id); their ids are also the last of `rejection_ids`.
    #[serde(skip)]
    pub refused: Vec<(usize, NewRejection, i64)>,
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

/// Operations that run inside a caller's write transaction.
pub(crate) trait TxOps {
    /// Re-judges variants' availability in every scope from their levels, orders and
    /// thresholds; records transitions and, for each restock, the event (to be
    /// planned by the workers). The facts of all the variants are read, and the
    /// decisions written, a handful of statements for the whole set; restocks come
    /// back in variant order, the variant as a whole before its markets.
    async fn evaluate_variants(
        &mut self,
        variants: &[VariantId],
        cause: &str,
        now: i64,
    ) -> Result<Vec<RestockOutcome>>;

    /// [`TxOps::evaluate_variants`] for one variant.
    async fn evaluate_variant(
        &mut self,
        variant: VariantId,
        cause: &str,
        now: i64,
    ) -> Result<Vec<RestockOutcome>> {
        self.evaluate_variants(&[variant], cause, now).await
    }

    async fn insert_rejection(&mut self, r: &NewRejection, now: i64) -> Result<i64>;
}

#[derive(sqlx::FromRow)]
struct VariantState {
    id: i64,
    store_id: i64,
    product_id: i64,
    sku: String,
    in_stock: bool,
    inventory_policy: String,
    /// The product is active and the variant not removed from it: it can be sold.
    on_sale: bool,
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
    variant_id: i64,
    location: String,
    available: i64,
    reserved: i64,
    available_until: Option<i64>,
    observed_at: i64,
}

/// Everything judging a set of variants needs, read set-wise.
#[derive(Default)]
struct Facts {
    variants: Vec<VariantState>,
    levels: BTreeMap<i64, Vec<LevelFacts>>,
    orders: BTreeMap<i64, Vec<OrderedUnits>>,
    /// Per store, each market's locations.
    markets: BTreeMap<i64, BTreeMap<String, Vec<String>>>,
    /// Per (variant, market), whether that market had it in stock.
    market_state: BTreeMap<(i64, String), bool>,
}

impl Facts {
    fn add_levels(&mut self, rows: Vec<LevelRowFacts>) {
        for l in rows {
            self.levels
                .entry(l.variant_id)
                .or_default()
                .push(LevelFacts {
                    location: l.location,
                    available: l.available,
                    reserved: l.reserved,
                    available_until_ms: l.available_until,
                    observed_at_ms: l.observed_at,
                });
        }
    }

    /// Per variant, the time after which an order may not be reported yet by the
    /// sources: the oldest observation of its levels (now, without levels).
    fn orders_since(&self, now: i64) -> Vec<(i64, i64)> {
        self.variants
            .iter()
            .map(|v| {
                let oldest = self
                    .levels
                    .get(&v.id)
                    .and_then(|ls| ls.iter().map(|l| l.observed_at_ms).min())
                    .unwrap_or(now);
                (v.id, oldest)
            })
            .collect()
    }
}

/// What judging one scope of one variant decided.
struct ScopeDecision {
    variant: i64,
    store: i64,
    product: i64,
    /// `None`: the variant as a whole.
    market: Option<String>,
    available: i64,
    /// The earliest expiry of temporary stock that still counts.
    until: Option<i64>,
    next: Availability,
    transition: Option<Transition>,
    /// A restock to announce: the policy it is released under.
    restock_policy: Option<std::sync::Arc<str>>,
}

impl ScopeDecision {
    fn market_key(&self) -> &str {
        self.market.as_deref().unwrap_or("")
    }
}

/// Judges every scope of every variant with the core's rules, in variant order and,
/// per variant, the whole before its markets (sorted by name).
fn decide(facts: &Facts, now: i64) -> Vec<ScopeDecision> {
    let no_levels = Vec::new();
    let no_orders = Vec::new();
    let no_markets = BTreeMap::new();
    let mut out = Vec::new();
    for v in &facts.variants {
        let levels = facts.levels.get(&v.id).unwrap_or(&no_levels);
        let orders = facts.orders.get(&v.id).unwrap_or(&no_orders);
        let by_market = facts.markets.get(&v.store_id).unwrap_or(&no_markets);
        let thresholds = Thresholds {
            min_stock: resolve(&[v.v_min, v.p_min, v.c_min], v.s_min),
            notify_threshold: resolve(&[v.v_notify, v.p_notify, v.c_notify], v.s_notify),
        };
        let fires = InventoryPolicy::parse(&v.inventory_policy)
            .unwrap_or_default()
            .fires_restock();
        // Expired temporary stock no longer counts; the earliest expiry of what
        // still counts is when the sweep must look again.
        let until = levels
            .iter()
            .filter(|l| l.available > l.reserved && l.available_until_ms.is_some_and(|u| u > now))
            .filter_map(|l| l.available_until_ms)
            .min();
        // What cannot be bought (a draft, archived or deleted product, a variant
        // removed from its product) has nothing to sell, whatever its levels say: it
        // goes out of stock, and restocks when it is on sale again.
        let sellable = |available: i64| if v.on_sale { available } else { 0 };
        let mut scopes: Vec<(Option<String>, i64, bool)> = vec![(
            None,
            sellable(available_to_sell(levels, None, None, orders, now)),
            v.in_stock,
        )];
        for (m, locs) in by_market {
            scopes.push((
                Some(m.clone()),
                sellable(available_to_sell(levels, Some(locs), Some(m), orders, now)),
                facts
                    .market_state
                    .get(&(v.id, m.clone()))
                    .copied()
                    .unwrap_or(false),
            ));
        }
        // The rules a restock is released under, fixed now (once per variant).
        let mut policy: Option<std::sync::Arc<str>> = None;
        for (market, available, in_stock) in scopes {
            let (next, transition) =
                next_state(Availability::from_in_stock(in_stock), available, thresholds);
            let restock_policy = (transition == Some(Transition::Restocked) && fires).then(|| {
                policy
                    .get_or_insert_with(|| {
                        let store = parse_store_policy(&v.store_policy);
                        let release = parse_release_policy(v.release_policy.as_deref());
                        serde_json::to_string(&store.for_product(release.as_ref()))
                            .unwrap_or_default()
                            .into()
                    })
                    .clone()
            });
            out.push(ScopeDecision {
                variant: v.id,
                store: v.store_id,
                product: v.product_id,
                market,
                available,
                until,
                next,
                transition,
                restock_policy,
            });
        }
    }
    out
}

/// Restock outcomes, in decision order, from the ids the event insert returned.
fn restock_outcomes(
    facts: &Facts,
    decisions: &[ScopeDecision],
    ids: Vec<(i64, i64, Option<String>)>,
) -> Vec<RestockOutcome> {
    let ids: BTreeMap<(i64, String), i64> = ids
        .into_iter()
        .map(|(id, v, m)| ((v, m.unwrap_or_default()), id))
        .collect();
    let skus: BTreeMap<i64, &str> = facts
        .variants
        .iter()
        .map(|v| (v.id, v.sku.as_str()))
        .collect();
    decisions
        .iter()
        .filter(|d| d.restock_policy.is_some())
        .filter_map(|d| {
            let id = ids.get(&(d.variant, d.market_key().to_string()))?;
            Some(RestockOutcome {
                event_id: RestockEventId(*id),
                variant_id: VariantId(d.variant),
                sku: skus
                    .get(&d.variant)
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                market: d.market.clone(),
                quantity: d.available,
            })
        })
        .collect()
}

/// Transition ids by (variant, market) as the insert returned them.
fn transition_ids(rows: Vec<(i64, i64, Option<String>)>) -> BTreeMap<(i64, String), i64> {
    rows.into_iter()
        .map(|(id, v, m)| ((v, m.unwrap_or_default()), id))
        .collect()
}

macro_rules! concat_variant_sql {
    ($tail:literal) => {
        concat!(
            "SELECT v.id, v.store_id, v.product_id, v.sku, v.in_stock, v.inventory_policy, \
        (p.status = 'active' AND v.removed_at IS NULL) AS on_sale, \
        v.min_stock AS v_min, v.notify_threshold AS v_notify, \
        p.min_stock AS p_min, p.notify_threshold AS p_notify, \
        c.min_stock AS c_min, c.notify_threshold AS c_notify, \
        s.min_stock AS s_min, s.notify_threshold AS s_notify, \
        s.policy AS store_policy, p.release_policy \
     FROM variants v JOIN products p ON p.id = v.product_id \
     LEFT JOIN categories c ON c.id = p.category_id \
     JOIN stores s ON s.id = v.store_id ",
            $tail
        )
    };
}

const INSERT_REJECTION: &str = "INSERT INTO rejections (store_id, source, reason_code, reason, payload, received_at, last_seen_at, fingerprint) \
     VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
     ON CONFLICT (fingerprint) DO UPDATE SET seen_count = rejections.seen_count + 1, last_seen_at = excluded.last_seen_at, \
         reason = excluded.reason, replayed_at = NULL, replay_result = NULL \
     RETURNING id";

const INSERT_REJECTION_SKU: &str = "INSERT INTO rejection_skus (rejection_id, store_id, sku) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

macro_rules! insert_rejection {
    () => {
        async fn insert_rejection(&mut self, r: &NewRejection, now: i64) -> Result<i64> {
            let payload = super::rejections::storable(&r.payload).into_owned();
            let id: i64 = sqlx::query_scalar(INSERT_REJECTION)
                .bind(r.store.map(|s| s.0))
                .bind(&r.source)
                .bind(&r.reason_code)
                .bind(super::rejections::storable(&r.reason).into_owned())
                .bind(&payload)
                .bind(now)
                .bind(super::rejections::fingerprint(r))
                .fetch_one(&mut **self)
                .await?;
            if let Some(store) = r.store {
                for sku in super::rejections::skus_in(&payload) {
                    sqlx::query(INSERT_REJECTION_SKU)
                        .bind(id)
                        .bind(store.0)
                        .bind(sku)
                        .execute(&mut **self)
                        .await?;
                }
            }
            Ok(id)
        }
    };
}

fn json<T: serde::Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).unwrap_or_default()
}

/// SQLite: each set goes over as one JSON document, unpacked with json_each.
impl TxOps for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn evaluate_variants(
        &mut self,
        variants: &[VariantId],
        cause: &str,
        now: i64,
    ) -> Result<Vec<RestockOutcome>> {
        let ids: BTreeSet<i64> = variants.iter().map(|v| v.0).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json(&ids);
        let mut facts = Facts {
            variants: sqlx::query_as(concat_variant_sql!(
                "WHERE v.id IN (SELECT value FROM json_each($1)) ORDER BY v.id"
            ))
            .bind(&ids)
            .fetch_all(&mut **self)
            .await?,
            ..Facts::default()
        };
        let levels: Vec<LevelRowFacts> = sqlx::query_as(
            "SELECT variant_id, location, available, reserved, available_until, observed_at \
             FROM stock_levels WHERE variant_id IN (SELECT value FROM json_each($1))",
        )
        .bind(&ids)
        .fetch_all(&mut **self)
        .await?;
        facts.add_levels(levels);
        let orders: Vec<(i64, i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT o.variant_id, o.ordered_at, o.quantity, o.market FROM json_each($1) j \
             JOIN order_lines o ON o.variant_id = j.value ->> 0 AND o.ordered_at > j.value ->> 1",
        )
        .bind(json(&facts.orders_since(now)))
        .fetch_all(&mut **self)
        .await?;
        for (v, at, q, m) in orders {
            facts.orders.entry(v).or_default().push(OrderedUnits {
                ordered_at_ms: at,
                quantity: q,
                market: m,
            });
        }
        let stores: BTreeSet<i64> = facts.variants.iter().map(|v| v.store_id).collect();
        let markets: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT store_id, market, location FROM market_locations \
             WHERE store_id IN (SELECT value FROM json_each($1)) ORDER BY store_id, market, location",
        )
        .bind(json(&stores))
        .fetch_all(&mut **self)
        .await?;
        if !markets.is_empty() {
            for (s, m, l) in markets {
                facts
                    .markets
                    .entry(s)
                    .or_default()
                    .entry(m)
                    .or_default()
                    .push(l);
            }
            let state: Vec<(i64, String, bool)> = sqlx::query_as(
                "SELECT variant_id, market, in_stock FROM variant_markets \
                 WHERE variant_id IN (SELECT value FROM json_each($1))",
            )
            .bind(&ids)
            .fetch_all(&mut **self)
            .await?;
            facts.market_state = state.into_iter().map(|(v, m, s)| ((v, m), s)).collect();
        }

        let decisions = decide(&facts, now);
        let whole: Vec<_> = decisions
            .iter()
            .filter(|d| d.market.is_none())
            .map(|d| {
                (
                    d.variant,
                    d.available,
                    d.until,
                    d.next == Availability::InStock,
                    d.transition.is_some(),
                )
            })
            .collect();
        sqlx::query(
            "UPDATE variants SET available = j.value ->> 1, available_until = j.value ->> 2, in_stock = j.value ->> 3, \
                state_changed_at = CASE WHEN j.value ->> 4 THEN $1 ELSE variants.state_changed_at END \
             FROM json_each($2) j WHERE variants.id = j.value ->> 0",
        )
        .bind(now)
        .bind(json(&whole))
        .execute(&mut **self)
        .await?;
        let per_market: Vec<_> = decisions
            .iter()
            .filter_map(|d| {
                let m = d.market.as_deref()?;
                Some((
                    d.variant,
                    m,
                    d.store,
                    d.available,
                    d.next == Availability::InStock,
                    d.transition.is_some(),
                ))
            })
            .collect();
        if !per_market.is_empty() {
            sqlx::query(
                "INSERT INTO variant_markets (variant_id, market, store_id, available, in_stock, state_changed_at) \
                 SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, \
                        CASE WHEN j.value ->> 5 THEN $1 END \
                 FROM json_each($2) j WHERE true \
                 ON CONFLICT (variant_id, market) DO UPDATE SET available = excluded.available, \
                   in_stock = excluded.in_stock, \
                   state_changed_at = COALESCE(excluded.state_changed_at, variant_markets.state_changed_at)",
            )
            .bind(now)
            .bind(json(&per_market))
            .execute(&mut **self)
            .await?;
        }
        let transitions: Vec<_> = decisions
            .iter()
            .filter(|d| d.transition.is_some())
            .map(|d| {
                (
                    d.store,
                    d.variant,
                    d.market.as_deref(),
                    d.next.as_str(),
                    d.available,
                )
            })
            .collect();
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "INSERT INTO availability_transitions (store_id, variant_id, market, to_state, quantity, cause, at) \
             SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, $1, $2 \
             FROM json_each($3) j ORDER BY j.key RETURNING id, variant_id, market",
        )
        .bind(cause)
        .bind(now)
        .bind(json(&transitions))
        .fetch_all(&mut **self)
        .await?;
        let transition_ids = transition_ids(rows);
        let restocks: Vec<_> = decisions
            .iter()
            .filter_map(|d| {
                let policy = d.restock_policy.as_deref()?;
                let transition = transition_ids.get(&(d.variant, d.market_key().to_string()))?;
                Some((
                    d.store,
                    d.variant,
                    d.product,
                    *transition,
                    d.available,
                    d.until,
                    d.market.as_deref(),
                    policy,
                ))
            })
            .collect();
        if restocks.is_empty() {
            return Ok(Vec::new());
        }
        // An earlier restock of the same scope still being released is over: the
        // variant sold out since, and this one takes its place.
        let scopes: Vec<_> = restocks.iter().map(|r| (r.1, r.6.unwrap_or(""))).collect();
        sqlx::query(
            "UPDATE restock_events SET plan_state = 'superseded', finished_at = $1, lease_until = NULL \
             WHERE plan_state IN ('pending', 'waiting') \
               AND variant_id IN (SELECT j.value ->> 0 FROM json_each($2) j) \
               AND EXISTS (SELECT 1 FROM json_each($2) j WHERE j.value ->> 0 = restock_events.variant_id \
                             AND j.value ->> 1 = COALESCE(restock_events.market, ''))",
        )
        .bind(now)
        .bind(json(&scopes))
        .execute(&mut **self)
        .await?;
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "INSERT INTO restock_events (store_id, variant_id, product_id, transition_id, quantity, available_until, \
                                         created_at, market, policy, plan_state, next_run_at) \
             SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, \
                    $1, j.value ->> 6, j.value ->> 7, 'pending', $1 \
             FROM json_each($2) j ORDER BY j.key RETURNING id, variant_id, market",
        )
        .bind(now)
        .bind(json(&restocks))
        .fetch_all(&mut **self)
        .await?;
        Ok(restock_outcomes(&facts, &decisions, rows))
    }

    insert_rejection!();
}

/// PostgreSQL: each set goes over as arrays, unnested. The variants are locked (in
/// id order, so two sets cannot deadlock) before their facts are read: two
/// transactions judging one variant take turns instead of both firing.
impl TxOps for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn evaluate_variants(
        &mut self,
        variants: &[VariantId],
        cause: &str,
        now: i64,
    ) -> Result<Vec<RestockOutcome>> {
        let ids: Vec<i64> = variants
            .iter()
            .map(|v| v.0)
            .collect::<BTreeSet<i64>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut facts = Facts {
            variants: sqlx::query_as(concat_variant_sql!(
                "WHERE v.id IN (SELECT unnest($1::bigint[])) ORDER BY v.id FOR UPDATE OF v"
            ))
            .bind(&ids)
            .fetch_all(&mut **self)
            .await?,
            ..Facts::default()
        };
        let levels: Vec<LevelRowFacts> = sqlx::query_as(
            "SELECT l.variant_id, l.location, l.available, l.reserved, l.available_until, l.observed_at \
             FROM UNNEST($1::bigint[]) AS u(id) JOIN stock_levels l ON l.variant_id = u.id",
        )
        .bind(&ids)
        .fetch_all(&mut **self)
        .await?;
        facts.add_levels(levels);
        let since = facts.orders_since(now);
        let orders: Vec<(i64, i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT o.variant_id, o.ordered_at, o.quantity, o.market \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS u(variant, since) \
             JOIN order_lines o ON o.variant_id = u.variant AND o.ordered_at > u.since",
        )
        .bind(since.iter().map(|s| s.0).collect::<Vec<i64>>())
        .bind(since.iter().map(|s| s.1).collect::<Vec<i64>>())
        .fetch_all(&mut **self)
        .await?;
        for (v, at, q, m) in orders {
            facts.orders.entry(v).or_default().push(OrderedUnits {
                ordered_at_ms: at,
                quantity: q,
                market: m,
            });
        }
        let stores: Vec<i64> = facts
            .variants
            .iter()
            .map(|v| v.store_id)
            .collect::<BTreeSet<i64>>()
            .into_iter()
            .collect();
        let markets: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT store_id, market, location FROM market_locations \
             WHERE store_id = ANY($1) ORDER BY store_id, market, location",
        )
        .bind(&stores)
        .fetch_all(&mut **self)
        .await?;
        if !markets.is_empty() {
            for (s, m, l) in markets {
                facts
                    .markets
                    .entry(s)
                    .or_default()
                    .entry(m)
                    .or_default()
                    .push(l);
            }
            let state: Vec<(i64, String, bool)> = sqlx::query_as(
                "SELECT m.variant_id, m.market, m.in_stock \
                 FROM UNNEST($1::bigint[]) AS u(id) JOIN variant_markets m ON m.variant_id = u.id",
            )
            .bind(&ids)
            .fetch_all(&mut **self)
            .await?;
            facts.market_state = state.into_iter().map(|(v, m, s)| ((v, m), s)).collect();
        }

        let decisions = decide(&facts, now);
        let whole: Vec<&ScopeDecision> = decisions.iter().filter(|d| d.market.is_none()).collect();
        sqlx::query(
            "UPDATE variants v SET available = u.available, available_until = u.until, in_stock = u.in_stock, \
                state_changed_at = CASE WHEN u.changed THEN $1 ELSE v.state_changed_at END \
             FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[], $6::boolean[]) \
               AS u(id, available, until, in_stock, changed) \
             WHERE v.id = u.id",
        )
        .bind(now)
        .bind(whole.iter().map(|d| d.variant).collect::<Vec<i64>>())
        .bind(whole.iter().map(|d| d.available).collect::<Vec<i64>>())
        .bind(whole.iter().map(|d| d.until).collect::<Vec<Option<i64>>>())
        .bind(whole.iter().map(|d| d.next == Availability::InStock).collect::<Vec<bool>>())
        .bind(whole.iter().map(|d| d.transition.is_some()).collect::<Vec<bool>>())
        .execute(&mut **self)
        .await?;
        let per_market: Vec<&ScopeDecision> =
            decisions.iter().filter(|d| d.market.is_some()).collect();
        if !per_market.is_empty() {
            sqlx::query(
                "INSERT INTO variant_markets (variant_id, market, store_id, available, in_stock, state_changed_at) \
                 SELECT u.variant, u.market, u.store, u.available, u.in_stock, CASE WHEN u.changed THEN $1 END \
                 FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::boolean[], $7::boolean[]) \
                   AS u(variant, market, store, available, in_stock, changed) \
                 ON CONFLICT (variant_id, market) DO UPDATE SET available = excluded.available, \
                   in_stock = excluded.in_stock, \
                   state_changed_at = COALESCE(excluded.state_changed_at, variant_markets.state_changed_at)",
            )
            .bind(now)
            .bind(per_market.iter().map(|d| d.variant).collect::<Vec<i64>>())
            .bind(per_market.iter().map(|d| d.market_key()).collect::<Vec<&str>>())
            .bind(per_market.iter().map(|d| d.store).collect::<Vec<i64>>())
            .bind(per_market.iter().map(|d| d.available).collect::<Vec<i64>>())
            .bind(per_market.iter().map(|d| d.next == Availability::InStock).collect::<Vec<bool>>())
            .bind(per_market.iter().map(|d| d.transition.is_some()).collect::<Vec<bool>>())
            .execute(&mut **self)
            .await?;
        }
        let transitions: Vec<&ScopeDecision> = decisions
            .iter()
            .filter(|d| d.transition.is_some())
            .collect();
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "INSERT INTO availability_transitions (store_id, variant_id, market, to_state, quantity, cause, at) \
             SELECT u.store, u.variant, u.market, u.to_state, u.quantity, $1, $2 \
             FROM UNNEST($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bigint[]) WITH ORDINALITY \
               AS u(store, variant, market, to_state, quantity, n) \
             ORDER BY u.n RETURNING id, variant_id, market",
        )
        .bind(cause)
        .bind(now)
        .bind(transitions.iter().map(|d| d.store).collect::<Vec<i64>>())
        .bind(transitions.iter().map(|d| d.variant).collect::<Vec<i64>>())
        .bind(transitions.iter().map(|d| d.market.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(transitions.iter().map(|d| d.next.as_str()).collect::<Vec<&str>>())
        .bind(transitions.iter().map(|d| d.available).collect::<Vec<i64>>())
        .fetch_all(&mut **self)
        .await?;
        let transition_ids = transition_ids(rows);
        let restocks: Vec<(&ScopeDecision, i64, &str)> = decisions
            .iter()
            .filter_map(|d| {
                let policy = d.restock_policy.as_deref()?;
                let transition = transition_ids.get(&(d.variant, d.market_key().to_string()))?;
                Some((d, *transition, policy))
            })
            .collect();
        if restocks.is_empty() {
            return Ok(Vec::new());
        }
        // An earlier restock of the same scope still being released is over: the
        // variant sold out since, and this one takes its place.
        sqlx::query(
            "UPDATE restock_events e SET plan_state = 'superseded', finished_at = $1, lease_until = NULL \
             FROM UNNEST($2::bigint[], $3::text[]) AS u(variant, market) \
             WHERE e.variant_id = u.variant AND COALESCE(e.market, '') = u.market \
               AND e.plan_state IN ('pending', 'waiting')",
        )
        .bind(now)
        .bind(restocks.iter().map(|r| r.0.variant).collect::<Vec<i64>>())
        .bind(restocks.iter().map(|r| r.0.market_key()).collect::<Vec<&str>>())
        .execute(&mut **self)
        .await?;
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "INSERT INTO restock_events (store_id, variant_id, product_id, transition_id, quantity, available_until, \
                                         created_at, market, policy, plan_state, next_run_at) \
             SELECT u.store, u.variant, u.product, u.transition, u.quantity, u.until, $1, u.market, u.policy, \
                    'pending', $1 \
             FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], \
                         $8::text[], $9::text[]) WITH ORDINALITY \
               AS u(store, variant, product, transition, quantity, until, market, policy, n) \
             ORDER BY u.n RETURNING id, variant_id, market",
        )
        .bind(now)
        .bind(restocks.iter().map(|r| r.0.store).collect::<Vec<i64>>())
        .bind(restocks.iter().map(|r| r.0.variant).collect::<Vec<i64>>())
        .bind(restocks.iter().map(|r| r.0.product).collect::<Vec<i64>>())
        .bind(restocks.iter().map(|r| r.1).collect::<Vec<i64>>())
        .bind(restocks.iter().map(|r| r.0.available).collect::<Vec<i64>>())
        .bind(restocks.iter().map(|r| r.0.until).collect::<Vec<Option<i64>>>())
        .bind(restocks.iter().map(|r| r.0.market.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(restocks.iter().map(|r| r.2).collect::<Vec<&str>>())
        .fetch_all(&mut **self)
        .await?;
        Ok(restock_outcomes(&facts, &decisions, rows))
    }

    insert_rejection!();
}

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

/// A level to write: the update that set it last within the batch.
struct LevelWrite<'a> {
    variant: i64,
    update: &'a StockUpdate,
}

/// Folds a batch into the levels to write with the core's ordering rule, update by
/// update in batch order, against what is stored and what earlier updates of the
/// batch set: the same outcome as applying them one at a time.
fn fold_batch<'a>(
    updates: &'a [StockUpdate],
    variant_ids: &BTreeMap<String, i64>,
    stored: Vec<(i64, String, i64, Option<i64>, i64)>,
    out: &mut BatchOutcome,
) -> (Vec<LevelWrite<'a>>, BTreeSet<i64>) {
    let mut levels: BTreeMap<(i64, &str), (Level, Option<usize>)> = BTreeMap::new();
    let stored: BTreeMap<(i64, String), Level> = stored
        .into_iter()
        .map(|(v, loc, observed_at_ms, sequence, available)| {
            (
                (v, loc),
                Level {
                    available,
                    version: Version {
                        observed_at_ms,
                        sequence,
                    },
                },
            )
        })
        .collect();
    let mut touched = BTreeSet::new();
    for (i, u) in updates.iter().enumerate() {
        let Some(&vid) = variant_ids.get(u.sku.as_str()) else {
            continue;
        };
        let key = (vid, u.location.as_str());
        let current = match levels.get(&key) {
            Some((level, _)) => Some(level.clone()),
            None => stored.get(&(vid, u.location.clone())).cloned(),
        };
        // Stale or a replay: the core's ordering rule decides.
        let incoming = Level {
            available: u.available,
            version: u.version,
        };
        match restock_core::stock::apply(current.as_ref(), incoming) {
            Some(level) => {
                levels.insert(key, (level, Some(i)));
                out.applied += 1;
                touched.insert(vid);
            }
            None => {
                out.stale += 1;
                if let Some(level) = current {
                    levels.entry(key).or_insert((level, None));
                }
            }
        }
    }
    let writes = levels
        .into_iter()
        .filter_map(|((variant, _), (_, i))| {
            Some(LevelWrite {
                variant,
                update: &updates[i?],
            })
        })
        .collect();
    (writes, touched)
}

const UPSERT_LEVEL_SET: &str = "ON CONFLICT (variant_id, location) DO UPDATE SET \
       available = excluded.available, reserved = excluded.reserved, incoming = excluded.incoming, \
       incoming_at = excluded.incoming_at, available_until = excluded.available_until, \
       observed_at = excluded.observed_at, sequence = excluded.sequence, \
       source = excluded.source, updated_at = excluded.updated_at";

impl Db {
    /// Applies a batch of updates for one store in one transaction: levels first,
    /// then each touched variant's state machine once, on its total after the batch.
    /// Updates naming an unknown SKU are kept as rejections in the same transaction,
    /// as are `rejected` (input the caller could not parse). The batch is read and
    /// written set-wise, a handful of statements whatever its size; the decisions
    /// are the core's, update by update, as if applied one at a time.
    pub async fn apply_stock_batch(
        &self,
        store: StoreId,
        source: &str,
        updates: &[StockUpdate],
        rejected: &[NewRejection],
        now: i64,
    ) -> Result<BatchOutcome> {
        let mut out = BatchOutcome::default();
        let skus: Vec<&str> = updates
            .iter()
            .map(|u| u.sku.as_str())
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .collect();
        // Input the caller could not parse is kept too; then each touched variant is
        // judged once, on its levels after the batch.
        macro_rules! finish {
            ($tx:ident, $touched:ident) => {
                for r in rejected {
                    out.rejection_ids.push($tx.insert_rejection(r, now).await?);
                }
                let touched: Vec<VariantId> = $touched.into_iter().map(VariantId).collect();
                out.restocks = $tx.evaluate_variants(&touched, source, now).await?;
                $tx.commit().await?;
            };
        }
        macro_rules! reject_unknown {
            ($tx:ident, $variant_ids:ident) => {
                for (i, u) in updates.iter().enumerate() {
                    let sku = u.sku.as_str();
                    if $variant_ids.contains_key(sku) {
                        continue;
                    }
                    out.unknown_sku.push(i);
                    let payload =
                        serde_json::to_string(&crate::intake::api::StockItem::from_update(u))
                            .unwrap_or_default();
                    let id = $tx
                        .insert_rejection(
                            &NewRejection {
                                store: Some(store),
                                source: source.to_string(),
                                reason_code: "unknown_sku".into(),
                                reason: format!("no variant with SKU {sku:?} in this store"),
                                payload,
                            },
                            now,
                        )
                        .await?;
                    out.rejection_ids.push(id);
                }
            };
        }
        match self {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let found: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, sku FROM variants WHERE store_id = $1 AND sku IN (SELECT value FROM json_each($2))",
                )
                .bind(store.0)
                .bind(json(&skus))
                .fetch_all(&mut *tx)
                .await?;
                let variant_ids: BTreeMap<String, i64> =
                    found.into_iter().map(|(id, sku)| (sku, id)).collect();
                reject_unknown!(tx, variant_ids);
                let ids: BTreeSet<i64> = variant_ids.values().copied().collect();
                let stored = sqlx::query_as(
                    "SELECT variant_id, location, observed_at, sequence, available FROM stock_levels \
                     WHERE variant_id IN (SELECT value FROM json_each($1))",
                )
                .bind(json(&ids))
                .fetch_all(&mut *tx)
                .await?;
                let (writes, touched) = fold_batch(updates, &variant_ids, stored, &mut out);
                if !writes.is_empty() {
                    let rows: Vec<_> = writes
                        .iter()
                        .map(|w| {
                            let u = w.update;
                            (
                                w.variant,
                                &u.location,
                                u.available,
                                u.reserved,
                                u.incoming,
                                u.incoming_at_ms,
                                u.available_until_ms,
                                u.version.observed_at_ms,
                                u.version.sequence,
                            )
                        })
                        .collect();
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO stock_levels (variant_id, location, store_id, available, reserved, incoming, incoming_at, \
                                                   available_until, observed_at, sequence, source, updated_at) \
                         SELECT j.value ->> 0, j.value ->> 1, $1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, \
                                j.value ->> 6, j.value ->> 7, j.value ->> 8, $2, $3 \
                         FROM json_each($4) j WHERE true {UPSERT_LEVEL_SET}"
                    )))
                    .bind(store.0)
                    .bind(source)
                    .bind(now)
                    .bind(json(&rows))
                    .execute(&mut *tx)
                    .await?;
                }
                finish!(tx, touched);
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                // Locked in id order before anything is read: a concurrent batch (or
                // order) touching the same variants waits, then reads what this one
                // wrote, so neither applies an update older than the other's.
                let found: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, sku FROM variants WHERE store_id = $1 AND sku IN (SELECT unnest($2::text[])) \
                     ORDER BY id FOR UPDATE",
                )
                .bind(store.0)
                .bind(&skus)
                .fetch_all(&mut *tx)
                .await?;
                let variant_ids: BTreeMap<String, i64> =
                    found.into_iter().map(|(id, sku)| (sku, id)).collect();
                reject_unknown!(tx, variant_ids);
                let ids: Vec<i64> = variant_ids.values().copied().collect();
                let stored = sqlx::query_as(
                    "SELECT l.variant_id, l.location, l.observed_at, l.sequence, l.available \
                     FROM UNNEST($1::bigint[]) AS u(id) JOIN stock_levels l ON l.variant_id = u.id",
                )
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                let (writes, touched) = fold_batch(updates, &variant_ids, stored, &mut out);
                if !writes.is_empty() {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO stock_levels (variant_id, location, store_id, available, reserved, incoming, incoming_at, \
                                                   available_until, observed_at, sequence, source, updated_at) \
                         SELECT u.variant, u.location, $1, u.available, u.reserved, u.incoming, u.incoming_at, \
                                u.until, u.observed_at, u.sequence, $2, $3 \
                         FROM UNNEST($4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
                                     $10::bigint[], $11::bigint[], $12::bigint[]) \
                           AS u(variant, location, available, reserved, incoming, incoming_at, until, observed_at, sequence) \
                         {UPSERT_LEVEL_SET}"
                    )))
                    .bind(store.0)
                    .bind(source)
                    .bind(now)
                    .bind(writes.iter().map(|w| w.variant).collect::<Vec<i64>>())
                    .bind(writes.iter().map(|w| w.update.location.as_str()).collect::<Vec<&str>>())
                    .bind(writes.iter().map(|w| w.update.available).collect::<Vec<i64>>())
                    .bind(writes.iter().map(|w| w.update.reserved).collect::<Vec<i64>>())
                    .bind(writes.iter().map(|w| w.update.incoming).collect::<Vec<Option<i64>>>())
                    .bind(writes.iter().map(|w| w.update.incoming_at_ms).collect::<Vec<Option<i64>>>())
                    .bind(writes.iter().map(|w| w.update.available_until_ms).collect::<Vec<Option<i64>>>())
                    .bind(writes.iter().map(|w| w.update.version.observed_at_ms).collect::<Vec<i64>>())
                    .bind(writes.iter().map(|w| w.update.version.sequence).collect::<Vec<Option<i64>>>())
                    .execute(&mut *tx)
                    .await?;
                }
                finish!(tx, touched);
            }
        }
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
