//! The SQL poller: runs the merchant's query against their PostgreSQL,
//! MySQL/MariaDB or SQLite database on the source's interval (15 minutes unless
//! set), and hands only the rows that differ from the store's current levels to
//! intake. Since every run compares the whole result with what Restock holds, it
//! doubles as reconciliation: a change no webhook reported is caught on the next
//! run, and an unchanged table delivers nothing.
//!
//! Each run opens one connection, starts a read-only transaction with a statement
//! timeout, and streams the rows, compared with the store in chunks of
//! [`poll::CHUNK`]. A row that cannot be read (no or empty SKU, a quantity that is
//! not an integer or is out of range, control characters) becomes a dead letter
//! holding the raw row as JSON with sorted keys; replaying it parses it again with
//! the source's current column mapping. Versions: see [`super::poll`] — a row counts
//! as observed when the run started (or at its `updated_at`, when mapped).
//!
//! Settings (`config` of a `sql` source):
//! `{"url": "postgres://user:password@host/db", "query": "SELECT sku, qty FROM stock",
//!   "columns": {"sku": "sku", "available": "qty", "location": null, "updated_at": null},
//!   "statement_timeout_secs": 120}`.
//! The driver follows the URL's scheme (`postgres`, `mysql`/`mariadb`, `sqlite`);
//! `driver` may name it too, and must then agree.
//!
//! TLS follows the URL as the database's own clients read it: PostgreSQL's
//! `sslmode` (`prefer` unless set: TLS when the server offers it; `require`,
//! `verify-ca`, `verify-full`), MySQL's `ssl-mode` (`PREFERRED` unless set;
//! `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`). A server whose certificate comes
//! from a private CA names that CA in `ca_pem` (PEM text), so no file on Restock's
//! host is needed.

use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt;
use serde::Deserialize;
use sqlx::{Column, ConnectOptions, Connection, Row, TypeInfo, ValueRef};
use tokio_util::sync::CancellationToken;

use super::poll::{self, Cell, Mapping, Reconciler};
use super::runner::{PullOutcome, SourceCtx};
use crate::app::App;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Postgres,
    Mysql,
    Sqlite,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    pub url: String,
    #[serde(default)]
    pub driver: Option<String>,
    pub query: String,
    #[serde(default)]
    pub columns: Mapping,
    #[serde(default = "default_timeout")]
    pub statement_timeout_secs: u64,
    /// A private CA (PEM) the database server's certificate is checked against.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

fn default_timeout() -> u64 {
    120
}

impl SqlConfig {
    pub fn parse(config: &serde_json::Value) -> Result<(SqlConfig, Driver), String> {
        let c: SqlConfig = serde_json::from_value(config.clone())
            .map_err(|e| format!("SQL source settings: {e}"))?;
        let scheme = c.url.split(':').next().unwrap_or_default();
        let driver = match scheme {
            "postgres" | "postgresql" => Driver::Postgres,
            "mysql" | "mariadb" => Driver::Mysql,
            "sqlite" => Driver::Sqlite,
            _ => {
                return Err(
                    "url must start with postgres://, mysql://, mariadb:// or sqlite:".into(),
                );
            }
        };
        if let Some(d) = &c.driver {
            let named = match d.as_str() {
                "postgres" | "postgresql" => Driver::Postgres,
                "mysql" | "mariadb" => Driver::Mysql,
                "sqlite" => Driver::Sqlite,
                _ => return Err("driver must be postgres, mysql, mariadb or sqlite".into()),
            };
            if named != driver {
                return Err(format!("driver {d:?} does not match the url's scheme"));
            }
        }
        if c.query.trim().is_empty() || c.query.len() > 20_000 {
            return Err("query must be 1 to 20000 characters".into());
        }
        if !(1..=3600).contains(&c.statement_timeout_secs) {
            return Err("statement_timeout_secs must be 1 to 3600".into());
        }
        c.columns.check()?;
        if let Some(pem) = &c.ca_pem {
            if driver == Driver::Sqlite {
                return Err(
                    "ca_pem is for PostgreSQL and MySQL/MariaDB; a SQLite file has no TLS".into(),
                );
            }
            crate::tls::parse_ca_pem(pem.as_bytes()).map_err(|e| format!("ca_pem: {e}"))?;
        }
        match driver {
            Driver::Postgres => sqlx::postgres::PgConnectOptions::from_str(&c.url)
                .map(|_| ())
                .map_err(|_| "url is not a PostgreSQL connection URL".to_string())?,
            Driver::Mysql => sqlx::mysql::MySqlConnectOptions::from_str(&mysql_url(&c.url))
                .map(|_| ())
                .map_err(|_| "url is not a MySQL/MariaDB connection URL".to_string())?,
            Driver::Sqlite => sqlx::sqlite::SqliteConnectOptions::from_str(&c.url)
                .map(|_| ())
                .map_err(|_| "url is not a SQLite URL".to_string())?,
        }
        Ok((c, driver))
    }
}

fn mysql_url(url: &str) -> String {
    match url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => url.to_string(),
    }
}

pub fn check_config(config: &serde_json::Value) -> Result<(), String> {
    SqlConfig::parse(config).map(|_| ())
}

/// Where the mapped columns are in the query's result.
struct Columns {
    sku: Option<usize>,
    available: Option<usize>,
    location: Option<usize>,
    updated_at: Option<usize>,
}

impl Columns {
    /// Finds each mapped column by name (exact, else ignoring case). The SKU and
    /// quantity columns must be there: without them no row can be read, which is a
    /// settings error of the whole run, not of each row.
    fn find<C: Column>(cols: &[C], m: &Mapping) -> anyhow::Result<Columns> {
        let at = |name: &str| {
            cols.iter().position(|c| c.name() == name).or_else(|| {
                cols.iter()
                    .position(|c| c.name().eq_ignore_ascii_case(name))
            })
        };
        let names = || {
            cols.iter()
                .map(|c| c.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let must = |name: &str| {
            at(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "the query returns no column {name:?} (it returns: {})",
                    names()
                )
            })
        };
        let sku = Some(must(&m.sku)?);
        let available = Some(must(&m.available)?);
        let location = match &m.location {
            Some(n) => Some(must(n)?),
            None => None,
        };
        let updated_at = match &m.updated_at {
            Some(n) => Some(must(n)?),
            None => None,
        };
        Ok(Columns {
            sku,
            available,
            location,
            updated_at,
        })
    }
}

pub async fn run_once(
    app: &App,
    ctx: &SourceCtx,
    stop: CancellationToken,
) -> anyhow::Result<PullOutcome> {
    tokio::select! {
        r = run_counted(app, ctx) => {
            let (out, scanned, changed) = r?;
            tracing::debug!(source = %ctx.name, scanned, changed, "SQL source read");
            Ok(out)
        }
        _ = stop.cancelled() => anyhow::bail!("the run was stopped before the end (shutdown or lease lost)"),
    }
}

/// One run, with its statistics: the outcome, rows read and rows that differed
/// from the store.
pub async fn run_counted(app: &App, ctx: &SourceCtx) -> anyhow::Result<(PullOutcome, u64, u64)> {
    let (cfg, driver) = SqlConfig::parse(&ctx.config).map_err(anyhow::Error::msg)?;
    let polled_at = app.now();
    let mut rec = Reconciler::new(app, ctx);
    match driver {
        Driver::Postgres => run_postgres(&cfg, &mut rec, polled_at).await?,
        Driver::Mysql => run_mysql(&cfg, &mut rec, polled_at).await?,
        Driver::Sqlite => run_sqlite(&cfg, &mut rec, polled_at).await?,
    }
    rec.flush().await?;
    let out = PullOutcome {
        delivered: rec.delivered.clone(),
        cursor: ctx.cursor.clone(),
    };
    Ok((out, rec.scanned, rec.changed))
}

/// Streams the query's rows into the reconciler; `$cell` reads one column.
macro_rules! stream_rows {
    ($tx:expr, $cfg:expr, $rec:expr, $polled_at:expr, $cell:path) => {{
        let timeout = Duration::from_secs($cfg.statement_timeout_secs);
        let mut rows = sqlx::query(sqlx::AssertSqlSafe($cfg.query.clone())).fetch(&mut *$tx);
        let mut cols: Option<Columns> = None;
        loop {
            let row = match tokio::time::timeout(timeout, rows.try_next()).await {
                Ok(Ok(Some(row))) => row,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(anyhow::Error::new(e).context("the query failed")),
                Err(_) => anyhow::bail!(
                    "the query produced no row for {} s (statement_timeout_secs)",
                    $cfg.statement_timeout_secs
                ),
            };
            if cols.is_none() {
                cols = Some(Columns::find(row.columns(), &$cfg.columns)?);
            }
            let Some(c) = cols.as_ref() else { continue };
            let get = |i: Option<usize>| i.map(|i| $cell(&row, i));
            let (sku, available, location, updated_at) = (
                get(c.sku),
                get(c.available),
                get(c.location),
                get(c.updated_at),
            );
            let parsed = poll::parse_record(
                &$cfg.columns,
                sku.as_ref(),
                available.as_ref(),
                location.as_ref(),
                updated_at.as_ref(),
                $polled_at,
            );
            let raw = || {
                row.columns()
                    .iter()
                    .map(|col| (col.name().to_string(), $cell(&row, col.ordinal()).to_json()))
                    .collect()
            };
            $rec.push(parsed, raw).await?;
        }
    }};
}

async fn run_postgres(
    cfg: &SqlConfig,
    rec: &mut Reconciler<'_>,
    polled_at: i64,
) -> anyhow::Result<()> {
    let mut opts = sqlx::postgres::PgConnectOptions::from_str(&cfg.url)?
        .application_name("restock-poller")
        .statement_cache_capacity(0);
    if let Some(pem) = &cfg.ca_pem {
        opts = opts.ssl_root_cert_from_pem(pem.clone().into_bytes());
    }
    let mut conn = connect(opts).await?;
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {}",
        cfg.statement_timeout_secs * 1000
    )))
    .execute(&mut *tx)
    .await?;
    stream_rows!(tx, cfg, rec, polled_at, pg_cell);
    tx.rollback().await?;
    let _ = conn.close().await;
    Ok(())
}

/// Opens one connection to the merchant's database, within [`CONNECT_TIMEOUT`].
async fn connect<O: ConnectOptions>(opts: O) -> anyhow::Result<O::Connection>
where
    O::Connection: Sized,
{
    tokio::time::timeout(CONNECT_TIMEOUT, opts.connect())
        .await
        .map_err(|_| anyhow::anyhow!("connecting to the database timed out"))?
        .map_err(|e| anyhow::Error::new(e).context("cannot connect to the database"))
}

async fn run_mysql(
    cfg: &SqlConfig,
    rec: &mut Reconciler<'_>,
    polled_at: i64,
) -> anyhow::Result<()> {
    let mut opts = sqlx::mysql::MySqlConnectOptions::from_str(&mysql_url(&cfg.url))?
        .statement_cache_capacity(0);
    if let Some(pem) = &cfg.ca_pem {
        opts = opts.ssl_ca_from_pem(pem.clone().into_bytes());
    }
    let mut conn = connect(opts).await?;
    // MariaDB bounds any statement in seconds; MySQL bounds SELECTs in milliseconds.
    let mariadb = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET SESSION max_statement_time = {}",
        cfg.statement_timeout_secs
    )))
    .execute(&mut conn)
    .await;
    if mariadb.is_err() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET SESSION max_execution_time = {}",
            cfg.statement_timeout_secs * 1000
        )))
        .execute(&mut conn)
        .await?;
    }
    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut conn)
        .await?;
    let mut tx = conn
        .begin_with("START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT")
        .await?;
    stream_rows!(tx, cfg, rec, polled_at, mysql_cell);
    tx.rollback().await?;
    let _ = conn.close().await;
    Ok(())
}

async fn run_sqlite(
    cfg: &SqlConfig,
    rec: &mut Reconciler<'_>,
    polled_at: i64,
) -> anyhow::Result<()> {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&cfg.url)?
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(cfg.statement_timeout_secs))
        .statement_cache_capacity(0);
    let mut conn = connect(opts).await?;
    let mut tx = conn.begin().await?;
    stream_rows!(tx, cfg, rec, polled_at, sqlite_cell);
    tx.rollback().await?;
    let _ = conn.close().await;
    Ok(())
}

fn pg_cell(row: &sqlx::postgres::PgRow, i: usize) -> Cell {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let Ok(raw) = row.try_get_raw(i) else {
        return Cell::Null;
    };
    if raw.is_null() {
        return Cell::Null;
    }
    let ty = raw.type_info().name().to_string();
    let cell = match ty.as_str() {
        "INT2" => row.try_get::<i16, _>(i).map(|v| Cell::Int(v.into())),
        "INT4" => row.try_get::<i32, _>(i).map(|v| Cell::Int(v.into())),
        "INT8" => row.try_get::<i64, _>(i).map(Cell::Int),
        "FLOAT4" => row.try_get::<f32, _>(i).map(|v| Cell::Float(v.into())),
        "FLOAT8" => row.try_get::<f64, _>(i).map(Cell::Float),
        "BOOL" => row.try_get::<bool, _>(i).map(Cell::Bool),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" | "CITEXT" => {
            row.try_get::<String, _>(i).map(Cell::Text)
        }
        "TIMESTAMPTZ" => row
            .try_get::<DateTime<Utc>, _>(i)
            .map(|t| Cell::Time(t.timestamp_millis())),
        "TIMESTAMP" => row
            .try_get::<NaiveDateTime, _>(i)
            .map(|t| Cell::Time(t.and_utc().timestamp_millis())),
        "NUMERIC" => match raw.as_bytes() {
            Ok(b) => return pg_numeric(b).map(Cell::Text).unwrap_or(Cell::Other(ty)),
            Err(_) => return Cell::Other(ty),
        },
        _ => return Cell::Other(ty),
    };
    cell.unwrap_or(Cell::Other(ty))
}

/// PostgreSQL's binary NUMERIC as decimal text (a `SUM` over a bigint column is one).
fn pg_numeric(b: &[u8]) -> Option<String> {
    let word = |at: usize| b.get(at..at + 2).map(|w| i16::from_be_bytes([w[0], w[1]]));
    let (ndigits, weight, sign, dscale) = (word(0)?, word(2)?, word(4)? as u16, word(6)?);
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let digits: Vec<i16> = (0..ndigits as usize)
        .map(|k| word(8 + 2 * k))
        .collect::<Option<_>>()?;
    let mut int = String::new();
    for k in 0..=weight.max(-1) {
        let d = digits.get(k as usize).copied().unwrap_or(0);
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    for k in (weight + 1).max(0)..ndigits {
        let pad = if k < 0 { 0 } else { digits[k as usize] };
        frac.push_str(&format!("{pad:04}"));
    }
    for _ in weight + 1..0 {
        frac.insert_str(0, "0000");
    }
    frac.truncate(dscale.max(0) as usize);
    while frac.len() < dscale.max(0) as usize {
        frac.push('0');
    }
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

fn mysql_cell(row: &sqlx::mysql::MySqlRow, i: usize) -> Cell {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let Ok(raw) = row.try_get_raw(i) else {
        return Cell::Null;
    };
    if raw.is_null() {
        return Cell::Null;
    }
    let ty = raw.type_info().name().to_string();
    let cell = match ty.as_str() {
        "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" | "YEAR" => {
            row.try_get::<i64, _>(i).map(Cell::Int)
        }
        "BOOLEAN" => row.try_get::<i8, _>(i).map(|v| Cell::Int(v.into())),
        t if t.ends_with("UNSIGNED") => row.try_get::<u64, _>(i).map(|v| match i64::try_from(v) {
            Ok(v) => Cell::Int(v),
            Err(_) => Cell::BigInt(v),
        }),
        "FLOAT" => row.try_get::<f32, _>(i).map(|v| Cell::Float(v.into())),
        "DOUBLE" => row.try_get::<f64, _>(i).map(Cell::Float),
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
        | "DECIMAL" | "JSON" | "SET" => row.try_get_unchecked::<String, _>(i).map(Cell::Text),
        "VARBINARY" | "BINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => row
            .try_get_unchecked::<Vec<u8>, _>(i)
            .map(|b| match String::from_utf8(b) {
                Ok(s) => Cell::Text(s),
                Err(_) => Cell::Other(ty.clone()),
            }),
        "TIMESTAMP" => row
            .try_get::<DateTime<Utc>, _>(i)
            .map(|t| Cell::Time(t.timestamp_millis())),
        "DATETIME" => row
            .try_get::<NaiveDateTime, _>(i)
            .map(|t| Cell::Time(t.and_utc().timestamp_millis())),
        _ => return Cell::Other(ty),
    };
    cell.unwrap_or(Cell::Other(ty))
}

fn sqlite_cell(row: &sqlx::sqlite::SqliteRow, i: usize) -> Cell {
    let Ok(raw) = row.try_get_raw(i) else {
        return Cell::Null;
    };
    if raw.is_null() {
        return Cell::Null;
    }
    // SQLite types values, not columns: read each as what it holds.
    let ty = raw.type_info().name().to_string();
    let cell = match ty.as_str() {
        "INTEGER" => row.try_get_unchecked::<i64, _>(i).map(Cell::Int),
        "REAL" => row.try_get_unchecked::<f64, _>(i).map(Cell::Float),
        "TEXT" => row.try_get_unchecked::<String, _>(i).map(Cell::Text),
        "BLOB" => row
            .try_get_unchecked::<Vec<u8>, _>(i)
            .map(|b| match String::from_utf8(b) {
                Ok(s) => Cell::Text(s),
                Err(_) => Cell::Other("BLOB".into()),
            }),
        _ => return Cell::Other(ty),
    };
    cell.unwrap_or(Cell::Other(ty))
}

pub fn reparse(
    config: &serde_json::Value,
    payload: &str,
    received_at: i64,
) -> Result<Vec<restock_core::stock::StockUpdate>, (String, String)> {
    let (cfg, _) = SqlConfig::parse(config).map_err(|e| ("invalid_value".to_string(), e))?;
    poll::reparse_record(&cfg.columns, payload, received_at)
}

#[cfg(test)]
mod tests {
    use super::pg_numeric;

    fn enc(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_reads_as_decimal_text() {
        assert_eq!(pg_numeric(&enc(0, 0, 0, 0, &[])).as_deref(), Some("0"));
        assert_eq!(pg_numeric(&enc(1, 0, 0, 0, &[42])).as_deref(), Some("42"));
        assert_eq!(
            pg_numeric(&enc(2, 1, 0, 0, &[1, 2])).as_deref(),
            Some("10002")
        );
        assert_eq!(pg_numeric(&enc(1, 1, 0, 0, &[3])).as_deref(), Some("30000"));
        assert_eq!(
            pg_numeric(&enc(2, 0, 0x4000, 1, &[12, 5000])).as_deref(),
            Some("-12.5")
        );
        assert_eq!(
            pg_numeric(&enc(1, -1, 0, 2, &[1200])).as_deref(),
            Some("0.12")
        );
    }
}
