//! Shopify products in the catalog: which product each Shopify product became, the
//! newest Shopify `updated_at` applied to it, and its deletion. A product delivery
//! is written in one transaction with the claim on its `updated_at`, so of two
//! deliveries racing for one product the older can never land last.

use std::collections::BTreeSet;

use restock_core::ids::{StoreId, VariantId};

use super::catalog::{CatalogError, ProductInput, write_product};
use super::stock::{RestockOutcome, TxOps, parse_release_policy};
use super::{Db, Dialect, Result, with_pool};

/// The cause recorded on availability transitions a Shopify product change makes.
const CAUSE: &str = "shopify_products";

/// A product as a Shopify `products/create` or `products/update` delivery describes
/// it, already validated as the catalog API validates a product.
#[derive(Debug, Clone)]
pub struct ProductSync {
    pub shopify_id: String,
    /// Shopify's `updated_at`, in milliseconds.
    pub updated_at_ms: i64,
    /// "active", "draft" or "archived".
    pub status: &'static str,
    /// The product with its detailed variants. Its external id (the Shopify product
    /// id) is used only for a product the catalog does not hold yet; settings only
    /// Restock has (category, thresholds, release policy) are kept from the catalog.
    pub product: ProductInput,
    /// Shopify's id of each of `product.variants`, in the same order.
    pub variant_ids: Vec<String>,
    /// Every variant id the product still has in the shop: the detailed ones and
    /// those Shopify lists only by id (past the first 100).
    pub listed_variant_ids: BTreeSet<String>,
}

#[derive(Debug)]
pub enum SyncOutcome {
    /// Written. `removed`: SKUs of variants the shop no longer lists.
    Applied {
        external_id: String,
        removed: Vec<String>,
        restocks: Vec<RestockOutcome>,
    },
    /// Not newer than what was applied before: nothing changed.
    Stale,
    /// The product was deleted in the shop before: nothing changed.
    Deleted,
}

#[derive(sqlx::FromRow)]
struct ExistingProduct {
    external_id: String,
    category: Option<String>,
    min_stock: Option<i64>,
    notify_threshold: Option<i64>,
    release_policy: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ExistingVariant {
    id: i64,
    sku: String,
    shopify_variant_id: Option<String>,
    inventory_item_id: Option<String>,
    min_stock: Option<i64>,
    notify_threshold: Option<i64>,
}

/// The existing variant a Shopify variant is: by Shopify's variant id, then by its
/// inventory item, then by SKU.
fn match_variant<'e>(
    existing: &'e [ExistingVariant],
    variant_id: &str,
    item: Option<&str>,
    sku: &str,
) -> Option<&'e ExistingVariant> {
    existing
        .iter()
        .find(|e| e.shopify_variant_id.as_deref() == Some(variant_id))
        .or_else(|| {
            item.and_then(|i| {
                existing
                    .iter()
                    .find(|e| e.inventory_item_id.as_deref() == Some(i))
            })
        })
        .or_else(|| existing.iter().find(|e| e.sku == sku))
}

impl Db {
    /// Writes a Shopify product unless a delivery at least as new was applied (or the
    /// product was deleted). The product is the one this Shopify product became
    /// before; else the store's product holding one of its SKUs or inventory items
    /// (a catalog made by hand is taken over, keeping its ids and sign-ups); else a
    /// new one. A variant whose SKU changed in the shop keeps its row and sign-ups.
    /// Variants the shop no longer lists are marked removed; every variant of the
    /// product is judged again (a product off sale has nothing to sell).
    pub async fn sync_shopify_product(
        &self,
        store: StoreId,
        sync: &ProductSync,
        now: i64,
    ) -> Result<SyncOutcome, CatalogError> {
        let mut input = sync.product.clone();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let claimed: Option<Option<i64>> = sqlx::query_scalar(
                "INSERT INTO shopify_products (store_id, shopify_id, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (store_id, shopify_id) DO UPDATE SET updated_at = excluded.updated_at \
                 WHERE shopify_products.updated_at <= excluded.updated_at \
                   AND shopify_products.deleted_at IS NULL \
                 RETURNING product_id",
            )
            .bind(store.0)
            .bind(&sync.shopify_id)
            .bind(sync.updated_at_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(linked) = claimed else {
                let deleted: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT deleted_at FROM shopify_products WHERE store_id = $1 AND shopify_id = $2",
                )
                .bind(store.0)
                .bind(&sync.shopify_id)
                .fetch_optional(&mut *tx)
                .await?;
                return Ok(if deleted.flatten().is_some() {
                    SyncOutcome::Deleted
                } else {
                    SyncOutcome::Stale
                });
            };
            let mut target = linked;
            if target.is_none() {
                // A product made by hand (or by an earlier integration) with these
                // SKUs or inventory items, not yet tied to another Shopify product.
                for v in &input.variants {
                    target = sqlx::query_scalar(
                        "SELECT v.product_id FROM variants v WHERE v.store_id = $1 \
                           AND (v.sku = $2 OR v.inventory_item_id = $3) \
                           AND NOT EXISTS (SELECT 1 FROM shopify_products s WHERE s.product_id = v.product_id) \
                         LIMIT 1",
                    )
                    .bind(store.0)
                    .bind(v.sku.as_str())
                    .bind(v.inventory_item_id.as_deref())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if target.is_some() {
                        break;
                    }
                }
            }
            if target.is_none() {
                target = sqlx::query_scalar(
                    "SELECT id FROM products WHERE store_id = $1 AND external_id = $2",
                )
                .bind(store.0)
                .bind(&input.external_id)
                .fetch_optional(&mut *tx)
                .await?;
            }
            if let Some(id) = target {
                let existing: ExistingProduct = sqlx::query_as(
                    "SELECT p.external_id, c.handle AS category, p.min_stock, p.notify_threshold, p.release_policy \
                     FROM products p LEFT JOIN categories c ON c.id = p.category_id WHERE p.id = $1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                input.external_id = existing.external_id;
                input.category = existing.category;
                input.min_stock = existing.min_stock;
                input.notify_threshold = existing.notify_threshold;
                input.release = parse_release_policy(existing.release_policy.as_deref());
                let variants: Vec<ExistingVariant> = sqlx::query_as(
                    "SELECT id, sku, shopify_variant_id, inventory_item_id, min_stock, notify_threshold \
                     FROM variants WHERE product_id = $1",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                for (v, variant_id) in input.variants.iter_mut().zip(&sync.variant_ids) {
                    let Some(e) = match_variant(&variants, variant_id, v.inventory_item_id.as_deref(), v.sku.as_str()) else {
                        continue;
                    };
                    v.min_stock = e.min_stock;
                    v.notify_threshold = e.notify_threshold;
                    if e.sku != v.sku.as_str() {
                        // The SKU changed in the shop: the row (and who waits for
                        // it) follows, unless the new SKU is another variant's.
                        let holder: Option<i64> = sqlx::query_scalar(
                            "SELECT id FROM variants WHERE store_id = $1 AND sku = $2",
                        )
                        .bind(store.0)
                        .bind(v.sku.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                        if holder.is_some() {
                            return Err(CatalogError::SkuTaken(v.sku.as_str().to_string()));
                        }
                        sqlx::query("UPDATE variants SET sku = $2 WHERE id = $1")
                            .bind(e.id)
                            .bind(v.sku.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            let (product_id, written) = write_product!(tx, store, &input, now)?;
            for (vid, variant_id) in written.iter().zip(&sync.variant_ids) {
                sqlx::query("UPDATE variants SET shopify_variant_id = $2, removed_at = NULL WHERE id = $1")
                    .bind(vid)
                    .bind(variant_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE products SET status = $2 WHERE id = $1")
                .bind(product_id)
                .bind(sync.status)
                .execute(&mut *tx)
                .await?;
            let listed: Vec<(i64, String, Option<String>)> = sqlx::query_as(
                "SELECT id, sku, shopify_variant_id FROM variants \
                 WHERE product_id = $1 AND removed_at IS NULL AND shopify_variant_id IS NOT NULL",
            )
            .bind(product_id)
            .fetch_all(&mut *tx)
            .await?;
            let mut removed = Vec::new();
            for (id, sku, variant_id) in listed {
                if variant_id.is_some_and(|v| !sync.listed_variant_ids.contains(&v)) {
                    sqlx::query("UPDATE variants SET removed_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    removed.push(sku);
                }
            }
            sqlx::query("UPDATE shopify_products SET product_id = $3 WHERE store_id = $1 AND shopify_id = $2")
                .bind(store.0)
                .bind(&sync.shopify_id)
                .bind(product_id)
                .execute(&mut *tx)
                .await?;
            let all: Vec<i64> = sqlx::query_scalar("SELECT id FROM variants WHERE product_id = $1 ORDER BY id")
                .bind(product_id)
                .fetch_all(&mut *tx)
                .await?;
            let all: Vec<VariantId> = all.into_iter().map(VariantId).collect();
            let restocks = tx.evaluate_variants(&all, CAUSE, now).await?;
            tx.commit().await?;
            Ok(SyncOutcome::Applied {
                external_id: input.external_id,
                removed,
                restocks,
            })
        })
    }

    /// Records that the shop deleted a product. Its catalog product (if it became
    /// one) is marked deleted and its variants removed: the rows stay for their
    /// history and sign-ups, nothing of it is for sale or takes new sign-ups, and a
    /// product update delivered after the delete is not applied. Answers the
    /// product's id in the catalog, if it had one.
    pub async fn delete_shopify_product(
        &self,
        store: StoreId,
        shopify_id: &str,
        now: i64,
    ) -> Result<Option<String>> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let product: Option<i64> = sqlx::query_scalar(
                "INSERT INTO shopify_products (store_id, shopify_id, updated_at, deleted_at) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (store_id, shopify_id) DO UPDATE \
                   SET deleted_at = COALESCE(shopify_products.deleted_at, excluded.deleted_at) \
                 RETURNING product_id",
            )
            .bind(store.0)
            .bind(shopify_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let Some(product) = product else {
                tx.commit().await?;
                return Ok(None);
            };
            let external_id: String = sqlx::query_scalar(
                "UPDATE products SET status = 'deleted' WHERE id = $1 RETURNING external_id",
            )
            .bind(product)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE variants SET removed_at = COALESCE(removed_at, $2) WHERE product_id = $1")
                .bind(product)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let all: Vec<i64> = sqlx::query_scalar("SELECT id FROM variants WHERE product_id = $1 ORDER BY id")
                .bind(product)
                .fetch_all(&mut *tx)
                .await?;
            let all: Vec<VariantId> = all.into_iter().map(VariantId).collect();
            tx.evaluate_variants(&all, CAUSE, now).await?;
            tx.commit().await?;
            Ok(Some(external_id))
        })
    }
}
