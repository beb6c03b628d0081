//! Orders: they end the buyer's alerts for what they bought, hold back recent
//! purchasers, count against stock the sources have not reported yet, and are kept
//! for attribution. Idempotent on the merchant's order id.

use restock_core::ids::{ShopperId, StoreId, VariantId};
use restock_core::values::{Email, Market, Sku};

use super::stock::{RestockOutcome, TxOps};
use super::{Db, Dialect, Result, with_pool};

#[derive(Debug, Clone)]
pub struct OrderLineInput {
    pub sku: Sku,
    pub quantity: i64,
    pub price_minor: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct OrderInput {
    pub order_ref: String,
    pub email: Option<Email>,
    pub customer_id: Option<String>,
    pub source: String,
    pub currency: Option<String>,
    pub market: Option<Market>,
    pub ordered_at: i64,
    pub lines: Vec<OrderLineInput>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    Recorded {
        id: i64,
        shopper: Option<ShopperId>,
        /// Sign-ups the purchase fulfilled.
        ended_alerts: u64,
        /// SKUs not in the catalog (kept all the same).
        unknown_skus: Vec<String>,
        /// Availability re-judged with the order counted (it may have sold out).
        restocks: Vec<RestockOutcome>,
    },
    /// Already recorded: nothing changed.
    Duplicate { id: i64 },
}

impl Db {
    pub async fn record_order(
        &self,
        store: StoreId,
        o: &OrderInput,
        now: i64,
    ) -> Result<OrderOutcome> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM orders WHERE store_id = $1 AND order_ref = $2",
            )
            .bind(store.0)
            .bind(&o.order_ref)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                return Ok(OrderOutcome::Duplicate { id });
            }
            // The buyer: by the merchant's customer id, else by address.
            let mut shopper: Option<i64> = None;
            if let Some(cid) = &o.customer_id {
                shopper = sqlx::query_scalar("SELECT id FROM shoppers WHERE store_id = $1 AND customer_id = $2")
                    .bind(store.0)
                    .bind(cid)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            if shopper.is_none()
                && let Some(email) = &o.email
            {
                shopper = sqlx::query_scalar(
                    "SELECT shopper_id FROM contact_points WHERE store_id = $1 AND channel = 'email' AND address_key = $2",
                )
                .bind(store.0)
                .bind(email.identity_key())
                .fetch_optional(&mut *tx)
                .await?;
            }
            let market = o.market.as_ref().map(|m| m.as_str().to_string());
            let order_id: i64 = sqlx::query_scalar(
                "INSERT INTO orders (store_id, order_ref, shopper_id, customer_email, customer_id, source, currency, \
                                     market, ordered_at, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(store.0)
            .bind(&o.order_ref)
            .bind(shopper)
            .bind(o.email.as_ref().map(|e| e.as_str()))
            .bind(o.customer_id.as_deref())
            .bind(&o.source)
            .bind(o.currency.as_deref())
            .bind(market.as_deref())
            .bind(o.ordered_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let mut unknown = Vec::new();
            let mut variants: Vec<i64> = Vec::new();
            let mut ended = 0;
            for line in &o.lines {
                let found: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT id, product_id FROM variants WHERE store_id = $1 AND sku = $2",
                )
                .bind(store.0)
                .bind(line.sku.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if found.is_none() {
                    unknown.push(line.sku.as_str().to_string());
                }
                sqlx::query(
                    "INSERT INTO order_lines (order_id, store_id, shopper_id, variant_id, product_id, sku, quantity, \
                                              price_minor, market, ordered_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(order_id)
                .bind(store.0)
                .bind(shopper)
                .bind(found.map(|f| f.0))
                .bind(found.map(|f| f.1))
                .bind(line.sku.as_str())
                .bind(line.quantity)
                .bind(line.price_minor)
                .bind(market.as_deref())
                .bind(o.ordered_at)
                .execute(&mut *tx)
                .await?;
                let Some((variant, product)) = found else { continue };
                if !variants.contains(&variant) {
                    variants.push(variant);
                }
                if let Some(shopper) = shopper {
                    // Bought it: the alert for that variant (and any-variant alerts
                    // for the product) is fulfilled, and whatever of it is pending
                    // does not go.
                    ended += sqlx::query(
                        "UPDATE subscriptions SET status = 'purchased', ended_at = $4, updated_at = $4 \
                         WHERE shopper_id = $1 AND product_id = $3 AND status = 'waiting' \
                           AND (variant_id = $2 OR variant_id IS NULL)",
                    )
                    .bind(shopper)
                    .bind(variant)
                    .bind(product)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    sqlx::query(
                        "UPDATE notifications SET state = 'skipped', reason = 'recent_purchase', \
                           last_error = 'bought before the alert went', updated_at = $3 \
                         WHERE shopper_id = $1 AND variant_id = $2 AND state = 'pending' AND purpose = 'alert'",
                    )
                    .bind(shopper)
                    .bind(variant)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if let Some(shopper) = shopper {
                sqlx::query(
                    "UPDATE shoppers SET last_order_at = CASE WHEN last_order_at IS NULL OR last_order_at < $2 \
                       THEN $2 ELSE last_order_at END, \
                       customer_id = COALESCE(customer_id, $3), updated_at = $4 WHERE id = $1",
                )
                .bind(shopper)
                .bind(o.ordered_at)
                .bind(o.customer_id.as_deref())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            // The order counts against stock until a source reports a level newer
            // than it: availability is judged again now.
            let variants: Vec<VariantId> = variants.into_iter().map(VariantId).collect();
            let restocks = tx.evaluate_variants(&variants, "order", now).await?;
            tx.commit().await?;
            Ok(OrderOutcome::Recorded {
                id: order_id,
                shopper: shopper.map(ShopperId),
                ended_alerts: ended,
                unknown_skus: unknown,
                restocks,
            })
        })
    }
}
