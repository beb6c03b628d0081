//! Stores, their API keys and settings. Every other row belongs to a store.

use restock_core::ids::StoreId;

use super::{Db, Dialect, Result, with_pool};
use crate::util::{random_token, sha256_hex};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoreRow {
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub publishable_key: String,
    pub shopify_secret: Option<String>,
    pub woocommerce_secret: Option<String>,
    pub allowed_origins: String,
    pub min_stock: i64,
    pub notify_threshold: i64,
    pub created_at: i64,
    /// The store's rules as JSON (`restock_core::policy::StorePolicy`).
    pub policy: String,
    /// Days finished notifications and tracking events are kept.
    pub retention_days: i64,
    /// The store's ISO 4217 currency, where set (prices that arrive without one,
    /// such as Shopify's product prices, are in it).
    pub currency: Option<String>,
    /// The Shopify shop's domain, as its signed deliveries name it.
    pub shopify_domain: Option<String>,
}

impl StoreRow {
    pub fn store_id(&self) -> StoreId {
        StoreId(self.id)
    }

    pub fn policy(&self) -> restock_core::policy::StorePolicy {
        super::stock::parse_store_policy(&self.policy)
    }

    pub fn origins(&self) -> Vec<String> {
        serde_json::from_str(&self.allowed_origins).unwrap_or_default()
    }
}

/// A new store with its credentials. The API key exists only here: storage keeps
/// its hash.
#[derive(Debug, Clone)]
pub struct CreatedStore {
    pub store: StoreRow,
    pub api_key: String,
}

pub struct NewStore<'a> {
    pub name: &'a str,
    pub slug: &'a str,
    pub allowed_origins: &'a [String],
    pub shopify_secret: Option<&'a str>,
    pub woocommerce_secret: Option<&'a str>,
}

impl<'a> NewStore<'a> {
    /// A store with its name and slug only: no storefront origins, no platform
    /// secrets.
    pub fn plain(name: &'a str, slug: &'a str) -> Self {
        NewStore {
            name,
            slug,
            allowed_origins: &[],
            shopify_secret: None,
            woocommerce_secret: None,
        }
    }
}

macro_rules! store_columns {
    () => {
        "id, name, slug, publishable_key, shopify_secret, woocommerce_secret, allowed_origins, min_stock, notify_threshold, created_at, retention_days, policy, currency, shopify_domain"
    };
}

pub fn new_api_key() -> String {
    format!("rk_{}", random_token(24))
}

impl Db {
    pub async fn create_store(&self, new: NewStore<'_>, now: i64) -> Result<CreatedStore> {
        let publishable = format!("pk_{}", random_token(18));
        let api_key = new_api_key();
        let origins = serde_json::to_string(new.allowed_origins).unwrap_or_else(|_| "[]".into());
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let store: StoreRow = sqlx::query_as(concat!("INSERT INTO stores (name, slug, publishable_key, shopify_secret, woocommerce_secret, allowed_origins, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ", store_columns!()))
            .bind(new.name)
            .bind(new.slug)
            .bind(&publishable)
            .bind(new.shopify_secret)
            .bind(new.woocommerce_secret)
            .bind(&origins)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO api_keys (store_id, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4)")
                .bind(store.id)
                .bind(sha256_hex(&api_key))
                .bind(&api_key[..8])
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(CreatedStore { store, api_key })
        })
    }

    /// Issues another API key for a store (key rotation).
    pub async fn create_api_key(&self, store: StoreId, now: i64) -> Result<String> {
        let api_key = new_api_key();
        with_pool!(self, pool => {
            sqlx::query("INSERT INTO api_keys (store_id, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4)")
                .bind(store.0)
                .bind(sha256_hex(&api_key))
                .bind(&api_key[..8])
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(api_key)
    }

    /// The store an API key belongs to, if the key is known and not revoked.
    pub async fn store_for_api_key(&self, api_key: &str) -> Result<Option<StoreId>> {
        let hash = sha256_hex(api_key);
        with_pool!(self, pool => {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT store_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(&hash)
            .fetch_optional(pool)
            .await?;
            Ok(id.map(StoreId))
        })
    }

    pub async fn store(&self, store: StoreId) -> Result<Option<StoreRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", store_columns!(), " FROM stores WHERE id = $1"))
                .bind(store.0)
                .fetch_optional(pool)
                .await?)
        })
    }

    pub async fn store_by_slug(&self, slug: &str) -> Result<Option<StoreRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", store_columns!(), " FROM stores WHERE slug = $1"))
                .bind(slug)
                .fetch_optional(pool)
                .await?)
        })
    }

    pub async fn store_by_publishable_key(&self, key: &str) -> Result<Option<StoreRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", store_columns!(), " FROM stores WHERE publishable_key = $1"))
                .bind(key)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Records the Shopify shop domain a signed delivery named, if it changed.
    pub async fn set_shopify_domain(&self, store: StoreId, domain: &str) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE stores SET shopify_domain = $2 WHERE id = $1 AND (shopify_domain IS NULL OR shopify_domain <> $2)")
                .bind(store.0)
                .bind(domain)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn list_stores(&self) -> Result<Vec<StoreRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", store_columns!(), " FROM stores ORDER BY id"))
                .fetch_all(pool)
                .await?)
        })
    }

    /// Replaces the store's rules (validated by the caller).
    pub async fn set_store_policy(
        &self,
        store: StoreId,
        policy: &restock_core::policy::StorePolicy,
    ) -> Result<StoreRow> {
        let json = serde_json::to_string(policy).unwrap_or_else(|_| "{}".into());
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("UPDATE stores SET policy = $2 WHERE id = $1 RETURNING ", store_columns!()))
                .bind(store.0)
                .bind(json)
                .fetch_one(pool)
                .await?)
        })
    }

    pub async fn update_store_settings(
        &self,
        store: StoreId,
        settings: &StoreSettingsUpdate,
    ) -> Result<StoreRow> {
        let origins = settings
            .allowed_origins
            .as_ref()
            .map(|o| serde_json::to_string(o).unwrap_or_else(|_| "[]".into()));
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("UPDATE stores SET \
                   name = COALESCE($2, name), \
                   min_stock = COALESCE($3, min_stock), \
                   notify_threshold = COALESCE($4, notify_threshold), \
                   allowed_origins = COALESCE($5, allowed_origins), \
                   shopify_secret = CASE WHEN $6 THEN $7 ELSE shopify_secret END, \
                   retention_days = COALESCE($8, retention_days), \
                   woocommerce_secret = CASE WHEN $9 THEN $10 ELSE woocommerce_secret END, \
                   currency = COALESCE($11, currency) \
                 WHERE id = $1 RETURNING ", store_columns!()))
            .bind(store.0)
            .bind(settings.name.as_deref())
            .bind(settings.min_stock)
            .bind(settings.notify_threshold)
            .bind(origins)
            .bind(settings.shopify_secret.is_some())
            .bind(settings.shopify_secret.clone().flatten())
            .bind(settings.retention_days)
            .bind(settings.woocommerce_secret.is_some())
            .bind(settings.woocommerce_secret.clone().flatten())
            .bind(settings.currency.as_ref().map(|c| c.as_str()))
            .fetch_one(pool)
            .await?)
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct StoreSettingsUpdate {
    pub name: Option<String>,
    pub min_stock: Option<i64>,
    pub notify_threshold: Option<i64>,
    pub allowed_origins: Option<Vec<String>>,
    /// `Some(None)` disconnects Shopify. Stored as given: the caller seals it.
    pub shopify_secret: Option<Option<String>>,
    /// `Some(None)` disconnects WooCommerce. Stored as given: the caller seals it.
    pub woocommerce_secret: Option<Option<String>>,
    pub retention_days: Option<i64>,
    pub currency: Option<restock_core::values::Currency>,
}

/// The stores' webhook secrets, one column per platform. The column name is also
/// the context each secret is sealed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSecret {
    Shopify,
    WooCommerce,
}

impl WebhookSecret {
    pub const ALL: [WebhookSecret; 2] = [WebhookSecret::Shopify, WebhookSecret::WooCommerce];

    pub fn column(self) -> &'static str {
        match self {
            WebhookSecret::Shopify => "shopify_secret",
            WebhookSecret::WooCommerce => "woocommerce_secret",
        }
    }

    /// The secret as stored (sealed) for this store, if the platform is connected.
    pub fn stored(self, store: &StoreRow) -> Option<&str> {
        match self {
            WebhookSecret::Shopify => store.shopify_secret.as_deref(),
            WebhookSecret::WooCommerce => store.woocommerce_secret.as_deref(),
        }
    }
}

impl Db {
    /// Every store's secret for one platform as stored, for re-sealing with a new key.
    pub async fn webhook_secrets(&self, which: WebhookSecret) -> Result<Vec<(i64, String)>> {
        let sql = format!(
            "SELECT id, {c} FROM stores WHERE {c} IS NOT NULL ORDER BY id",
            c = which.column()
        );
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?)
        })
    }

    /// Replaces a store's stored secret only if it is still `old` (so a rotation
    /// never overwrites a secret the merchant changed meanwhile).
    pub async fn reseal_webhook_secret(
        &self,
        which: WebhookSecret,
        store: i64,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE stores SET {c} = $3 WHERE id = $1 AND {c} = $2",
            c = which.column()
        );
        with_pool!(self, pool => {
            Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(store)
                .bind(old)
                .bind(new)
                .execute(pool)
                .await?
                .rows_affected() == 1)
        })
    }
}
