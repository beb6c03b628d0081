//! Demand: subscribers (a shopper's address at one store) and their subscriptions.

use restock_core::ids::{ProductId, StoreId, SubscriberId, SubscriptionId, VariantId};
use restock_core::values::Email;

use super::{Db, Dialect, Result, with_pool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Variant {
        product: ProductId,
        variant: VariantId,
    },
    Product(ProductId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Created(SubscriptionId),
    /// The shopper already had this subscription; it is waiting again if it was not.
    Merged(SubscriptionId),
    /// The address bounced before; nothing is sent there.
    Suppressed,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct SubscriptionRow {
    pub id: i64,
    pub email: String,
    pub product_external_id: String,
    pub sku: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub notified_at: Option<i64>,
}

impl Db {
    pub async fn subscribe(
        &self,
        store: StoreId,
        email: &Email,
        target: Target,
        source: &str,
        now: i64,
    ) -> Result<SubscribeOutcome> {
        let (product, variant) = match target {
            Target::Variant { product, variant } => (product, Some(variant.0)),
            Target::Product(product) => (product, None),
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let (subscriber, suppressed): (i64, Option<i64>) = sqlx::query_as(
                "INSERT INTO subscribers (store_id, email, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (store_id, email) DO UPDATE SET email = excluded.email \
                 RETURNING id, suppressed_at",
            )
            .bind(store.0)
            .bind(email.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if suppressed.is_some() {
                tx.commit().await?;
                return Ok(SubscribeOutcome::Suppressed);
            }
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM subscriptions WHERE subscriber_id = $1 AND product_id = $2 \
                 AND COALESCE(variant_id, 0) = COALESCE($3, 0)",
            )
            .bind(subscriber)
            .bind(product.0)
            .bind(variant)
            .fetch_optional(&mut *tx)
            .await?;
            let outcome = match existing {
                Some(id) => {
                    sqlx::query(
                        "UPDATE subscriptions SET status = 'waiting', updated_at = $2, unsubscribed_at = NULL \
                         WHERE id = $1 AND status <> 'waiting'",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    SubscribeOutcome::Merged(SubscriptionId(id))
                }
                None => {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO subscriptions (store_id, subscriber_id, product_id, variant_id, status, source, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, 'waiting', $5, $6, $6) RETURNING id",
                    )
                    .bind(store.0)
                    .bind(subscriber)
                    .bind(product.0)
                    .bind(variant)
                    .bind(source)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    SubscribeOutcome::Created(SubscriptionId(id))
                }
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Ends one subscription, or every subscription of its subscriber at the store.
    /// Pending notifications for what was ended are skipped. Returns how many
    /// subscriptions ended.
    pub async fn unsubscribe(
        &self,
        subscription: SubscriptionId,
        all: bool,
        now: i64,
    ) -> Result<u64> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let subscriber: Option<i64> = sqlx::query_scalar("SELECT subscriber_id FROM subscriptions WHERE id = $1")
                .bind(subscription.0)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(subscriber) = subscriber else { return Ok(0) };
            // One subscription, or all of the subscriber's at this store.
            let (end_sql, skip_sql) = if all {
                (
                    "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $3, updated_at = $3 \
                     WHERE subscriber_id = $1 AND status <> 'unsubscribed' AND $2 = $2",
                    "UPDATE notifications SET state = 'skipped', last_error = 'unsubscribed', updated_at = $3 \
                     WHERE state = 'pending' AND subscriber_id = $1 AND $2 = $2",
                )
            } else {
                (
                    "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $3, updated_at = $3 \
                     WHERE id = $2 AND subscriber_id = $1 AND status <> 'unsubscribed'",
                    "UPDATE notifications SET state = 'skipped', last_error = 'unsubscribed', updated_at = $3 \
                     WHERE state = 'pending' AND subscription_id = $2 AND subscriber_id = $1",
                )
            };
            let n = sqlx::query(end_sql)
                .bind(subscriber)
                .bind(subscription.0)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(skip_sql)
                .bind(subscriber)
                .bind(subscription.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    pub async fn subscription_status(
        &self,
        subscription: SubscriptionId,
    ) -> Result<Option<String>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
                .bind(subscription.0)
                .fetch_optional(pool)
                .await?)
        })
    }

    pub async fn subscriptions(
        &self,
        store: StoreId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SubscriptionRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT s.id, b.email, p.external_id AS product_external_id, v.sku, s.status, s.created_at, s.notified_at \
                 FROM subscriptions s JOIN subscribers b ON b.id = s.subscriber_id \
                 JOIN products p ON p.id = s.product_id LEFT JOIN variants v ON v.id = s.variant_id \
                 WHERE s.store_id = $1 AND s.id > $2 ORDER BY s.id LIMIT $3",
            )
            .bind(store.0)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn subscriber_suppressed(&self, subscriber: SubscriberId) -> Result<bool> {
        with_pool!(self, pool => {
            let at: Option<Option<i64>> = sqlx::query_scalar("SELECT suppressed_at FROM subscribers WHERE id = $1")
                .bind(subscriber.0)
                .fetch_optional(pool)
                .await?;
            Ok(at.flatten().is_some())
        })
    }
}
