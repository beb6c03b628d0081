//! Storage: one set of queries, run on SQLite (embedded default) or PostgreSQL.
//!
//! The schema is column-for-column the same on both (see `migrations/`), times are
//! integer milliseconds and money integer minor units, so the same SQL text serves
//! both databases. [`with_pool!`] expands a query body once per database with the
//! concrete pool type, so each backend gets its own compiled implementation while the
//! SQL lives in one place; the few places where the dialects differ (row locking,
//! write-transaction start) branch on [`Db::is_postgres`].
//!
//! Areas: [`stores`] (stores, keys and policy), [`catalog`], [`markets`], [`stock`]
//! (levels, the state machine's transitions and restock events), [`demand`]
//! (shoppers, contact points, consents, preferences, sign-ups), [`orders`],
//! [`planning`] (pages of waiting shoppers in, decisions out), [`outbox`] (claiming
//! and recording sends), [`tracking`], [`rejections`] (dead-lettered input), [`signup_writer`] (sign-ups
//! committed in groups on SQLite).

pub mod catalog;
pub mod checkpoint;
pub mod demand;
pub mod intake_log;
pub mod markets;
pub mod nodelay;
pub mod orders;
pub mod outbox;
pub mod planning;
pub mod reconcile;
pub mod rejections;
pub mod retention;
pub mod shopify;
pub mod signup_writer;
pub mod sources;
pub mod stock;
pub mod stores;
pub mod tracking;
pub mod write_turns;

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::DatabaseConfig;

/// Expands `$body` once per backend with `$pool` bound to the concrete pool.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::storage::Db::Sqlite($pool) => $body,
            $crate::storage::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// What differs between the two backends, as methods on the pool types so the
/// bodies [`with_pool!`] expands can call them.
pub(crate) trait Dialect {
    type Database: sqlx::Database;

    /// Starts a write transaction. On SQLite this is `BEGIN IMMEDIATE`, so a
    /// transaction that reads before it writes takes the write lock up front instead
    /// of failing with "database is locked" when another writer got there first.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Database>>> + Send;

    /// Row-locking suffix for claim queries: PostgreSQL workers skip rows another
    /// worker holds; SQLite has a single writer, so nothing is needed.
    fn skip_locked(&self) -> &'static str;

    /// Where the outbox claim must run in a transaction that starts this way: on
    /// PostgreSQL, one whose plans walk an index in order instead of collecting and
    /// sorting (see [`Db::claim_due`]). `None`: the claim is one statement as it is.
    fn ordered_claim_begin(&self) -> Option<&'static str>;

    /// A comma-separated aggregate of `expr` over a group.
    fn string_agg(&self, expr: &str) -> String;

    /// A FROM-clause source of the elements of a JSON array bound at `param`, one row
    /// each, as a column `value` holding JSON (read fields with `value ->> k`). Lets a
    /// batch travel as one parameter on both databases.
    fn json_rows(&self, param: &str) -> String;

    /// `column` is one of the ids `subquery` returns, as a condition that looks each
    /// id up in the column's index. (PostgreSQL plans a plain `IN (subquery)` of a
    /// few ids as a hash join over the whole table.)
    fn in_ids(&self, column: &str, subquery: &str) -> String;

    /// `column` is one of the ids in the first place of each row of the JSON array
    /// `param` ([`Dialect::json_rows`]), looked up in the column's index. A statement
    /// that joins such rows by id says so as well: left to itself, PostgreSQL may
    /// hash the JSON rows and scan the whole table for them (every outbox row for
    /// each group of outcomes when its statistics predate a large restock).
    fn in_json_ids(&self, column: &str, param: &str) -> String {
        self.in_ids(
            column,
            &format!(
                "SELECT CAST(value ->> 0 AS BIGINT) FROM {}",
                self.json_rows(param)
            ),
        )
    }
}

/// Rows a SQLite connection's worker thread may read ahead of the task taking them.
/// With sqlx's default (50), a statement returning more rows than that hands them
/// over between the two threads one at a time once the buffer is full, and a stock
/// batch reads and returns a thousand rows at a time: the stock benchmark's passes
/// ran 15-30 % faster with room for a whole batch.
const SQLITE_ROW_BUFFER: usize = 4096;

impl Dialect for SqlitePool {
    type Database = sqlx::Sqlite;

    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }

    fn skip_locked(&self) -> &'static str {
        ""
    }

    fn ordered_claim_begin(&self) -> Option<&'static str> {
        None
    }

    fn string_agg(&self, expr: &str) -> String {
        format!("group_concat({expr}, ',')")
    }

    fn json_rows(&self, param: &str) -> String {
        format!("json_each({param})")
    }

    fn in_ids(&self, column: &str, subquery: &str) -> String {
        format!("{column} IN ({subquery})")
    }
}

impl Dialect for PgPool {
    type Database = sqlx::Postgres;

    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }

    fn skip_locked(&self) -> &'static str {
        "FOR UPDATE SKIP LOCKED"
    }

    fn ordered_claim_begin(&self) -> Option<&'static str> {
        Some("BEGIN; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")
    }

    fn string_agg(&self, expr: &str) -> String {
        format!("string_agg({expr}, ',')")
    }

    fn json_rows(&self, param: &str) -> String {
        format!("json_array_elements({param}::json) AS json_rows(value)")
    }

    fn in_ids(&self, column: &str, subquery: &str) -> String {
        format!("{column} = ANY(ARRAY({subquery}))")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is malformed: {0}")]
    Malformed(String),
}

impl StorageError {
    /// The database could not be reached (no connection within the acquire timeout,
    /// a dropped connection, a server shutting down or refusing connections, or
    /// SQLite still locked after its busy timeout): worth retrying later, not a bug.
    pub fn is_unavailable(&self) -> bool {
        let StorageError::Sqlx(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                // PostgreSQL: class 08 (connection exception), 57P01-57P03 (admin
                // shutdown, crash shutdown, cannot connect now). SQLite: 5 (busy), 6 (locked).
                code.starts_with("08")
                    || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "5" | "6")
            }
            _ => false,
        }
    }

    /// The violated constraint's name, where the database reports one.
    pub fn unique_violation(&self) -> bool {
        matches!(self, StorageError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A pooled connection idle this long is checked with a round trip before it is
/// handed out again.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pool settings for both databases. sqlx checks a connection with a round trip
/// (`ping`: a `Sync` on PostgreSQL, a message to the worker thread on SQLite) when it
/// goes back into the pool and, by default, again when it is taken out: two round
/// trips beside every query or transaction's own (the one on the way in cannot be
/// turned off). The check on the way out is kept only for connections idle at least
/// [`PING_IDLE_AFTER`], which is where a server restart or a dropped connection goes
/// unnoticed; one that just passed its check on the way in is handed out as it is.
/// On PostgreSQL that took 16,000 storefront sign-ups from 306,000 `sendto` calls
/// (the whole machine's) to 238,000, and from 1,600 to 2,000 sign-ups a second.
fn pool_options<DB: sqlx::Database>(
    max_connections: u32,
    acquire_timeout: Duration,
    warmth: Warmth,
) -> sqlx::pool::PoolOptions<DB> {
    let max_connections = max_connections.max(2);
    sqlx::pool::PoolOptions::new()
        .max_connections(max_connections)
        .min_connections(match warmth {
            Warmth::Warm => max_connections,
            Warmth::Lazy => 0,
        })
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Whether a pool opens its connections up front and keeps them open.
///
/// The server's pool is warm: every connection is opened at start and sqlx keeps
/// the pool at that size, so the burst of work a restock brings after a quiet spell does
/// not wait for connections to be set up (a TLS handshake each, by default on
/// PostgreSQL). A restock of 1,000 over TLS took 0.26-0.43 s from the stock update
/// to the last message with a cold pool and 0.18-0.22 s with a warm one
/// (`restock bench --email`). The command-line jobs (`restock migrate`, `backup`,
/// …) and tests open connections as they need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warmth {
    Warm,
    Lazy,
}

/// [`pool_options`], and `TCP_NODELAY` on each new connection ([`nodelay`]).
fn pg_pool_options(
    max_connections: u32,
    acquire_timeout: Duration,
    warmth: Warmth,
) -> sqlx::pool::PoolOptions<sqlx::Postgres> {
    pool_options(max_connections, acquire_timeout, warmth).after_connect(|conn, _| {
        Box::pin(async move {
            if !nodelay::set_on(conn).await? {
                tracing::debug!(
                    "TCP_NODELAY not set on a PostgreSQL connection (its socket was not found)"
                );
            }
            Ok(())
        })
    })
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// The configured database: warm for the server, lazy for a one-off command.
    pub async fn connect(config: &DatabaseConfig, warmth: Warmth) -> anyhow::Result<Db> {
        Self::connect_url_with(
            config.url.expose_secret(),
            config.max_connections,
            Duration::from_millis(config.acquire_timeout_ms),
            warmth,
        )
        .await
    }

    pub async fn connect_url(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        Self::connect_url_with(url, max_connections, Duration::from_secs(10), Warmth::Lazy).await
    }

    /// Connects with `acquire_timeout` as the longest wait for a pooled connection:
    /// past it a query fails as unavailable (503) instead of queueing further.
    pub async fn connect_url_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
        warmth: Warmth,
    ) -> anyhow::Result<Db> {
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = std::path::Path::new(rest.split('?').next().unwrap_or(rest));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            }
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .row_buffer_size(SQLITE_ROW_BUFFER)
                .pragma(
                    "wal_autocheckpoint",
                    checkpoint::WAL_BACKSTOP_PAGES.to_string(),
                );
            let pool = pool_options(max_connections, acquire_timeout, warmth)
                .connect_with(opts)
                .await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = pg_pool_options(max_connections, acquire_timeout, warmth)
                .connect_with(opts)
                .await?;
            Ok(Db::Postgres(pool))
        } else {
            anyhow::bail!(
                "invalid configuration: database.url must start with sqlite:// or postgres://"
            )
        }
    }

    /// A PostgreSQL pool whose connections all use `schema` (tests give each test one).
    pub async fn connect_postgres_schema(
        url: &str,
        schema: &str,
        max_connections: u32,
        warmth: Warmth,
    ) -> anyhow::Result<Db> {
        let admin = PgPool::connect(url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        let opts = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
        let pool = pg_pool_options(max_connections, Duration::from_secs(30), warmth)
            .connect_with(opts)
            .await?;
        Ok(Db::Postgres(pool))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    pub fn backend(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => { sqlx::query("SELECT 1").execute(pool).await?; });
        Ok(())
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// The instance's secret called `name`, created on first use. Concurrent first
    /// starts agree: the insert ignores a conflict and everyone reads the winner.
    pub async fn instance_secret(&self, name: &str, fresh: &str) -> Result<String> {
        with_pool!(self, pool => {
            sqlx::query("INSERT INTO instance_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(name)
                .bind(fresh)
                .execute(pool)
                .await?;
            let value: String = sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(pool)
                .await?;
            Ok(value)
        })
    }
}

impl Db {
    /// Replaces an instance secret's stored value (re-sealing it with a new key).
    pub async fn set_instance_secret(&self, name: &str, value: &str) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE instance_secrets SET value = $2 WHERE name = $1")
                .bind(name)
                .bind(value)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

impl Db {
    /// Writes a consistent copy of a SQLite database to `to` while it is in use
    /// (`VACUUM INTO`: one read transaction, no writer is blocked for long).
    pub async fn backup_to(&self, to: &std::path::Path) -> anyhow::Result<()> {
        if to.exists() {
            anyhow::bail!("{} exists; choose a new file", to.display());
        }
        match self {
            Db::Sqlite(pool) => {
                let path = to
                    .to_str()
                    .ok_or_else(|| anyhow::anyhow!("the backup path is not UTF-8"))?;
                sqlx::query("VACUUM INTO $1")
                    .bind(path)
                    .execute(pool)
                    .await?;
                Ok(())
            }
            Db::Postgres(_) => anyhow::bail!(
                "on PostgreSQL, back up with pg_dump (for example: pg_dump --format=custom --file=restock.dump \"$DATABASE_URL\")"
            ),
        }
    }
}
