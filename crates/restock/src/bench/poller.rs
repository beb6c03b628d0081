//! `restock bench --sql-poller`: the SQL poller over a large source table. A store
//! whose catalog has every SKU of a `--poller-rows` source table in PostgreSQL; a
//! first run (every row new), a run after 1 % of the rows changed, and an unchanged
//! run, each timed as the runner would run it; beside them, the raw rate of the same
//! table read to the end by a minimal sqlx client (`SELECT sku, qty FROM t`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use sqlx::{ConnectOptions, Connection};

use super::{BenchArgs, fresh_db};
use crate::App;
use crate::channels::{EmailChannel, MemoryOutbox};
use crate::config::Config;
use crate::intake::runner::SourceCtx;
use crate::intake::source::seal_context;
use crate::storage::Db;
use crate::storage::catalog::{ProductInput, VariantInput};
use crate::storage::sources::SourceSettings;
use crate::storage::stores::NewStore;
use crate::util::Clock;
use restock_core::values::{Currency, HttpUrl, Sku};

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let rows = args.poller_rows;
    let source_url = &args.poller_source;
    let b = fresh_db(&args.db).await?;
    let store = seed_catalog(&b.db, rows).await?;
    b.db.bench_analyze().await?;

    // The merchant's table, in its own schema.
    let schema = format!(
        "bench_src_{}",
        crate::util::random_token(6)
            .to_lowercase()
            .replace(['-', '_'], "x")
    );
    let admin = sqlx::PgPool::connect(source_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await?;
    let table = format!("{schema}.stock");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, sku TEXT NOT NULL, qty BIGINT NOT NULL)"
    )))
    .execute(&admin)
    .await?;
    let start = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} SELECT i, 'V-' || i, i % 50 FROM generate_series(1, {rows}) i"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
        .execute(&admin)
        .await?;
    println!(
        "\nSQL poller: {rows}-row source table in PostgreSQL (filled in {:.1} s), catalog of {rows} variants",
        start.elapsed().as_secs_f64()
    );

    let app = App::new(
        Config::from_defaults_and("[dispatch]\nenabled = false\n[intake]\nenabled = false")?,
        b.db.clone(),
        Clock::Manual(Arc::new(std::sync::atomic::AtomicI64::new(1_000_000))),
        EmailChannel::Memory(MemoryOutbox::default()),
    )
    .await?;
    let config = serde_json::json!({
        "url": source_url,
        "query": format!("SELECT sku, qty FROM {table}"),
        "columns": {"sku": "sku", "available": "qty"},
        "statement_timeout_secs": 600
    });
    let sealed = app
        .secrets
        .seal(&seal_context(store.0, "erp"), &config.to_string());
    let row =
        b.db.put_source(
            store,
            &SourceSettings {
                name: "erp",
                kind: "sql",
                config_sealed: &sealed,
                profile: "{}",
                enabled: true,
                interval_secs: 900,
            },
            1_000_000,
        )
        .await?;
    let ctx = SourceCtx::from_row(&app, &row)?;

    let raw = raw_read(source_url, &table).await?;
    println!(
        "  raw read (minimal sqlx client, SELECT sku, qty fetched to the end): {rows} rows in {:.2} s = {:.0} rows/s",
        raw,
        rows as f64 / raw
    );
    for (label, change) in [
        ("first run (every row new)", None),
        ("after 1 % of rows changed", Some(100)),
        ("unchanged table", None::<i64>),
    ] {
        if let Some(every) = change {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET qty = qty + 7 WHERE id % {every} = 0"
            )))
            .execute(&admin)
            .await?;
        }
        app.clock.advance_ms(60_000);
        let start = Instant::now();
        let (out, scanned, changed) = crate::intake::poll_sql::run_counted(&app, &ctx).await?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  {label}: {scanned} rows scanned, {changed} changed, {} applied in {secs:.2} s = {:.0} rows scanned/s, {:.0} updates applied/s ({:.2}x the raw read)",
            out.delivered.applied,
            scanned as f64 / secs,
            out.delivered.applied as f64 / secs,
            secs / raw
        );
    }
    let raw = raw_read(source_url, &table).await?;
    println!(
        "  raw read again: {:.2} s = {:.0} rows/s",
        raw,
        rows as f64 / raw
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await?;
    admin.close().await;
    b.drop_schema().await?;
    Ok(())
}

/// Seconds to read `table` to the end with one plain connection.
async fn raw_read(url: &str, table: &str) -> anyhow::Result<f64> {
    let mut conn = sqlx::postgres::PgConnectOptions::from_str(url)?
        .connect()
        .await?;
    let start = Instant::now();
    let mut n = 0u64;
    let mut sum = 0i64;
    {
        let sql = format!("SELECT sku, qty FROM {table}");
        let mut rows =
            sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql)).fetch(&mut conn);
        while let Some((sku, qty)) = rows.try_next().await? {
            n += 1;
            sum += qty + sku.len() as i64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(n > 0 && sum > 0, "the table is empty");
    conn.close().await?;
    Ok(secs)
}

/// A store whose catalog has V-1 … V-`rows`: one product, its variants written set-wise.
async fn seed_catalog(db: &Db, rows: u64) -> anyhow::Result<restock_core::ids::StoreId> {
    let created = db
        .create_store(NewStore::plain("Bench", "poller"), 0)
        .await?;
    let store = created.store.store_id();
    let product = ProductInput {
        external_id: "p".into(),
        title: "Product".into(),
        description: String::new(),
        image_url: None,
        url: HttpUrl::parse("https://bench.example/p")?,
        category: None,
        price_minor: 1000,
        currency: Currency::parse("EUR")?,
        min_stock: None,
        notify_threshold: None,
        release: None,
        variants: vec![VariantInput::plain(Sku::parse("V-0")?, "Variant 0")],
    };
    db.upsert_product(store, &product, 1).await?;
    db.bench_seed_variants(store, rows).await?;
    Ok(store)
}

impl Db {
    /// V-1 … V-`rows` in the product of V-0, written set-wise.
    async fn bench_seed_variants(
        &self,
        store: restock_core::ids::StoreId,
        rows: u64,
    ) -> anyhow::Result<()> {
        let product = "(SELECT product_id FROM variants WHERE store_id = $1 AND sku = 'V-0')";
        match self {
            Db::Sqlite(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO variants (store_id, product_id, sku, title, updated_at) \
                     SELECT $1, {product}, 'V-' || i, 'Variant ' || i, 1 FROM \
                     (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $2) SELECT i FROM s)"
                )))
                .bind(store.0)
                .bind(rows as i64)
                .execute(pool)
                .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO variants (store_id, product_id, sku, title, updated_at) \
                     SELECT $1, {product}, 'V-' || i, 'Variant ' || i, 1 FROM generate_series(1, $2::bigint) i"
                )))
                .bind(store.0)
                .bind(rows as i64)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }
}
