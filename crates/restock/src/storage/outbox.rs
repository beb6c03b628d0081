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

/// Everything a message about one notification shows, read right before sending.
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

/// What the last check before a send reads, next to the message's content.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SendFactsRow {
    /// When the restock was recorded (for the restock-to-send latency).
    pub restock_at: i64,
    pub policy: Option<String>,
    pub category: Option<String>,
    pub scope_in_stock: bool,
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
    /// Returns rows whose lease expired (their worker died) to `pending`.
    pub async fn reap_expired_leases(&self, now: i64) -> Result<u64> {
        with_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE notifications SET state = 'pending', due_at = $1, lease_until = NULL, updated_at = $1 \
                 WHERE state = 'running' AND lease_until < $1",
            )
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
            let sql = format!(
                "UPDATE notifications SET state = 'running', attempts = attempts + 1, lease_until = $2, updated_at = $1 \
                 WHERE id IN (SELECT id FROM notifications WHERE state = 'pending' AND due_at <= $1 \
                              ORDER BY due_at, id LIMIT $3 {}) \
                 RETURNING {}",
                pool.skip_locked(),
                claim_columns!()
            );
            let mut rows: Vec<Claimed> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(now + lease_ms)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        })
    }

    pub async fn message_context(
        &self,
        n: &Claimed,
    ) -> Result<Option<(MessageContext, SendFactsRow)>> {
        with_pool!(self, pool => {
            let ctx: Option<MessageContext> = sqlx::query_as(
                "SELECT st.name AS store_name, p.title AS product_title, p.description AS product_description, \
                        p.image_url AS product_image_url, p.url AS product_url, p.price_minor AS product_price_minor, \
                        p.currency, v.sku, v.title AS variant_title, v.options AS variant_options, \
                        v.price_minor AS variant_price_minor, v.image_url AS variant_image_url, v.url AS variant_url, \
                        v.in_stock, v.available, v.available_until \
                 FROM variants v JOIN products p ON p.id = v.product_id JOIN stores st ON st.id = v.store_id \
                 WHERE v.id = $1",
            )
            .bind(n.variant_id)
            .fetch_optional(pool)
            .await?;
            let Some(ctx) = ctx else { return Ok(None) };
            // Sign-ups a message may still answer: waiting ones for an alert; for a
            // reminder, the ones its alert fulfilled.
            let live = if n.purpose == "reminder" { "notified" } else { "waiting" };
            let facts: Option<SendFactsRow> = sqlx::query_as(
                "SELECT e.created_at AS restock_at, e.policy, c.handle AS category, \
                        CASE WHEN e.market IS NULL THEN v.in_stock ELSE COALESCE((SELECT vm.in_stock FROM variant_markets vm \
                             WHERE vm.variant_id = v.id AND vm.market = e.market), FALSE) END AS scope_in_stock, \
                        (SELECT COUNT(*) FROM subscriptions s WHERE s.id IN ($2, COALESCE($3, $2)) AND s.status = $4) AS live_subscriptions, \
                        sh.opted_out_at, sh.opt_outs, sh.time_zone, \
                        cp.consent_at, cp.consent_withdrawn_at, cp.suppressed_at AS contact_suppressed_at, \
                        (SELECT COUNT(*) FROM order_lines ol WHERE ol.shopper_id = n.shopper_id \
                           AND (ol.variant_id = v.id OR ol.product_id = v.product_id) AND ol.ordered_at >= n.planned_at) AS bought, \
                        (SELECT COUNT(*) FROM notifications a JOIN tracking_events t ON t.notification_id = a.id \
                           WHERE a.restock_event_id = n.restock_event_id AND a.shopper_id = n.shopper_id \
                             AND a.purpose = 'alert' AND t.kind = 'click') AS clicked \
                 FROM notifications n JOIN restock_events e ON e.id = n.restock_event_id \
                 JOIN variants v ON v.id = n.variant_id JOIN products p ON p.id = v.product_id \
                 LEFT JOIN categories c ON c.id = p.category_id \
                 JOIN shoppers sh ON sh.id = n.shopper_id \
                 LEFT JOIN contact_points cp ON cp.id = n.contact_point_id \
                 WHERE n.id = $1",
            )
            .bind(n.id)
            .bind(n.subscription_id)
            .bind(n.extra_subscription_id)
            .bind(live)
            .fetch_optional(pool)
            .await?;
            Ok(facts.map(|f| (ctx, f)))
        })
    }

    /// The shopper's back-in-stock messages sent after `since` (the frequency cap).
    pub async fn sent_times(&self, shopper: i64, since: i64) -> Result<Vec<i64>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT sent_at FROM notifications WHERE shopper_id = $1 AND state = 'done' \
                 AND purpose IN ('alert', 'reminder') AND sent_at > $2",
            )
            .bind(shopper)
            .bind(since)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Sent: the notification is done and the sign-ups it answers fulfilled; for an
    /// alert, its reminder (if the policy has one) is planned. Returns false if this
    /// attempt no longer owns the row.
    pub async fn record_sent(
        &self,
        n: &Claimed,
        now: i64,
        reminder_at: Option<i64>,
    ) -> Result<bool> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let owned = sqlx::query(
                "UPDATE notifications SET state = 'done', sent_at = $3, lease_until = NULL, last_error = NULL, updated_at = $3 \
                 WHERE id = $1 AND state IN ('running', 'pending') AND attempts = $2",
            )
            .bind(n.id)
            .bind(n.attempts)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if owned && n.purpose == "alert" {
                sqlx::query(
                    "UPDATE subscriptions SET status = 'notified', notified_at = $3, updated_at = $3 \
                     WHERE id IN ($1, COALESCE($2, $1)) AND status = 'waiting'",
                )
                .bind(n.subscription_id)
                .bind(n.extra_subscription_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if let Some(due) = reminder_at {
                    sqlx::query(
                        "INSERT INTO notifications (store_id, restock_event_id, shopper_id, subscription_id, \
                           extra_subscription_id, variant_id, purpose, channel, contact_point_id, recipient, wave, \
                           state, attempts, due_at, planned_at, updated_at) \
                         SELECT store_id, restock_event_id, shopper_id, subscription_id, extra_subscription_id, variant_id, \
                           'reminder', channel, contact_point_id, recipient, wave, 'pending', 0, $2, $3, $3 \
                         FROM notifications WHERE id = $1 ON CONFLICT DO NOTHING",
                    )
                    .bind(n.id)
                    .bind(due)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(owned)
        })
    }

    /// Not now (quiet hours, the frequency cap): back to pending, due at `due_at`,
    /// the attempt not counted.
    pub async fn record_deferred(
        &self,
        n: &Claimed,
        due_at: i64,
        reason: &str,
        now: i64,
    ) -> Result<bool> {
        with_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE notifications SET state = 'pending', attempts = attempts - 1, due_at = $3, reason = $4, \
                   lease_until = NULL, updated_at = $5 \
                 WHERE id = $1 AND state = 'running' AND attempts = $2",
            )
            .bind(n.id)
            .bind(n.attempts)
            .bind(due_at)
            .bind(reason)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Gives a claim back unattempted (the worker is stopping).
    pub async fn release_claim(&self, n: &Claimed, now: i64) -> Result<bool> {
        with_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE notifications SET state = 'pending', attempts = attempts - 1, lease_until = NULL, updated_at = $3 \
                 WHERE id = $1 AND state = 'running' AND attempts = $2",
            )
            .bind(n.id)
            .bind(n.attempts)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Back to pending, due again at `due_at`.
    pub async fn record_retry(
        &self,
        n: &Claimed,
        due_at: i64,
        error: &str,
        now: i64,
    ) -> Result<bool> {
        self.record_state(n, "pending", Some(due_at), None, error, now)
            .await
    }

    /// Terminal states: `failed` (permanent), `dead` (retries exhausted), `skipped`
    /// (not sendable any more: sold out again, unsubscribed, suppressed).
    pub async fn record_final(
        &self,
        n: &Claimed,
        state: &str,
        reason: Option<&str>,
        error: &str,
        now: i64,
    ) -> Result<bool> {
        self.record_state(n, state, None, reason, error, now).await
    }

    async fn record_state(
        &self,
        n: &Claimed,
        state: &str,
        due_at: Option<i64>,
        reason: Option<&str>,
        error: &str,
        now: i64,
    ) -> Result<bool> {
        with_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE notifications SET state = $3, due_at = COALESCE($4, due_at), lease_until = NULL, \
                   last_error = $5, updated_at = $6, reason = COALESCE($7, reason) \
                 WHERE id = $1 AND state IN ('running', 'pending') AND attempts = $2",
            )
            .bind(n.id)
            .bind(n.attempts)
            .bind(state)
            .bind(due_at)
            .bind(error)
            .bind(now)
            .bind(reason)
            .execute(pool)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// A permanent failure: the notification failed and the address is suppressed,
    /// with its other pending notifications skipped.
    pub async fn record_failed_and_suppress(
        &self,
        n: &Claimed,
        error: &str,
        now: i64,
    ) -> Result<bool> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let owned = sqlx::query(
                "UPDATE notifications SET state = 'failed', lease_until = NULL, last_error = $3, updated_at = $4 \
                 WHERE id = $1 AND state IN ('running', 'pending') AND attempts = $2",
            )
            .bind(n.id)
            .bind(n.attempts)
            .bind(error)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if owned && let Some(contact) = n.contact_point_id {
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
            tx.commit().await?;
            Ok(owned)
        })
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
