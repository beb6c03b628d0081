//! Sources: what each inventory and order source is, where it left off, who runs it
//! (a lease, so exactly one instance runs a poller), and how healthy it is.

use restock_core::ids::StoreId;

use super::{Db, Result, with_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
    pub kind: String,
    /// The kind's settings, sealed (see `intake::source`).
    pub config: String,
    pub profile: String,
    pub enabled: bool,
    pub interval_secs: i64,
    pub cursor: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub next_run_at: i64,
    pub last_run_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_event_at: Option<i64>,
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: i64,
    pub recent: String,
    pub runs: i64,
    pub applied: i64,
    pub rejected: i64,
    pub breaker_open_until: Option<i64>,
    pub stale_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, store_id, name, kind, config, profile, enabled, interval_secs, cursor, lease_owner, \
     lease_until, next_run_at, last_run_at, last_success_at, last_event_at, last_error_at, last_error, \
     consecutive_failures, recent, runs, applied, rejected, breaker_open_until, stale_since, created_at, updated_at";

/// What a source is set to (from the API).
#[derive(Debug, Clone)]
pub struct SourceSettings<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub config_sealed: &'a str,
    pub profile: &'a str,
    pub enabled: bool,
    pub interval_secs: i64,
}

/// How one run (or one batch of a stream) went.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub ok: bool,
    pub error: Option<String>,
    pub applied: i64,
    pub rejected: i64,
    /// Observed time of the newest change seen (ms).
    pub newest_event_at: Option<i64>,
    /// Where to resume from; `None` keeps the stored cursor.
    pub cursor: Option<String>,
    /// Pull sources: when to run next.
    pub next_run_at: Option<i64>,
    /// Pull sources: stop running until then (circuit breaker open).
    pub breaker_open_until: Option<i64>,
}

/// `recent` with one more outcome letter, keeping the last 20.
const RECENT: &str = "CASE WHEN LENGTH(recent) >= 20 THEN SUBSTR(recent, 2) ELSE recent END";

impl Db {
    /// Creates or replaces a source's settings, keeping its cursor and health unless
    /// its kind changed (then it starts afresh).
    pub async fn put_source(
        &self,
        store: StoreId,
        s: &SourceSettings<'_>,
        now: i64,
    ) -> Result<SourceRow> {
        let sql = format!(
            "INSERT INTO sources (store_id, name, kind, config, profile, enabled, interval_secs, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (store_id, name) DO UPDATE SET \
                cursor = CASE WHEN sources.kind = excluded.kind THEN sources.cursor ELSE NULL END, \
                next_run_at = CASE WHEN sources.kind = excluded.kind AND sources.interval_secs = excluded.interval_secs \
                                   THEN sources.next_run_at ELSE 0 END, \
                kind = excluded.kind, config = excluded.config, profile = excluded.profile, \
                enabled = excluded.enabled, interval_secs = excluded.interval_secs, \
                breaker_open_until = NULL, consecutive_failures = 0, updated_at = excluded.updated_at \
             RETURNING {COLUMNS}"
        );
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(store.0)
                .bind(s.name)
                .bind(s.kind)
                .bind(s.config_sealed)
                .bind(s.profile)
                .bind(s.enabled)
                .bind(s.interval_secs)
                .bind(now)
                .fetch_one(pool)
                .await?)
        })
    }

    pub async fn sources(&self, store: StoreId) -> Result<Vec<SourceRow>> {
        let sql = format!("SELECT {COLUMNS} FROM sources WHERE store_id = $1 ORDER BY name");
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(store.0).fetch_all(pool).await?)
        })
    }

    /// Every source in every store (for the operator's `restock sources`).
    pub async fn all_sources(&self) -> Result<Vec<SourceRow>> {
        let sql = format!("SELECT {COLUMNS} FROM sources ORDER BY store_id, name");
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?)
        })
    }

    pub async fn source(&self, store: StoreId, name: &str) -> Result<Option<SourceRow>> {
        let sql = format!("SELECT {COLUMNS} FROM sources WHERE store_id = $1 AND name = $2");
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(store.0).bind(name).fetch_optional(pool).await?)
        })
    }

    pub async fn source_by_id(&self, id: i64) -> Result<Option<SourceRow>> {
        let sql = format!("SELECT {COLUMNS} FROM sources WHERE id = $1");
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?)
        })
    }

    pub async fn delete_source(&self, store: StoreId, name: &str) -> Result<bool> {
        with_pool!(self, pool => {
            Ok(sqlx::query("DELETE FROM sources WHERE store_id = $1 AND name = $2")
                .bind(store.0)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Enabled sources of the given kinds in every store: what the workers run.
    pub async fn runnable_sources(&self, kinds: &[&str]) -> Result<Vec<SourceRow>> {
        let list = kinds
            .iter()
            .map(|k| format!("'{}'", k.replace('\'', "")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {COLUMNS} FROM sources WHERE enabled = TRUE AND kind IN ({list}) ORDER BY id"
        );
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?)
        })
    }

    /// Takes or renews the source's lease for `owner` until `until`. True when `owner`
    /// holds it: it was free, expired, or already `owner`'s.
    pub async fn lease_source(&self, id: i64, owner: &str, now: i64, until: i64) -> Result<bool> {
        with_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE sources SET lease_owner = $2, lease_until = $4 \
                 WHERE id = $1 AND enabled = TRUE \
                   AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until IS NULL OR lease_until < $3)",
            )
            .bind(id)
            .bind(owner)
            .bind(now)
            .bind(until)
            .execute(pool)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Gives the lease up (on shutdown), so another instance takes over at once.
    pub async fn release_source(&self, id: i64, owner: &str) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE sources SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2")
                .bind(id)
                .bind(owner)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a run of a configured source: its health, counters and cursor. A
    /// success clears the stale mark; returns the row as it now is.
    pub async fn record_source_run(
        &self,
        id: i64,
        r: &RunReport,
        now: i64,
    ) -> Result<Option<SourceRow>> {
        let sql = format!(
            "UPDATE sources SET \
                last_run_at = $2, runs = runs + 1, applied = applied + $3, rejected = rejected + $4, \
                recent = {RECENT} || $5, \
                last_success_at = CASE WHEN $6 = 1 THEN $2 ELSE last_success_at END, \
                last_error_at = CASE WHEN $6 = 1 THEN last_error_at ELSE $2 END, \
                last_error = CASE WHEN $6 = 1 THEN last_error ELSE $7 END, \
                consecutive_failures = CASE WHEN $6 = 1 THEN 0 ELSE consecutive_failures + 1 END, \
                stale_since = CASE WHEN $6 = 1 THEN NULL ELSE stale_since END, \
                last_event_at = CASE WHEN $8 IS NULL OR (last_event_at IS NOT NULL AND last_event_at > $8) \
                                     THEN last_event_at ELSE $8 END, \
                cursor = COALESCE($9, cursor), \
                next_run_at = COALESCE($10, next_run_at), \
                breaker_open_until = $11 \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(now)
                .bind(r.applied)
                .bind(r.rejected)
                .bind(if r.ok { "s" } else { "f" })
                .bind(i64::from(r.ok))
                .bind(r.error.as_deref().map(|e| super::rejections::storable(e).into_owned()))
                .bind(r.newest_event_at)
                .bind(r.cursor.as_deref())
                .bind(r.next_run_at)
                .bind(r.breaker_open_until)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Records a delivery to a built-in push source (api, shopify, woocommerce, csv),
    /// creating its row on first use.
    pub async fn record_push(
        &self,
        store: StoreId,
        kind: &str,
        applied: i64,
        rejected: i64,
        newest_event_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO sources (store_id, name, kind, config, profile, enabled, interval_secs, last_run_at, \
                 last_success_at, last_event_at, recent, runs, applied, rejected, created_at, updated_at) \
             VALUES ($1, $2, $2, '', '{}', TRUE, 0, $3, $3, $4, 's', 1, $5, $6, $3, $3) \
             ON CONFLICT (store_id, name) DO UPDATE SET \
                last_run_at = $3, last_success_at = $3, runs = sources.runs + 1, \
                applied = sources.applied + $5, rejected = sources.rejected + $6, \
                recent = CASE WHEN LENGTH(sources.recent) >= 20 THEN SUBSTR(sources.recent, 2) ELSE sources.recent END || 's', \
                stale_since = NULL, consecutive_failures = 0, \
                last_event_at = CASE WHEN $4 IS NULL OR (sources.last_event_at IS NOT NULL AND sources.last_event_at > $4) \
                                     THEN sources.last_event_at ELSE $4 END";
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(store.0)
                .bind(kind)
                .bind(now)
                .bind(newest_event_at)
                .bind(applied)
                .bind(rejected)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Marks the source stale from `now` unless it already is; true when it became
    /// stale now (the stale event is raised once per episode).
    pub async fn mark_source_stale(&self, id: i64, now: i64) -> Result<bool> {
        with_pool!(self, pool => {
            Ok(sqlx::query("UPDATE sources SET stale_since = $2 WHERE id = $1 AND stale_since IS NULL")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Every source's sealed settings, for `secrets rotate`.
    pub async fn source_configs(&self) -> Result<Vec<(i64, i64, String, String)>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT id, store_id, name, config FROM sources WHERE config <> ''")
                .fetch_all(pool)
                .await?)
        })
    }

    /// Replaces a source's sealed settings if they are still `old`.
    pub async fn reseal_source(&self, id: i64, old: &str, new: &str) -> Result<bool> {
        with_pool!(self, pool => {
            Ok(sqlx::query("UPDATE sources SET config = $3 WHERE id = $1 AND config = $2")
                .bind(id)
                .bind(old)
                .bind(new)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }
}
