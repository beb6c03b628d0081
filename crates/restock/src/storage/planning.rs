//! Planning storage: claims restocks to plan, fetches pages of their waiting lists
//! with each shopper's facts, and writes the core planner's decisions. It decides
//! nothing: `restock_core::planner` does, in `crate::planning`.
//!
//! A waiting list is read in sign-up order by keyset (`created_at`, `id`) through the
//! partial indexes of the variant's and the product's waiting sign-ups; each page's
//! decisions and the position reached commit together, so a crash resumes where the
//! last page ended and nobody is planned twice (the outbox's unique key on restock,
//! shopper and purpose stands behind that).

use restock_core::ids::{
    ContactPointId, ProductId, RestockEventId, ShopperId, StoreId, SubscriptionId, VariantId,
};
use restock_core::planner::{Candidate, Contact, Decision, Outcome, Position, Tally};
use restock_core::policy::{Policy, Release};
use restock_core::values::{Channel, TimeZone};

use super::demand::parse_opt_outs;
use super::{Db, Dialect, Result, with_pool};

/// A restock claimed for planning.
#[derive(Debug, Clone)]
pub struct PlanJob {
    pub event: RestockEventId,
    pub store: StoreId,
    pub variant: VariantId,
    pub product: ProductId,
    pub market: Option<String>,
    pub category: Option<String>,
    pub policy: Policy,
    pub created_at: i64,
    /// The last wave started (0: none yet).
    pub wave: u32,
    pub cursor: Option<Position>,
    pub tally: Tally,
    pub attempts: i64,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    store_id: i64,
    variant_id: i64,
    product_id: i64,
    market: Option<String>,
    category: Option<String>,
    policy: Option<String>,
    created_at: i64,
    wave: i64,
    cursor_at: Option<i64>,
    cursor_id: Option<i64>,
    eligible_count: i64,
    held_out_count: i64,
    plan_attempts: i64,
}

/// One waiting sign-up with one of its shopper's contact points. Read as a row
/// (PostgreSQL) or, field for field in this order, as a JSON array (SQLite, which
/// hands a page over far faster as one JSON document than as rows).
#[derive(sqlx::FromRow, serde::Deserialize)]
struct FactRow {
    id: i64,
    shopper_id: i64,
    created_at: i64,
    last_signup_at: i64,
    tier: Option<String>,
    time_zone: Option<String>,
    preferred_channel: Option<String>,
    opted_out_at: Option<i64>,
    opt_outs: Option<String>,
    cp_id: Option<i64>,
    cp_channel: Option<String>,
    cp_address: Option<String>,
    cp_consent_at: Option<i64>,
    cp_withdrawn_at: Option<i64>,
    cp_suppressed_at: Option<i64>,
    last_purchase: Option<i64>,
    in_flight: i64,
    decided: i64,
    message_times: Option<String>,
}

/// What a page fetch needs beyond the job: which facts are worth their cost.
#[derive(Debug, Clone, Copy)]
pub struct FactNeeds {
    /// Another restock of this product is recent: look for alerts in flight.
    pub in_flight: bool,
    /// Someone may already be decided beyond the cursor (waves, early access, or a
    /// shopper waiting at both variant and product level).
    pub decided: bool,
}

/// Counts written with a page of decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub planned: u64,
    pub deferred: u64,
    pub held: u64,
    pub held_out: u64,
}

const FACT_COLUMNS: &str = "w.id, w.shopper_id, w.created_at, w.last_signup_at, \
    sh.tier, sh.time_zone, sh.preferred_channel, sh.opted_out_at, sh.opt_outs, \
    cp.id AS cp_id, cp.channel AS cp_channel, cp.address AS cp_address, cp.consent_at AS cp_consent_at, \
    cp.consent_withdrawn_at AS cp_withdrawn_at, cp.suppressed_at AS cp_suppressed_at, \
    CASE WHEN sh.last_order_at >= $5 THEN (SELECT MAX(ol.ordered_at) FROM order_lines ol \
        WHERE ol.shopper_id = w.shopper_id AND ol.ordered_at >= $5 AND (ol.variant_id = $2 OR ol.product_id = $3)) END AS last_purchase, \
    CASE WHEN $6 THEN (SELECT COUNT(*) FROM notifications n WHERE n.shopper_id = w.shopper_id \
        AND n.state IN ('pending', 'running') AND n.purpose = 'alert' \
        AND (n.subscription_id = w.id OR n.extra_subscription_id = w.id)) ELSE 0 END AS in_flight, \
    CASE WHEN $7 THEN (SELECT COUNT(*) FROM notifications n WHERE n.restock_event_id = $1 \
        AND n.shopper_id = w.shopper_id AND n.purpose = 'alert') ELSE 0 END AS decided";

/// The facts query around a source of waiting sign-ups `w`. `$8` is the cap's
/// horizon (messages after it count); `{agg}` the dialect's string aggregate. With
/// `lateral` (PostgreSQL) the shopper and contact lookups are per-row index probes:
/// a plain join lets the planner hash-join a page against every contact point.
fn facts_sql(source: &str, agg: &str, lateral: bool) -> String {
    let joins = if lateral {
        "JOIN LATERAL (SELECT * FROM shoppers x WHERE x.id = w.shopper_id) sh ON TRUE \
         LEFT JOIN LATERAL (SELECT * FROM contact_points y WHERE y.shopper_id = w.shopper_id) cp ON TRUE"
    } else {
        "JOIN shoppers sh ON sh.id = w.shopper_id \
         LEFT JOIN contact_points cp ON cp.shopper_id = w.shopper_id"
    };
    // SQLite's nested loops already give each sign-up's contact rows together and in
    // page order (and the page is sorted again after parsing); sorting by contact too
    // would cost a temporary B-tree per page.
    let order = if lateral {
        "w.created_at, w.id, cp.id"
    } else {
        "w.created_at, w.id"
    };
    format!(
        "SELECT {FACT_COLUMNS}, \
           CASE WHEN $8 > 0 THEN (SELECT {agg} FROM notifications n WHERE n.shopper_id = w.shopper_id \
             AND n.state IN ('pending', 'running', 'done') AND n.purpose IN ('alert', 'reminder') \
             AND COALESCE(n.sent_at, n.due_at) > $8) END AS message_times \
         FROM ({source}) w {joins} \
         ORDER BY {order}"
    )
}

/// The columns of [`FactRow`], in order, for SQLite's JSON page.
const FACT_FIELDS: &str = "f.id, f.shopper_id, f.created_at, f.last_signup_at, f.tier, f.time_zone, \
    f.preferred_channel, f.opted_out_at, f.opt_outs, f.cp_id, f.cp_channel, f.cp_address, f.cp_consent_at, \
    f.cp_withdrawn_at, f.cp_suppressed_at, f.last_purchase, f.in_flight, f.decided, f.message_times";

/// Phase 2: the waiting list after the cursor, in sign-up order. `$4` is the
/// market ('' for everywhere), `$9`/`$10` the cursor, `$11` the page size. Each list
/// is limited on its own before the two are merged, so a page reads at most two
/// pages of index entries whatever the length of the list.
const WAITING_SOURCE: &str = "SELECT id, shopper_id, created_at, last_signup_at FROM ( \
      SELECT * FROM (SELECT s.id, s.shopper_id, s.created_at, s.last_signup_at FROM subscriptions s \
        WHERE s.variant_id = $2 AND COALESCE(s.market, '') = $4 AND s.status = 'waiting' \
          AND (s.created_at, s.id) > ($9, $10) ORDER BY s.created_at, s.id LIMIT $11) v \
      UNION ALL \
      SELECT * FROM (SELECT s.id, s.shopper_id, s.created_at, s.last_signup_at FROM subscriptions s \
        WHERE s.product_id = $3 AND s.variant_id IS NULL AND COALESCE(s.market, '') = $4 AND s.status = 'waiting' \
          AND (s.created_at, s.id) > ($9, $10) ORDER BY s.created_at, s.id LIMIT $11) p \
    ) u ORDER BY created_at, id LIMIT $11";

/// Phase 1: early-access shoppers of one tier not yet decided for this restock.
/// `$9` is the store, `$10` the tier, `$11` the page size.
const EARLY_SOURCE: &str = "SELECT s.id, s.shopper_id, s.created_at, s.last_signup_at \
    FROM shoppers t JOIN subscriptions s ON s.shopper_id = t.id \
    WHERE t.store_id = $9 AND t.tier = $10 AND s.status = 'waiting' AND COALESCE(s.market, '') = $4 \
      AND (s.variant_id = $2 OR (s.product_id = $3 AND s.variant_id IS NULL)) \
      AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.restock_event_id = $1 \
                      AND n.shopper_id = s.shopper_id AND n.purpose = 'alert') \
    ORDER BY s.created_at, s.id LIMIT $11";

/// Rows (one per sign-up and contact point) grouped into candidates, in order.
fn candidates(rows: Vec<FactRow>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut last_sub: Option<i64> = None;
    for r in rows {
        let contact = match (r.cp_id, r.cp_channel.as_deref(), r.cp_address) {
            (Some(id), Some(ch), Some(address)) => Channel::parse(ch).ok().map(|channel| Contact {
                id: ContactPointId(id),
                channel,
                address,
                consent: r.cp_consent_at.is_some() && r.cp_withdrawn_at.is_none(),
                suppressed: r.cp_suppressed_at.is_some(),
            }),
            _ => None,
        };
        if last_sub == Some(r.id)
            && let Some(c) = out.last_mut()
        {
            c.contacts.extend(contact);
            continue;
        }
        last_sub = Some(r.id);
        let message_times_ms = r
            .message_times
            .as_deref()
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_default();
        out.push(Candidate {
            shopper: ShopperId(r.shopper_id),
            subscriptions: vec![SubscriptionId(r.id)],
            position: Position {
                signed_up_at_ms: r.created_at,
                subscription: SubscriptionId(r.id),
            },
            last_signup_at_ms: r.last_signup_at,
            tier: r.tier,
            time_zone: r.time_zone.as_deref().and_then(|t| TimeZone::parse(t).ok()),
            preferred_channel: r
                .preferred_channel
                .as_deref()
                .and_then(|c| Channel::parse(c).ok()),
            opt_outs: parse_opt_outs(r.opted_out_at, r.opt_outs.as_deref()),
            contacts: contact.into_iter().collect(),
            last_purchase_ms: r.last_purchase,
            message_times_ms,
            in_flight: r.in_flight > 0,
            decided: r.decided > 0,
        });
    }
    out
}

/// One outbox row to write.
struct Row<'a> {
    shopper: i64,
    subscription: i64,
    extra: Option<i64>,
    channel: &'a str,
    contact: Option<i64>,
    recipient: &'a str,
    wave: i64,
    state: &'static str,
    reason: Option<&'static str>,
    due_at: i64,
}

fn rows(decisions: &[Decision]) -> Vec<Row<'_>> {
    decisions
        .iter()
        .map(|d| {
            let subscription = d.position.subscription.0;
            let extra = d
                .subscriptions
                .iter()
                .map(|s| s.0)
                .find(|s| *s != subscription);
            match &d.outcome {
                Outcome::Send(s) => Row {
                    shopper: d.shopper.0,
                    subscription,
                    extra,
                    channel: s.channel.as_str(),
                    contact: Some(s.contact.0),
                    recipient: &s.address,
                    wave: i64::from(s.wave),
                    state: "pending",
                    reason: s.deferred.map(|r| r.as_str()),
                    due_at: s.not_before_ms,
                },
                Outcome::Hold(reason) => Row {
                    shopper: d.shopper.0,
                    subscription,
                    extra,
                    channel: "",
                    contact: None,
                    recipient: "",
                    wave: 0,
                    state: "held",
                    reason: Some(reason.as_str()),
                    due_at: 0,
                },
            }
        })
        .collect()
}

/// Rows per INSERT statement on PostgreSQL.
const INSERT_CHUNK: usize = 10_000;

impl Db {
    /// Claims the next restock due for planning, under a lease so one worker plans
    /// it at a time. Restocks whose lease expired (their worker died) are taken over.
    pub async fn claim_plan_job(&self, now: i64, lease_ms: i64) -> Result<Option<PlanJob>> {
        let row: Option<JobRow> = with_pool!(self, pool => {
            let sql = format!(
                "UPDATE restock_events SET lease_until = $2, plan_attempts = plan_attempts + 1 \
                 WHERE id = (SELECT id FROM restock_events \
                             WHERE plan_state IN ('pending', 'waiting') AND next_run_at <= $1 \
                               AND (lease_until IS NULL OR lease_until < $1) \
                             ORDER BY next_run_at, id LIMIT 1 {}) \
                 RETURNING id, store_id, variant_id, product_id, market, \
                   (SELECT c.handle FROM products p JOIN categories c ON c.id = p.category_id \
                    WHERE p.id = restock_events.product_id) AS category, \
                   policy, created_at, wave, cursor_at, cursor_id, eligible_count, held_out_count, plan_attempts",
                pool.skip_locked()
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(now + lease_ms)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|r| PlanJob {
            event: RestockEventId(r.id),
            store: StoreId(r.store_id),
            variant: VariantId(r.variant_id),
            product: ProductId(r.product_id),
            market: r.market,
            category: r.category,
            policy: super::stock::parse_restock_policy(r.policy.as_deref()),
            created_at: r.created_at,
            wave: u32::try_from(r.wave).unwrap_or(0),
            cursor: match (r.cursor_at, r.cursor_id) {
                (Some(at), Some(id)) => Some(Position {
                    signed_up_at_ms: at,
                    subscription: SubscriptionId(id),
                }),
                _ => None,
            },
            tally: Tally {
                eligible: r.eligible_count.max(0) as u64,
                held_out: r.held_out_count.max(0) as u64,
            },
            attempts: r.plan_attempts,
        }))
    }

    /// The restock's scope now: in stock, and how many are available to sell.
    pub async fn scope_stock(&self, job: &PlanJob) -> Result<(bool, i64)> {
        with_pool!(self, pool => {
            let row: Option<(bool, i64)> = match &job.market {
                None => sqlx::query_as("SELECT in_stock, available FROM variants WHERE id = $1")
                    .bind(job.variant.0)
                    .fetch_optional(pool)
                    .await?,
                Some(m) => sqlx::query_as(
                    "SELECT in_stock, available FROM variant_markets WHERE variant_id = $1 AND market = $2",
                )
                .bind(job.variant.0)
                .bind(m)
                .fetch_optional(pool)
                .await?,
            };
            Ok(row.unwrap_or((false, 0)))
        })
    }

    /// Which costly facts this restock's pages need.
    pub async fn fact_needs(&self, job: &PlanJob, now: i64) -> Result<FactNeeds> {
        let market = job.market.clone().unwrap_or_default();
        with_pool!(self, pool => {
            let recent: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM restock_events WHERE product_id = $1 AND id <> $2 AND created_at >= $3 LIMIT 1",
            )
            .bind(job.product.0)
            .bind(job.event.0)
            .bind(now - 7 * 24 * 3_600_000)
            .fetch_optional(pool)
            .await?;
            let product_level: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM subscriptions WHERE product_id = $1 AND variant_id IS NULL \
                 AND COALESCE(market, '') = $2 AND status = 'waiting' LIMIT 1",
            )
            .bind(job.product.0)
            .bind(&market)
            .fetch_optional(pool)
            .await?;
            Ok(FactNeeds {
                in_flight: recent.is_some(),
                decided: product_level.is_some()
                    || !matches!(job.policy.release, Release::AllAtOnce)
                    || !job.policy.early_access_tiers.is_empty(),
            })
        })
    }

    /// The next page of the waiting list after the job's cursor.
    pub async fn waiting_page(
        &self,
        job: &PlanJob,
        cursor: Option<Position>,
        needs: FactNeeds,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Candidate>> {
        let (at, id) = cursor.map_or((i64::MIN, i64::MIN), |c| {
            (c.signed_up_at_ms, c.subscription.0)
        });
        self.fetch_facts(job, WAITING_SOURCE, needs, now, (at, id), None, limit)
            .await
    }

    /// Early-access shoppers of one tier not yet decided for the job's restock.
    pub async fn early_access_page(
        &self,
        job: &PlanJob,
        tier: &str,
        needs: FactNeeds,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Candidate>> {
        self.fetch_facts(
            job,
            EARLY_SOURCE,
            needs,
            now,
            (job.store.0, 0),
            Some(tier),
            limit,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_facts(
        &self,
        job: &PlanJob,
        source: &str,
        needs: FactNeeds,
        now: i64,
        p9_p10: (i64, i64),
        tier: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Candidate>> {
        let market = job.market.clone().unwrap_or_default();
        let purchase_since = job
            .policy
            .recent_purchase_window_ms
            .map_or(i64::MAX, |w| now.saturating_sub(w));
        let cap_since = job
            .policy
            .frequency_cap
            .map_or(0, |c| now.saturating_sub(c.window_ms).max(1));
        macro_rules! bind_all {
            ($q:expr) => {{
                let q = $q
                    .bind(job.event.0)
                    .bind(job.variant.0)
                    .bind(job.product.0)
                    .bind(&market)
                    .bind(purchase_since)
                    .bind(needs.in_flight)
                    .bind(needs.decided)
                    .bind(cap_since);
                let q = match tier {
                    Some(t) => q.bind(p9_p10.0).bind(t),
                    None => q.bind(p9_p10.0).bind(p9_p10.1),
                };
                q.bind(limit)
            }};
        }
        let rows: Vec<FactRow> = match self {
            Db::Sqlite(pool) => {
                let facts = facts_sql(
                    source,
                    &pool.string_agg("CAST(COALESCE(n.sent_at, n.due_at) AS TEXT)"),
                    false,
                );
                let sql =
                    format!("SELECT json_group_array(json_array({FACT_FIELDS})) FROM ({facts}) f");
                let json: String = bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)))
                    .fetch_one(pool)
                    .await?;
                let mut rows: Vec<FactRow> = serde_json::from_str(&json).map_err(|e| {
                    super::StorageError::Malformed(format!("a page of waiting shoppers: {e}"))
                })?;
                // The aggregate keeps the page's order; make sure of it (cheap when sorted).
                rows.sort_by_key(|r| (r.created_at, r.id, r.cp_id));
                rows
            }
            Db::Postgres(pool) => {
                let sql = facts_sql(
                    source,
                    &pool.string_agg("CAST(COALESCE(n.sent_at, n.due_at) AS TEXT)"),
                    true,
                );
                bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql)))
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(candidates(rows))
    }

    /// Starts the job's next wave: records it and how much stock it was sized on.
    pub async fn start_wave(
        &self,
        job: &PlanJob,
        wave: u32,
        available: i64,
        capacity: Option<u64>,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO restock_waves (restock_event_id, wave, started_at, available, capacity) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (restock_event_id, wave) DO NOTHING",
            )
            .bind(job.event.0)
            .bind(i64::from(wave))
            .bind(now)
            .bind(available)
            .bind(capacity.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE restock_events SET wave = $2 WHERE id = $1")
                .bind(job.event.0)
                .bind(i64::from(wave))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Writes one page of decisions with the position reached and the running
    /// counts, in one transaction, and renews the job's lease.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_decisions(
        &self,
        job: &PlanJob,
        wave: u32,
        decisions: &[Decision],
        cursor: Option<Position>,
        tally: Tally,
        now: i64,
        lease_ms: i64,
    ) -> Result<PageCounts> {
        let rows = rows(decisions);
        let mut counts = PageCounts::default();
        for d in decisions {
            match &d.outcome {
                Outcome::Send(s) => {
                    counts.planned += 1;
                    counts.deferred += u64::from(s.deferred.is_some());
                }
                Outcome::Hold(restock_core::planner::HoldReason::Holdout) => counts.held_out += 1,
                Outcome::Hold(_) => counts.held += 1,
            }
        }
        // Decisions go over as one parameter per page: a JSON document SQLite unpacks
        // with json_each, or arrays PostgreSQL unnests; binding each value on its own
        // costs more than writing the rows.
        macro_rules! finish_page {
            ($tx:expr) => {{
                let mut tx = $tx;
            sqlx::query(
                "UPDATE restock_events SET planned_count = planned_count + $2, held_count = held_count + $3, \
                   deferred_count = deferred_count + $4, eligible_count = $5, held_out_count = $6, \
                   cursor_at = COALESCE($7, cursor_at), cursor_id = COALESCE($8, cursor_id), lease_until = $9 \
                 WHERE id = $1",
            )
            .bind(job.event.0)
            .bind(counts.planned as i64)
            .bind(counts.held as i64)
            .bind(counts.deferred as i64)
            .bind(tally.eligible as i64)
            .bind(tally.held_out as i64)
            .bind(cursor.map(|c| c.signed_up_at_ms))
            .bind(cursor.map(|c| c.subscription.0))
            .bind(now + lease_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE restock_waves SET planned = planned + $3, held = held + $4 \
                 WHERE restock_event_id = $1 AND wave = $2",
            )
            .bind(job.event.0)
            .bind(i64::from(wave))
            .bind(counts.planned as i64)
            .bind((counts.held + counts.held_out) as i64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            }};
        }
        let due = |r: &Row<'_>| if r.state == "held" { now } else { r.due_at };
        match self {
            Db::Sqlite(pool) => {
                // Most rows of a large restock are plain sends (due now, one sign-up):
                // they go as [subscription, contact] pairs and the rest of the row is
                // read back from the rows it came from; every other decision goes whole.
                let plain = |r: &Row<'_>| {
                    r.state == "pending"
                        && r.extra.is_none()
                        && r.reason.is_none()
                        && r.due_at == now
                };
                let pairs: Vec<[i64; 2]> = rows
                    .iter()
                    .filter(|r| plain(r))
                    .filter_map(|r| r.contact.map(|c| [r.subscription, c]))
                    .collect();
                let doc: Vec<serde_json::Value> = rows
                    .iter()
                    .filter(|r| !(plain(r) && r.contact.is_some()))
                    .map(|r| {
                        serde_json::json!([
                            r.shopper,
                            r.subscription,
                            r.extra,
                            r.channel,
                            r.contact,
                            r.recipient,
                            r.wave,
                            r.state,
                            r.reason,
                            due(r)
                        ])
                    })
                    .collect();
                let doc = serde_json::Value::Array(doc).to_string();
                let mut tx = pool.begin_write().await?;
                if !pairs.is_empty() {
                    sqlx::query(
                        "INSERT INTO notifications (store_id, restock_event_id, shopper_id, subscription_id, \
                           variant_id, purpose, channel, contact_point_id, recipient, wave, state, attempts, \
                           due_at, planned_at, updated_at) \
                         SELECT $1, $2, s.shopper_id, s.id, $3, 'alert', cp.channel, cp.id, cp.address, $4, \
                           'pending', 0, $5, $5, $5 \
                         FROM json_each($6) j JOIN subscriptions s ON s.id = j.value ->> 0 \
                         JOIN contact_points cp ON cp.id = j.value ->> 1",
                    )
                    .bind(job.store.0)
                    .bind(job.event.0)
                    .bind(job.variant.0)
                    .bind(i64::from(wave))
                    .bind(now)
                    .bind(serde_json::to_string(&pairs).unwrap_or_default())
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO notifications (store_id, restock_event_id, shopper_id, subscription_id, \
                       extra_subscription_id, variant_id, purpose, channel, contact_point_id, recipient, wave, \
                       state, reason, attempts, due_at, planned_at, updated_at) \
                     SELECT $1, $2, j.value ->> 0, j.value ->> 1, j.value ->> 2, $3, 'alert', j.value ->> 3, \
                       j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8, 0, j.value ->> 9, $4, $4 \
                     FROM json_each($5) j",
                )
                .bind(job.store.0)
                .bind(job.event.0)
                .bind(job.variant.0)
                .bind(now)
                .bind(doc)
                .execute(&mut *tx)
                .await?;
                finish_page!(tx);
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                for chunk in rows.chunks(INSERT_CHUNK) {
                    sqlx::query(
                        "INSERT INTO notifications (store_id, restock_event_id, shopper_id, subscription_id, \
                           extra_subscription_id, variant_id, purpose, channel, contact_point_id, recipient, wave, \
                           state, reason, attempts, due_at, planned_at, updated_at) \
                         SELECT $1, $2, u.shopper, u.sub, u.extra, $3, 'alert', u.channel, u.contact, u.recipient, \
                           u.wave, u.state, u.reason, 0, u.due, $4, $4 \
                         FROM UNNEST($5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::text[], \
                                     $11::bigint[], $12::text[], $13::text[], $14::bigint[]) \
                           AS u(shopper, sub, extra, channel, contact, recipient, wave, state, reason, due)",
                    )
                    .bind(job.store.0)
                    .bind(job.event.0)
                    .bind(job.variant.0)
                    .bind(now)
                    .bind(chunk.iter().map(|r| r.shopper).collect::<Vec<i64>>())
                    .bind(chunk.iter().map(|r| r.subscription).collect::<Vec<i64>>())
                    .bind(chunk.iter().map(|r| r.extra).collect::<Vec<Option<i64>>>())
                    .bind(chunk.iter().map(|r| r.channel).collect::<Vec<&str>>())
                    .bind(chunk.iter().map(|r| r.contact).collect::<Vec<Option<i64>>>())
                    .bind(chunk.iter().map(|r| r.recipient).collect::<Vec<&str>>())
                    .bind(chunk.iter().map(|r| r.wave).collect::<Vec<i64>>())
                    .bind(chunk.iter().map(|r| r.state).collect::<Vec<&str>>())
                    .bind(chunk.iter().map(|r| r.reason).collect::<Vec<Option<&str>>>())
                    .bind(chunk.iter().map(due).collect::<Vec<i64>>())
                    .execute(&mut *tx)
                    .await?;
                }
                finish_page!(tx);
            }
        }
        Ok(counts)
    }

    /// Ends a planning run: 'waiting' (until `next_run_at`), 'done', 'sold_out' or
    /// 'failed'; the lease is given back.
    pub async fn finish_plan_run(
        &self,
        job: &PlanJob,
        state: &str,
        next_run_at: Option<i64>,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE restock_events SET plan_state = $2, next_run_at = $3, lease_until = NULL, \
                   plan_attempts = CASE WHEN $2 = 'waiting' THEN 0 ELSE plan_attempts END, \
                   last_error = $4, finished_at = CASE WHEN $2 IN ('done', 'sold_out', 'failed') THEN $5 END \
                 WHERE id = $1",
            )
            .bind(job.event.0)
            .bind(state)
            .bind(next_run_at)
            .bind(error)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records a failed planning run; the lease is left to expire so the run is
    /// tried again later.
    pub async fn plan_run_failed(&self, job: &PlanJob, error: &str) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE restock_events SET last_error = $2 WHERE id = $1")
                .bind(job.event.0)
                .bind(error)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The earliest time a restock is due for planning, for the planner's sleep.
    pub async fn next_plan_due(&self) -> Result<Option<i64>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT MIN(next_run_at) FROM restock_events WHERE plan_state IN ('pending', 'waiting')",
            )
            .fetch_one(pool)
            .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of the waiting list must read only that variant's (or product's)
    /// waiting sign-ups: each arm searches its partial index and nothing is scanned.
    #[tokio::test]
    async fn a_waiting_page_reads_only_the_waiting_list() {
        let dir =
            std::env::temp_dir().join(format!("restock-plan-{}", crate::util::random_token(6)));
        let db = Db::connect_url(&format!("sqlite://{}/p.db", dir.display()), 2)
            .await
            .expect("db");
        db.migrate().await.expect("migrate");
        let Db::Sqlite(pool) = &db else {
            unreachable!("sqlite")
        };
        let sql = facts_sql(
            WAITING_SOURCE,
            &pool.string_agg("CAST(COALESCE(n.sent_at, n.due_at) AS TEXT)"),
            false,
        );
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind(1_i64)
                .bind(1_i64)
                .bind(1_i64)
                .bind("")
                .bind(0_i64)
                .bind(true)
                .bind(true)
                .bind(1_i64)
                .bind(0_i64)
                .bind(0_i64)
                .bind(10_i64)
                .fetch_all(pool)
                .await
                .expect("explain");
        let steps: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        for index in [
            "subscriptions_waiting_variant",
            "subscriptions_waiting_product",
        ] {
            assert!(
                steps.iter().any(|s| s.contains(index)),
                "{index} not used: {steps:?}"
            );
        }
        // The only scans allowed are of the pages themselves (co-routines), never of a
        // table, and each list is read in index order, never sorted whole.
        let tables = [
            "subscriptions",
            "shoppers",
            "contact_points",
            "notifications",
            "order_lines",
        ];
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("SCAN") && tables.iter().any(|t| s.contains(t))),
            "a table scan on the hot path: {steps:?}"
        );
        assert!(
            steps.iter().any(|s| s.contains("created_at>?")),
            "the cursor does not bound the index search: {steps:?}"
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
