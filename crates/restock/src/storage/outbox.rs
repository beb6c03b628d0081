//! The outbox: claiming due notifications under a lease and recording what happened.
//!
//! Workers claim, commit, send, then record — no transaction or row lock is held
//! across a network call. Every record is fenced by the attempt number it claimed,
//! so a worker whose lease expired and whose row was taken over cannot overwrite the
//! newer attempt's outcome. A row whose lease expired but that no one has claimed
//! again (still `pending` at the same attempt) still takes its outcome: a send that
//! reached the relay while the database was away is recorded, not sent twice.

use restock_core::ids::{NotificationId, StoreId};

use super::{Db, Dialect, Result, with_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub store_id: i64,
    pub subscription_id: i64,
    pub extra_subscription_id: Option<i64>,
    pub shopper_id: i64,
    pub restock_event_id: i64,
    pub variant_id: i64,
    pub purpose: String,
    pub channel: String,
    pub contact_point_id: Option<i64>,
    pub recipient: String,
    pub attempts: i64,
    pub planned_at: i64,
}

/// What replaying a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Back in the queue with fresh attempts.
    Queued,
    /// Only dead or failed notifications are replayed; this one is in that state.
    NotReplayable(String),
}

/// Everything a message about one notification shows, read once per batch for each
/// restock the batch's notifications belong to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageContext {
    pub store_name: String,
    pub product_title: String,
    pub product_description: String,
    pub product_image_url: Option<String>,
    pub product_url: String,
    pub product_price_minor: i64,
    pub currency: String,
    pub sku: String,
    pub variant_title: String,
    pub variant_options: String,
    pub variant_price_minor: Option<i64>,
    pub variant_image_url: Option<String>,
    pub variant_url: Option<String>,
    pub in_stock: bool,
    pub available: i64,
    pub available_until: Option<i64>,
}

/// What the last check before a send reads about a restock, beside its message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RestockFacts {
    pub restock_event_id: i64,
    /// When the restock was recorded (for the restock-to-send latency).
    pub restock_at: i64,
    pub policy: Option<String>,
    pub category: Option<String>,
    pub scope_in_stock: bool,
    #[sqlx(flatten)]
    pub message: MessageContext,
}

/// What the last check before a send reads about one notification's shopper.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShopperFacts {
    pub notification_id: i64,
    pub live_subscriptions: i64,
    pub opted_out_at: Option<i64>,
    pub opt_outs: Option<String>,
    pub time_zone: Option<String>,
    pub consent_at: Option<i64>,
    pub consent_withdrawn_at: Option<i64>,
    pub contact_suppressed_at: Option<i64>,
    pub bought: i64,
    pub clicked: i64,
}

/// The facts for a batch of claimed notifications.
#[derive(Debug, Default)]
pub struct BatchFacts {
    /// By restock event.
    pub restocks: std::collections::HashMap<i64, std::sync::Arc<RestockFacts>>,
    /// By notification.
    pub shoppers: std::collections::HashMap<i64, ShopperFacts>,
}

/// Ids as a JSON array of one-element rows, for [`Dialect::json_rows`].
fn json_id_rows(ids: &[i64]) -> String {
    serde_json::Value::from(ids.iter().map(|i| vec![*i]).collect::<Vec<_>>()).to_string()
}

/// What to write for one claimed notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Accepted by the channel; for an alert, its reminder due then (if any).
    Sent { reminder_at: Option<i64> },
    /// Back to pending, due again then.
    Retry { due_at: i64, error: String },
    /// Terminal: `failed`, `dead` or `skipped`.
    Final {
        state: &'static str,
        reason: Option<&'static str>,
        error: String,
    },
    /// Not now (quiet hours, the frequency cap): the attempt is not counted.
    Deferred { due_at: i64, reason: &'static str },
    /// A permanent failure: the address is suppressed, its other pending messages skipped.
    FailedAndSuppress { error: String },
    /// Given back unattempted (the worker is stopping).
    Release,
}

/// One outcome to record, fenced by the attempt that claimed the row.
#[derive(Debug, Clone)]
pub struct Record {
    pub n: Claimed,
    pub write: Write,
    pub at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct NotificationRow {
    pub id: i64,
    pub subscription_id: i64,
    pub shopper_id: i64,
    pub restock_event_id: i64,
    pub sku: String,
    pub purpose: String,
    pub channel: String,
    pub recipient: String,
    pub wave: i64,
    pub state: String,
    /// Why it is held back, skipped or deferred.
    pub reason: Option<String>,
    pub attempts: i64,
    pub due_at: i64,
    pub last_error: Option<String>,
    pub planned_at: i64,
    pub sent_at: Option<i64>,
}

macro_rules! claim_columns {
    () => {
        "id, store_id, subscription_id, extra_subscription_id, shopper_id, restock_event_id, variant_id, \
     purpose, channel, contact_point_id, recipient, attempts, planned_at"
    };
}

impl Db {
    /// Returns rows whose lease expired (their worker died) to `pending`. A row
    /// another transaction holds (its outcome being written) is left for the next
    /// pass rather than waited on.
    pub async fn reap_expired_leases(&self, now: i64) -> Result<u64> {
        with_pool!(self, pool => {
            let sql = format!(
                "WITH expired AS MATERIALIZED (SELECT id FROM notifications \
                   WHERE state = 'running' AND lease_until < $1 ORDER BY id {}) \
                 UPDATE notifications SET state = 'pending', due_at = $1, lease_until = NULL, updated_at = $1 \
                 WHERE {} AND state = 'running' AND lease_until < $1",
                pool.skip_locked(),
                pool.in_ids("id", "SELECT id FROM expired"),
            );
            Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Claims up to `limit` due notifications, oldest first, and commits the claim.
    pub async fn claim_due(&self, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<Claimed>> {
        with_pool!(self, pool => {
            // The only dynamic part is the dialect's static locking clause.
            // MATERIALIZED: the chosen rows are picked once. As a plain `IN (SELECT
            // ... LIMIT n FOR UPDATE SKIP LOCKED)`, PostgreSQL may run the subquery
            // more than once and claim more than `limit` rows.
            let sql = format!(
                "WITH chosen AS MATERIALIZED (SELECT id FROM notifications WHERE state = 'pending' AND due_at <= $1 \
                              ORDER BY due_at, id LIMIT $3 {}) \
                 UPDATE notifications SET state = 'running', attempts = attempts + 1, lease_until = $2, updated_at = $1 \
                 WHERE {} \
                 RETURNING {}",
                pool.skip_locked(),
                pool.in_ids("id", "SELECT id FROM chosen"),
                claim_columns!()
            );
            let claim = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(now + lease_ms)
                .bind(limit);
            // On PostgreSQL the claim walks `notifications_due` in order and stops at
            // `limit`. The planner's other choice, a bitmap scan of every due row and
            // a sort, looks as cheap whenever the statistics predate a large restock
            // (they say few rows are pending), and then every claim of 100 read and
            // sorted all 20,000 rows waiting: 3-13 ms each instead of a fraction.
            let mut rows: Vec<Claimed> = match pool.ordered_claim_begin() {
                Some(begin) => {
                    let mut tx = pool.begin_with(begin).await?;
                    let rows = claim.fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    rows
                }
                None => claim.fetch_all(pool).await?,
            };
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        })
    }

    /// Reads what a batch of claimed notifications needs before sending, in two
    /// queries whatever the batch size: each restock's message and facts once, and
    /// each notification's shopper facts.
    pub async fn batch_facts(&self, claimed: &[Claimed]) -> Result<BatchFacts> {
        let mut out = BatchFacts::default();
        if claimed.is_empty() {
            return Ok(out);
        }
        let mut restocks: Vec<i64> = claimed.iter().map(|n| n.restock_event_id).collect();
        restocks.sort_unstable();
        restocks.dedup();
        let as_rows = json_id_rows;
        let notification_ids: Vec<i64> = claimed.iter().map(|n| n.id).collect();
        with_pool!(self, pool => {
            let sql = format!(
                "SELECT e.id AS restock_event_id, e.created_at AS restock_at, e.policy, c.handle AS category, \
                        CASE WHEN e.market IS NULL THEN v.in_stock ELSE COALESCE((SELECT vm.in_stock FROM variant_markets vm \
                             WHERE vm.variant_id = v.id AND vm.market = e.market), FALSE) END AS scope_in_stock, \
                        st.name AS store_name, p.title AS product_title, p.description AS product_description, \
                        p.image_url AS product_image_url, p.url AS product_url, p.price_minor AS product_price_minor, \
                        p.currency, v.sku, v.title AS variant_title, v.options AS variant_options, \
                        v.price_minor AS variant_price_minor, v.image_url AS variant_image_url, v.url AS variant_url, \
                        v.in_stock, v.available, v.available_until \
                 FROM restock_events e JOIN variants v ON v.id = e.variant_id JOIN products p ON p.id = v.product_id \
                 JOIN stores st ON st.id = v.store_id LEFT JOIN categories c ON c.id = p.category_id \
                 WHERE {}",
                pool.in_json_ids("e.id", "$1")
            );
            let rows: Vec<RestockFacts> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(as_rows(&restocks))
                .fetch_all(pool)
                .await?;
            out.restocks = rows
                .into_iter()
                .map(|r| (r.restock_event_id, std::sync::Arc::new(r)))
                .collect();
            // Sign-ups a message may still answer: waiting ones for an alert; for a
            // reminder, the ones its alert fulfilled.
            let sql = format!(
                "SELECT n.id AS notification_id, \
                        (SELECT COUNT(*) FROM subscriptions s WHERE s.id IN (n.subscription_id, COALESCE(n.extra_subscription_id, n.subscription_id)) \
                           AND s.status = CASE WHEN n.purpose = 'reminder' THEN 'notified' ELSE 'waiting' END) AS live_subscriptions, \
                        sh.opted_out_at, sh.opt_outs, sh.time_zone, \
                        cp.consent_at, cp.consent_withdrawn_at, cp.suppressed_at AS contact_suppressed_at, \
                        (SELECT COUNT(*) FROM order_lines ol WHERE ol.shopper_id = n.shopper_id \
                           AND (ol.variant_id = v.id OR ol.product_id = v.product_id) AND ol.ordered_at >= n.planned_at) AS bought, \
                        (SELECT COUNT(*) FROM notifications a JOIN tracking_events t ON t.notification_id = a.id \
                           WHERE a.restock_event_id = n.restock_event_id AND a.shopper_id = n.shopper_id \
                             AND a.purpose = 'alert' AND t.kind = 'click') AS clicked \
                 FROM notifications n JOIN variants v ON v.id = n.variant_id \
                 JOIN shoppers sh ON sh.id = n.shopper_id \
                 LEFT JOIN contact_points cp ON cp.id = n.contact_point_id \
                 WHERE {}",
                pool.in_json_ids("n.id", "$1")
            );
            let rows: Vec<ShopperFacts> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(as_rows(&notification_ids))
                .fetch_all(pool)
                .await?;
            out.shoppers = rows.into_iter().map(|r| (r.notification_id, r)).collect();
            Ok(out)
        })
    }

    /// The back-in-stock messages sent to each of `shoppers` after `since` (the
    /// frequency cap), in one query.
    pub async fn recent_sends(
        &self,
        shoppers: &[i64],
        since: i64,
    ) -> Result<std::collections::HashMap<i64, Vec<i64>>> {
        let mut out: std::collections::HashMap<i64, Vec<i64>> = Default::default();
        if shoppers.is_empty() {
            return Ok(out);
        }
        with_pool!(self, pool => {
            let sql = format!(
                "SELECT shopper_id, sent_at FROM notifications WHERE state = 'done' \
                   AND purpose IN ('alert', 'reminder') AND sent_at > $2 \
                   AND {}",
                pool.in_json_ids("shopper_id", "$1")
            );
            let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(json_id_rows(shoppers))
                .bind(since)
                .fetch_all(pool)
                .await?;
            for (shopper, at) in rows {
                out.entry(shopper).or_default().push(at);
            }
            Ok(out)
        })
    }

    /// Records a batch of outcomes in one write transaction (group commit), each
    /// fenced by the attempt that claimed it: a row another attempt owns now is left
    /// alone. Sends, the common case, are written set-wise. Returns, per record,
    /// whether it was written.
    pub async fn record_outcomes(&self, records: &[Record]) -> Result<Vec<bool>> {
        let mut owned = vec![false; records.len()];
        if records.is_empty() {
            return Ok(owned);
        }
        let index: std::collections::HashMap<i64, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.n.id, i))
            .collect();
        let sent: Vec<&Record> = records
            .iter()
            .filter(|r| matches!(r.write, Write::Sent { .. }))
            .collect();
        let sent_rows = serde_json::Value::from(
            sent.iter()
                .map(|r| vec![r.n.id, r.n.attempts, r.at])
                .collect::<Vec<_>>(),
        )
        .to_string();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if !sent.is_empty() {
                let sql = format!(
                    "UPDATE notifications SET state = 'done', sent_at = j.nat, lease_until = NULL, last_error = NULL, updated_at = j.nat \
                     FROM (SELECT CAST(value ->> 0 AS BIGINT) AS nid, CAST(value ->> 1 AS BIGINT) AS natt, \
                                  CAST(value ->> 2 AS BIGINT) AS nat FROM {}) AS j \
                     WHERE id = j.nid AND attempts = j.natt AND state IN ('running', 'pending') AND {} \
                     RETURNING id",
                    pool.json_rows("$1"),
                    pool.in_json_ids("id", "$1")
                );
                let done: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(&sent_rows)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut fulfilled = Vec::new();
                let mut reminders = Vec::new();
                for id in done {
                    let Some(&i) = index.get(&id) else { continue };
                    owned[i] = true;
                    let r = &records[i];
                    if r.n.purpose != "alert" {
                        continue;
                    }
                    fulfilled.push(vec![r.n.subscription_id, r.at]);
                    if let Some(extra) = r.n.extra_subscription_id {
                        fulfilled.push(vec![extra, r.at]);
                    }
                    if let Write::Sent { reminder_at: Some(due) } = r.write {
                        reminders.push(vec![r.n.id, due, r.at]);
                    }
                }
                if !fulfilled.is_empty() {
                    let sql = format!(
                        "UPDATE subscriptions SET status = 'notified', notified_at = j.nat, updated_at = j.nat \
                         FROM (SELECT CAST(value ->> 0 AS BIGINT) AS sid, CAST(value ->> 1 AS BIGINT) AS nat FROM {}) AS j \
                         WHERE id = j.sid AND status = 'waiting' AND {}",
                        pool.json_rows("$1"),
                        pool.in_json_ids("id", "$1")
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(serde_json::Value::from(fulfilled).to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                if !reminders.is_empty() {
                    let sql = format!(
                        "INSERT INTO notifications (store_id, restock_event_id, shopper_id, subscription_id, \
                           extra_subscription_id, variant_id, purpose, channel, contact_point_id, recipient, wave, \
                           state, attempts, due_at, planned_at, updated_at) \
                         SELECT n.store_id, n.restock_event_id, n.shopper_id, n.subscription_id, n.extra_subscription_id, \
                           n.variant_id, 'reminder', n.channel, n.contact_point_id, n.recipient, n.wave, 'pending', 0, j.due, j.nat, j.nat \
                         FROM notifications n JOIN (SELECT CAST(value ->> 0 AS BIGINT) AS nid, CAST(value ->> 1 AS BIGINT) AS due, \
                                CAST(value ->> 2 AS BIGINT) AS nat FROM {}) AS j ON n.id = j.nid \
                         WHERE {} ON CONFLICT DO NOTHING",
                        pool.json_rows("$1"),
                        pool.in_json_ids("n.id", "$1")
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(serde_json::Value::from(reminders).to_string())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for (i, r) in records.iter().enumerate() {
                let n = &r.n;
                let now = r.at;
                let affected = match &r.write {
                    Write::Sent { .. } => continue,
                    Write::Retry { due_at, error } => sqlx::query(
                        "UPDATE notifications SET state = 'pending', due_at = $3, lease_until = NULL, \
                           last_error = $4, updated_at = $5 \
                         WHERE id = $1 AND state IN ('running', 'pending') AND attempts = $2",
                    )
                    .bind(n.id)
                    .bind(n.attempts)
                    .bind(due_at)
                    .bind(error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Write::Final { state, reason, error } => sqlx::query(
                        "UPDATE notifications SET state = $3, lease_until = NULL, \
                           last_error = $4, updated_at = $5, reason = COALESCE($6, reason) \
                         WHERE id = $1 AND state IN ('running', 'pending') AND attempts = $2",
                    )
                    .bind(n.id)
                    .bind(n.attempts)
                    .bind(*state)
                    .bind(error)
                    .bind(now)
                    .bind(*reason)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Write::Deferred { due_at, reason } => sqlx::query(
                        "UPDATE notifications SET state = 'pending', attempts = attempts - 1, due_at = $3, reason = $4, \
                           lease_until = NULL, updated_at = $5 \
                         WHERE id = $1 AND state = 'running' AND attempts = $2",
                    )
                    .bind(n.id)
                    .bind(n.attempts)
                    .bind(due_at)
                    .bind(*reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Write::Release => sqlx::query(
                        "UPDATE notifications SET state = 'pending', attempts = attempts - 1, lease_until = NULL, updated_at = $3 \
                         WHERE id = $1 AND state = 'running' AND attempts = $2",
                    )
                    .bind(n.id)
                    .bind(n.attempts)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Write::FailedAndSuppress { error } => {
                        let affected = sqlx::query(
                            "UPDATE notifications SET state = 'failed', lease_until = NULL, last_error = $3, updated_at = $4 \
                             WHERE id = $1 AND state IN ('running', 'pending') AND attempts = $2",
                        )
                        .bind(n.id)
                        .bind(n.attempts)
                        .bind(error)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if affected == 1 && let Some(contact) = n.contact_point_id {
                            sqlx::query("UPDATE contact_points SET suppressed_at = $2, suppressed_reason = $3, updated_at = $2 WHERE id = $1")
                                .bind(contact)
                                .bind(now)
                                .bind(error)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(
                                "UPDATE notifications SET state = 'skipped', reason = 'suppressed', last_error = 'address suppressed', \
                                   updated_at = $3 \
                                 WHERE shopper_id = $1 AND contact_point_id = $2 AND state = 'pending'",
                            )
                            .bind(n.shopper_id)
                            .bind(contact)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        }
                        affected
                    }
                };
                owned[i] = affected == 1;
            }
            tx.commit().await?;
            Ok(owned)
        })
    }

    /// Extends the leases of claims this worker still holds (sends in flight or
    /// outcomes not yet recorded), so a slow send is never taken over and sent twice.
    /// Each is fenced by its attempt. Returns how many were extended.
    ///
    /// Rows another transaction holds are skipped, never waited on: they are this
    /// worker's outcomes being written (the row leaves `running`), and waiting let a
    /// renewal and a group of outcomes lock each other's rows in different orders
    /// until PostgreSQL broke the deadlock a second later, by which time the leases
    /// the renewal was meant to extend had run out. A skipped row that is still
    /// running is renewed on the next tick, well inside its lease.
    pub async fn renew_leases(&self, held: &[(i64, i64)], lease_until: i64) -> Result<u64> {
        if held.is_empty() {
            return Ok(0);
        }
        let rows =
            serde_json::Value::from(held.iter().map(|(id, a)| vec![*id, *a]).collect::<Vec<_>>())
                .to_string();
        with_pool!(self, pool => {
            let sql = format!(
                "WITH mine AS MATERIALIZED (SELECT id FROM notifications \
                   WHERE {} AND state = 'running' ORDER BY id {}) \
                 UPDATE notifications SET lease_until = $2 \
                 FROM (SELECT CAST(value ->> 0 AS BIGINT) AS nid, CAST(value ->> 1 AS BIGINT) AS natt FROM {}) AS j \
                 WHERE {} AND id = j.nid AND attempts = j.natt AND state = 'running'",
                pool.in_json_ids("id", "$1"),
                pool.skip_locked(),
                pool.json_rows("$1"),
                pool.in_ids("id", "SELECT id FROM mine"),
            );
            Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(rows)
                .bind(lease_until)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Records one send (see [`Db::record_outcomes`]).
    pub async fn record_sent(
        &self,
        n: &Claimed,
        now: i64,
        reminder_at: Option<i64>,
    ) -> Result<bool> {
        let owned = self
            .record_outcomes(&[Record {
                n: n.clone(),
                write: Write::Sent { reminder_at },
                at: now,
            }])
            .await?;
        Ok(owned.first().copied().unwrap_or(false))
    }

    pub async fn notifications(
        &self,
        store: StoreId,
        state: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT n.id, n.subscription_id, n.shopper_id, n.restock_event_id, v.sku, n.purpose, n.channel, n.recipient, \
                        n.wave, n.state, n.reason, n.attempts, n.due_at, n.last_error, n.planned_at, n.sent_at \
                 FROM notifications n JOIN variants v ON v.id = n.variant_id \
                 WHERE n.store_id = $1 AND ($2 IS NULL OR n.state = $2) AND n.id > $3 ORDER BY n.id LIMIT $4",
            )
            .bind(store.0)
            .bind(state)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Puts a dead or failed notification back in the queue with a fresh set of
    /// attempts. Replaying a failed one is the operator vouching for the address, so
    /// its suppression is lifted. `None` if the store has no such notification.
    pub async fn replay_notification(
        &self,
        store: StoreId,
        id: NotificationId,
        now: i64,
    ) -> Result<Option<Replay>> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<(String, Option<i64>)> = sqlx::query_as(
                "SELECT state, contact_point_id FROM notifications WHERE id = $1 AND store_id = $2",
            )
            .bind(id.0)
            .bind(store.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((state, contact)) = row else { return Ok(None) };
            if state != "dead" && state != "failed" {
                return Ok(Some(Replay::NotReplayable(state)));
            }
            if state == "failed" {
                sqlx::query("UPDATE contact_points SET suppressed_at = NULL, suppressed_reason = NULL WHERE id = $1")
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE notifications SET state = 'pending', attempts = 0, due_at = $2, lease_until = NULL, updated_at = $2 \
                 WHERE id = $1",
            )
            .bind(id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(Replay::Queued))
        })
    }

    /// Notification counts by state, for one store or (None) the whole instance.
    pub async fn outbox_depth(&self, store: Option<StoreId>) -> Result<Vec<(String, i64)>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT state, COUNT(*) FROM notifications WHERE ($1 IS NULL OR store_id = $1) GROUP BY state ORDER BY state",
            )
            .bind(store.map(|s| s.0))
            .fetch_all(pool)
            .await?)
        })
    }

    /// The earliest time a pending notification is due, for the worker's sleep.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM notifications WHERE state = 'pending'")
                .fetch_one(pool)
                .await?)
        })
    }
}
