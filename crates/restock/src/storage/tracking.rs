//! Tracking: clicks on signed links, and unsubscribes.

use restock_core::ids::{NotificationId, SubscriptionId};

use super::{Db, Result, with_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkTarget {
    pub store_id: i64,
    pub subscription_id: i64,
    pub store_name: String,
    pub product_title: String,
    pub variant_title: String,
    pub url: String,
}

/// What a sign-up's cancel link shows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignupTarget {
    pub store_id: i64,
    pub store_name: String,
    pub product_title: String,
    pub variant_title: Option<String>,
    pub status: String,
}

impl Db {
    pub async fn signup_target(&self, id: SubscriptionId) -> Result<Option<SignupTarget>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT s.store_id, st.name AS store_name, p.title AS product_title, v.title AS variant_title, s.status \
                 FROM subscriptions s JOIN stores st ON st.id = s.store_id JOIN products p ON p.id = s.product_id \
                 LEFT JOIN variants v ON v.id = s.variant_id WHERE s.id = $1",
            )
            .bind(id.0)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Where a notification's link leads: the variant's own page, else its product's.
    pub async fn link_target(&self, n: NotificationId) -> Result<Option<LinkTarget>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT n.store_id, n.subscription_id, st.name AS store_name, p.title AS product_title, \
                        v.title AS variant_title, COALESCE(v.url, p.url) AS url \
                 FROM notifications n JOIN variants v ON v.id = n.variant_id \
                 JOIN products p ON p.id = v.product_id JOIN stores st ON st.id = n.store_id \
                 WHERE n.id = $1",
            )
            .bind(n.0)
            .fetch_optional(pool)
            .await?)
        })
    }

    pub async fn record_tracking_event(
        &self,
        store: i64,
        n: NotificationId,
        kind: &str,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("INSERT INTO tracking_events (store_id, notification_id, kind, at) VALUES ($1, $2, $3, $4)")
                .bind(store)
                .bind(n.0)
                .bind(kind)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn tracking_count(&self, n: NotificationId, kind: &str) -> Result<i64> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tracking_events WHERE notification_id = $1 AND kind = $2")
                .bind(n.0)
                .bind(kind)
                .fetch_one(pool)
                .await?)
        })
    }

    pub async fn subscription_of(&self, n: NotificationId) -> Result<Option<SubscriptionId>> {
        with_pool!(self, pool => {
            let id: Option<i64> = sqlx::query_scalar("SELECT subscription_id FROM notifications WHERE id = $1")
                .bind(n.0)
                .fetch_optional(pool)
                .await?;
            Ok(id.map(SubscriptionId))
        })
    }
}
