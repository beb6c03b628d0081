//! Markets: the regions a store sells to and the locations that serve each.

use restock_core::ids::{StoreId, VariantId};
use restock_core::values::Market;

use super::stock::{RestockOutcome, TxOps};
use super::{Db, Dialect, Result, with_pool};

impl Db {
    /// Sets the locations serving a market (an empty list removes the market), and
    /// judges the availability of every variant stocked there again.
    pub async fn put_market(
        &self,
        store: StoreId,
        market: &Market,
        locations: &[String],
        now: i64,
    ) -> Result<Vec<RestockOutcome>> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let old: Vec<String> = sqlx::query_scalar(
                "SELECT location FROM market_locations WHERE store_id = $1 AND market = $2",
            )
            .bind(store.0)
            .bind(market.as_str())
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM market_locations WHERE store_id = $1 AND market = $2")
                .bind(store.0)
                .bind(market.as_str())
                .execute(&mut *tx)
                .await?;
            for l in locations {
                sqlx::query("INSERT INTO market_locations (store_id, market, location) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(store.0)
                    .bind(market.as_str())
                    .bind(l)
                    .execute(&mut *tx)
                    .await?;
            }
            if locations.is_empty() {
                sqlx::query("DELETE FROM variant_markets WHERE store_id = $1 AND market = $2")
                    .bind(store.0)
                    .bind(market.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            let mut touched: Vec<i64> = Vec::new();
            for l in old.iter().chain(locations.iter()) {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT variant_id FROM stock_levels WHERE store_id = $1 AND location = $2",
                )
                .bind(store.0)
                .bind(l)
                .fetch_all(&mut *tx)
                .await?;
                touched.extend(ids);
            }
            touched.sort_unstable();
            touched.dedup();
            let touched: Vec<VariantId> = touched.into_iter().map(VariantId).collect();
            let restocks = tx.evaluate_variants(&touched, "market", now).await?;
            tx.commit().await?;
            Ok(restocks)
        })
    }

    pub async fn markets(&self, store: StoreId) -> Result<Vec<(String, Vec<String>)>> {
        let rows: Vec<(String, String)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT market, location FROM market_locations WHERE store_id = $1 ORDER BY market, location")
                .bind(store.0)
                .fetch_all(pool)
                .await?
        });
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (m, l) in rows {
            match out.last_mut() {
                Some((last, ls)) if *last == m => ls.push(l),
                _ => out.push((m, vec![l])),
            }
        }
        Ok(out)
    }

    /// Whether a variant is in stock in a scope (a market, or everywhere).
    pub async fn in_stock_in(&self, variant: VariantId, market: Option<&str>) -> Result<bool> {
        with_pool!(self, pool => {
            let v: Option<bool> = match market {
                None => sqlx::query_scalar("SELECT in_stock FROM variants WHERE id = $1")
                    .bind(variant.0)
                    .fetch_optional(pool)
                    .await?,
                Some(m) => sqlx::query_scalar("SELECT in_stock FROM variant_markets WHERE variant_id = $1 AND market = $2")
                    .bind(variant.0)
                    .bind(m)
                    .fetch_optional(pool)
                    .await?,
            };
            Ok(v.unwrap_or(false))
        })
    }
}
