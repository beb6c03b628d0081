//! Catalog: categories, products and their variants, as the merchant gives them.

use std::collections::{BTreeMap, HashMap};

use restock_core::ids::{ProductId, StoreId, VariantId};
use restock_core::policy::ReleasePolicy;
use restock_core::stock::InventoryPolicy;
use restock_core::values::{Currency, HttpUrl, Sku};

use super::demand::SkuFacts;
use super::stock::TxOps;
use super::{Db, Dialect, Result, with_pool};

#[derive(Debug, Clone)]
pub struct CategoryInput {
    pub handle: String,
    pub name: String,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ProductInput {
    pub external_id: String,
    pub title: String,
    pub description: String,
    pub image_url: Option<HttpUrl>,
    pub url: HttpUrl,
    /// Category handle; created on first use.
    pub category: Option<String>,
    pub price_minor: i64,
    pub currency: Currency,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
    /// How this product's restocks are released, if not as the store's are.
    pub release: Option<ReleasePolicy>,
    pub variants: Vec<VariantInput>,
}

#[derive(Debug, Clone)]
pub struct VariantInput {
    pub sku: Sku,
    pub title: String,
    pub options: BTreeMap<String, String>,
    pub price_minor: Option<i64>,
    pub image_url: Option<HttpUrl>,
    pub url: Option<HttpUrl>,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
    pub inventory_item_id: Option<String>,
    pub inventory_policy: InventoryPolicy,
}

impl VariantInput {
    /// A variant with its SKU and title and nothing else set (no price of its own,
    /// links, thresholds or inventory mapping; the default inventory policy).
    pub fn plain(sku: Sku, title: impl Into<String>) -> Self {
        VariantInput {
            sku,
            title: title.into(),
            options: BTreeMap::new(),
            price_minor: None,
            image_url: None,
            url: None,
            min_stock: None,
            notify_threshold: None,
            inventory_item_id: None,
            inventory_policy: InventoryPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: i64,
    pub external_id: String,
    pub title: String,
    pub description: String,
    pub image_url: Option<String>,
    pub url: String,
    pub category: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
    pub release_policy: Option<String>,
    /// "active", "draft", "archived" or "deleted" (see the 0007 migration).
    pub status: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VariantRow {
    pub id: i64,
    pub product_id: i64,
    pub sku: String,
    pub title: String,
    pub options: String,
    pub price_minor: Option<i64>,
    pub image_url: Option<String>,
    pub url: Option<String>,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
    pub inventory_item_id: Option<String>,
    pub available: i64,
    pub in_stock: bool,
    pub available_until: Option<i64>,
    pub inventory_policy: String,
    /// When the shop removed it from its product (kept for history; not for sale).
    pub removed_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ProductWithVariants {
    pub product: ProductRow,
    pub variants: Vec<VariantRow>,
}

macro_rules! product_columns {
    () => {
        "p.id, p.external_id, p.title, p.description, p.image_url, p.url, \
     c.handle AS category, p.price_minor, p.currency, p.min_stock, p.notify_threshold, p.release_policy, p.status"
    };
}
macro_rules! variant_columns {
    () => {
        "id, product_id, sku, title, options, price_minor, image_url, url, min_stock, \
     notify_threshold, inventory_item_id, available, in_stock, available_until, inventory_policy, removed_at"
    };
}

/// The columns of [`SkuFacts`], of a variant `v`. A placeholder product holds stock
/// that came before the catalog named the SKU: nothing to show a shopper, and no
/// price or page to send them to yet.
macro_rules! sku_facts_columns {
    () => {
        "v.id, v.product_id, v.removed_at IS NOT NULL AS removed, v.in_stock, \
         EXISTS (SELECT 1 FROM products p WHERE p.id = v.product_id \
                 AND substr(p.external_id, 1, 20) = 'restock-placeholder:') AS placeholder"
    };
}

/// [`Db::sku_facts`]'s statement.
const SKU_FACTS: &str = concat!(
    "SELECT ",
    sku_facts_columns!(),
    " FROM variants v WHERE v.store_id = $1 AND v.sku = $2"
);

/// [`Db::sku_facts`] on a PostgreSQL connection the caller holds (a sign-up by
/// SKU, which then signs up on the same connection).
pub async fn sku_facts_pg(
    conn: &mut sqlx::PgConnection,
    store: StoreId,
    sku: &str,
) -> sqlx::Result<Option<SkuFacts>> {
    sqlx::query_as(SKU_FACTS)
        .bind(store.0)
        .bind(sku)
        .fetch_optional(conn)
        .await
}

/// The facts ([`Db::sku_facts`]) of the variants `skus` name, read in one statement
/// on a SQLite connection (the sign-up writer's, in its group's transaction), keyed
/// by store and SKU; a SKU no variant has is absent.
pub async fn sku_facts_of(
    conn: &mut sqlx::SqliteConnection,
    skus: &[(StoreId, &str)],
) -> sqlx::Result<HashMap<(StoreId, String), SkuFacts>> {
    #[derive(sqlx::FromRow)]
    struct Found {
        store_id: i64,
        sku: String,
        #[sqlx(flatten)]
        facts: SkuFacts,
    }
    let keys: Vec<(i64, &str)> = skus.iter().map(|(store, sku)| (store.0, *sku)).collect();
    let found: Vec<Found> = sqlx::query_as(concat!(
        "SELECT v.store_id, v.sku, ",
        sku_facts_columns!(),
        " FROM json_each($1) JOIN variants v ON v.store_id = CAST(value ->> 0 AS BIGINT) AND v.sku = value ->> 1"
    ))
    .bind(serde_json::to_string(&keys).unwrap_or_default())
    .fetch_all(conn)
    .await?;
    Ok(found
        .into_iter()
        .map(|f| ((StoreId(f.store_id), f.sku), f.facts))
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("SKU {0:?} belongs to another product of this store")]
    SkuTaken(String),
    #[error("inventory item {0:?} is already mapped to another variant")]
    InventoryItemTaken(String),
    #[error(transparent)]
    Storage(#[from] super::StorageError),
}

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        CatalogError::Storage(e.into())
    }
}

/// External id prefix of the products a source's profile creates for SKUs the catalog
/// does not know yet. Such a product takes no sign-ups; the first real product that
/// names the SKU adopts its variant.
pub const PLACEHOLDER_PREFIX: &str = "restock-placeholder:";
/// Writes a product and its variants in the caller's transaction `$tx` (one body for
/// both databases and for every caller: the API and the Shopify sync write the
/// catalog the same way). Evaluates `Ok((product_id, variant ids written))`.
macro_rules! write_product {
    ($tx:ident, $store:expr, $p:expr, $now:expr) => {{
        let (store, p, now): (StoreId, &ProductInput, i64) = ($store, $p, $now);
        async {
            let category_id: Option<i64> = match &p.category {
                Some(handle) => {
                    sqlx::query("INSERT INTO categories (store_id, handle, name) VALUES ($1, $2, $2) ON CONFLICT DO NOTHING")
                        .bind(store.0)
                        .bind(handle)
                        .execute(&mut *$tx)
                        .await?;
                    sqlx::query_scalar("SELECT id FROM categories WHERE store_id = $1 AND handle = $2")
                        .bind(store.0)
                        .bind(handle)
                        .fetch_optional(&mut *$tx)
                        .await?
                }
                None => None,
            };
            let product_id: i64 = sqlx::query_scalar(
                "INSERT INTO products (store_id, external_id, title, description, image_url, url, category_id, \
                                       price_minor, currency, min_stock, notify_threshold, updated_at, release_policy) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (store_id, external_id) DO UPDATE SET title = excluded.title, \
                   description = excluded.description, image_url = excluded.image_url, url = excluded.url, \
                   category_id = excluded.category_id, price_minor = excluded.price_minor, \
                   currency = excluded.currency, min_stock = excluded.min_stock, \
                   notify_threshold = excluded.notify_threshold, updated_at = excluded.updated_at, \
                   release_policy = excluded.release_policy \
                 RETURNING id",
            )
            .bind(store.0)
            .bind(&p.external_id)
            .bind(&p.title)
            .bind(&p.description)
            .bind(p.image_url.as_ref().map(|u| u.as_str()))
            .bind(p.url.as_str())
            .bind(category_id)
            .bind(p.price_minor)
            .bind(p.currency.as_str())
            .bind(p.min_stock)
            .bind(p.notify_threshold)
            .bind(now)
            .bind(p.release.as_ref().map(|r| serde_json::to_string(r).unwrap_or_default()))
            .fetch_one(&mut *$tx)
            .await?;
            let mut touched = Vec::new();
            for v in &p.variants {
                let owner: Option<i64> = sqlx::query_scalar("SELECT product_id FROM variants WHERE store_id = $1 AND sku = $2")
                    .bind(store.0)
                    .bind(v.sku.as_str())
                    .fetch_optional(&mut *$tx)
                    .await?;
                if let Some(o) = owner.filter(|o| *o != product_id) {
                    // A placeholder a source's profile created for an unknown SKU is
                    // adopted by the first product that names the SKU.
                    let placeholder: Option<String> =
                        sqlx::query_scalar("SELECT external_id FROM products WHERE id = $1")
                            .bind(o)
                            .fetch_optional(&mut *$tx)
                            .await?;
                    if !placeholder.is_some_and(|e| e.starts_with($crate::storage::catalog::PLACEHOLDER_PREFIX)) {
                        return Err(CatalogError::SkuTaken(v.sku.as_str().to_string()));
                    }
                    sqlx::query("UPDATE variants SET product_id = $1 WHERE store_id = $2 AND sku = $3")
                        .bind(product_id)
                        .bind(store.0)
                        .bind(v.sku.as_str())
                        .execute(&mut *$tx)
                        .await?;
                }
                if let Some(item) = &v.inventory_item_id {
                    let holder: Option<String> = sqlx::query_scalar(
                        "SELECT sku FROM variants WHERE store_id = $1 AND inventory_item_id = $2",
                    )
                    .bind(store.0)
                    .bind(item)
                    .fetch_optional(&mut *$tx)
                    .await?;
                    if holder.is_some_and(|s| s != v.sku.as_str()) {
                        return Err(CatalogError::InventoryItemTaken(item.clone()));
                    }
                }
                let options = serde_json::to_string(&v.options).unwrap_or_else(|_| "{}".into());
                let vid: i64 = sqlx::query_scalar(
                    "INSERT INTO variants (store_id, product_id, sku, title, options, price_minor, image_url, url, \
                                           min_stock, notify_threshold, inventory_item_id, updated_at, inventory_policy) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (store_id, sku) DO UPDATE SET title = excluded.title, options = excluded.options, \
                       price_minor = excluded.price_minor, image_url = excluded.image_url, url = excluded.url, \
                       min_stock = excluded.min_stock, notify_threshold = excluded.notify_threshold, \
                       inventory_item_id = excluded.inventory_item_id, updated_at = excluded.updated_at, \
                       inventory_policy = excluded.inventory_policy \
                     RETURNING id",
                )
                .bind(store.0)
                .bind(product_id)
                .bind(v.sku.as_str())
                .bind(&v.title)
                .bind(options)
                .bind(v.price_minor)
                .bind(v.image_url.as_ref().map(|u| u.as_str()))
                .bind(v.url.as_ref().map(|u| u.as_str()))
                .bind(v.min_stock)
                .bind(v.notify_threshold)
                .bind(v.inventory_item_id.as_deref())
                .bind(now)
                .bind(v.inventory_policy.as_str())
                .fetch_one(&mut *$tx)
                .await?;
                touched.push(vid);
            }
            Ok::<_, CatalogError>((product_id, touched))
        }
        .await
    }};
}
pub(crate) use write_product;

impl Db {
    pub async fn upsert_category(&self, store: StoreId, c: &CategoryInput) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO categories (store_id, handle, name, min_stock, notify_threshold) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (store_id, handle) DO UPDATE SET name = excluded.name, \
                   min_stock = excluded.min_stock, notify_threshold = excluded.notify_threshold",
            )
            .bind(store.0)
            .bind(&c.handle)
            .bind(&c.name)
            .bind(c.min_stock)
            .bind(c.notify_threshold)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Creates or replaces a product and upserts its variants (variants not named are
    /// left as they are). Changed thresholds are judged at once, in the same
    /// transaction: lowering a threshold can make a variant restock.
    pub async fn upsert_product(
        &self,
        store: StoreId,
        p: &ProductInput,
        now: i64,
    ) -> Result<(ProductId, Vec<super::stock::RestockOutcome>), CatalogError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let (product_id, touched) = write_product!(tx, store, p, now)?;
            let touched: Vec<VariantId> = touched.into_iter().map(VariantId).collect();
            let restocks = tx.evaluate_variants(&touched, "catalog", now).await?;
            tx.commit().await?;
            Ok((ProductId(product_id), restocks))
        })
    }

    pub async fn product(
        &self,
        store: StoreId,
        external_id: &str,
    ) -> Result<Option<ProductWithVariants>> {
        with_pool!(self, pool => {
            let product: Option<ProductRow> = sqlx::query_as(concat!("SELECT ", product_columns!(), " FROM products p LEFT JOIN categories c ON c.id = p.category_id \
                 WHERE p.store_id = $1 AND p.external_id = $2"))
            .bind(store.0)
            .bind(external_id)
            .fetch_optional(pool)
            .await?;
            let Some(product) = product else { return Ok(None) };
            let variants: Vec<VariantRow> = sqlx::query_as(concat!("SELECT ", variant_columns!(), " FROM variants WHERE product_id = $1 ORDER BY id"))
            .bind(product.id)
            .fetch_all(pool)
            .await?;
            Ok(Some(ProductWithVariants { product, variants }))
        })
    }

    pub async fn products(
        &self,
        store: StoreId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ProductRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", product_columns!(), " FROM products p LEFT JOIN categories c ON c.id = p.category_id \
                 WHERE p.store_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3"))
            .bind(store.0)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Gives each SKU of `updates` the catalog does not know a placeholder product and
    /// variant, so its stock can be kept until the catalog names it (see
    /// [`PLACEHOLDER_PREFIX`]).
    pub async fn ensure_placeholders(
        &self,
        store: StoreId,
        updates: &[restock_core::stock::StockUpdate],
        now: i64,
    ) -> Result<usize> {
        let skus: std::collections::BTreeSet<&str> =
            updates.iter().map(|u| u.sku.as_str()).collect();
        let mut created = 0;
        with_pool!(self, pool => {
            for sku in skus {
                let known: Option<i64> = sqlx::query_scalar("SELECT id FROM variants WHERE store_id = $1 AND sku = $2")
                    .bind(store.0)
                    .bind(sku)
                    .fetch_optional(pool)
                    .await?;
                if known.is_some() {
                    continue;
                }
                let mut tx = pool.begin_write().await?;
                let external = format!("{PLACEHOLDER_PREFIX}{sku}");
                sqlx::query(
                    "INSERT INTO products (store_id, external_id, title, description, url, price_minor, currency, updated_at) \
                     VALUES ($1, $2, $3, 'Created for stock that arrived before the catalog named its SKU.', '', 0, 'XXX', $4) \
                     ON CONFLICT (store_id, external_id) DO NOTHING",
                )
                .bind(store.0)
                .bind(&external)
                .bind(sku)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let product: i64 = sqlx::query_scalar("SELECT id FROM products WHERE store_id = $1 AND external_id = $2")
                    .bind(store.0)
                    .bind(&external)
                    .fetch_one(&mut *tx)
                    .await?;
                created += sqlx::query(
                    "INSERT INTO variants (store_id, product_id, sku, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (store_id, sku) DO NOTHING",
                )
                .bind(store.0)
                .bind(product)
                .bind(sku)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected() as usize;
                tx.commit().await?;
            }
        });
        Ok(created)
    }

    pub async fn variant_by_sku(&self, store: StoreId, sku: &str) -> Result<Option<VariantRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", variant_columns!(), " FROM variants WHERE store_id = $1 AND sku = $2"))
            .bind(store.0)
            .bind(sku)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// What the sign-up rule ([`SkuFacts::target`]) reads of the variant a SKU names.
    pub async fn sku_facts(&self, store: StoreId, sku: &str) -> Result<Option<SkuFacts>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(SKU_FACTS)
                .bind(store.0)
                .bind(sku)
                .fetch_optional(pool)
                .await?)
        })
    }

    pub async fn variant_by_inventory_item(
        &self,
        store: StoreId,
        item: &str,
    ) -> Result<Option<VariantRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", variant_columns!(), " FROM variants WHERE store_id = $1 AND inventory_item_id = $2"))
            .bind(store.0)
            .bind(item)
            .fetch_optional(pool)
            .await?)
        })
    }

    pub async fn product_variants(&self, product: ProductId) -> Result<Vec<VariantRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", variant_columns!(), " FROM variants WHERE product_id = $1 ORDER BY id"))
                .bind(product.0)
                .fetch_all(pool)
                .await?)
        })
    }
}
