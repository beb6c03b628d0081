//! `restock bench --stock-throughput` and `--signups`: how fast intake takes stock
//! updates in batches, and how long a storefront sign-up waits for its answer with
//! many shoppers signing up at once.

use std::time::{Duration, Instant};

use anyhow::Context;
use restock_core::ids::StoreId;
use restock_core::stock::StockUpdate;
use restock_core::values::{Currency, HttpUrl, Sku};

use super::{BenchArgs, BenchServer, fresh_db, stock};
use crate::channels::{EmailChannel, MemoryOutbox};
use crate::config::Config;
use crate::storage::Db;
use crate::storage::catalog::{ProductInput, VariantInput};
use crate::storage::stores::NewStore;
use crate::util::Clock;

pub(super) const VARIANTS: usize = 20_000;
const VARIANTS_PER_PRODUCT: usize = 100;
const BATCH: usize = 1_000;
/// One variant in this many has a shopper waiting for it.
const WAITING_EVERY: usize = 10;
const CLIENTS: usize = 16;

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.stock_throughput {
        stock_throughput(args).await?;
    }
    if args.signups {
        signups(args).await?;
    }
    if args.csv_stock {
        csv_stock(args).await?;
    }
    Ok(())
}

pub(super) fn sku(i: usize) -> String {
    format!("T-{i}")
}

/// A store with `VARIANTS` variants, sold out, in products of `VARIANTS_PER_PRODUCT`.
async fn seed_catalog(db: &Db, slug: &str) -> anyhow::Result<StoreId> {
    Ok(seed_catalog_keyed(db, slug).await?.0)
}

/// [`seed_catalog`], with the store's API key.
pub(super) async fn seed_catalog_keyed(db: &Db, slug: &str) -> anyhow::Result<(StoreId, String)> {
    let created = db.create_store(NewStore::plain("Bench", slug), 0).await?;
    let store = created.store.store_id();
    for p in 0..VARIANTS / VARIANTS_PER_PRODUCT {
        let variants = (p * VARIANTS_PER_PRODUCT..(p + 1) * VARIANTS_PER_PRODUCT)
            .map(|i| {
                Ok(VariantInput::plain(
                    Sku::parse(&sku(i))?,
                    format!("Variant {i}"),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let product = ProductInput {
            external_id: format!("p{p}"),
            title: format!("Product {p}"),
            description: String::new(),
            image_url: None,
            url: HttpUrl::parse(&format!("https://bench.example/p/{p}"))?,
            category: None,
            price_minor: 1000,
            currency: Currency::parse("EUR")?,
            min_stock: None,
            notify_threshold: None,
            release: None,
            variants,
        };
        db.upsert_product(store, &product, 1).await?;
    }
    Ok((store, created.api_key))
}

/// Batches of `BATCH` updates over every variant, all at quantity `available`.
fn batches(available: i64, at: i64) -> Vec<Vec<StockUpdate>> {
    (0..VARIANTS)
        .map(|i| stock(&sku(i), available, at))
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[StockUpdate]>::to_vec)
        .collect()
}

async fn stock_throughput(args: &BenchArgs) -> anyhow::Result<()> {
    let b = fresh_db(&args.db).await?;
    let store = seed_catalog(&b.db, "throughput").await?;
    let waiting = b.db.bench_seed_waiting_every(store, WAITING_EVERY).await?;
    b.db.bench_analyze().await?;
    println!(
        "\nstock updates: {} batches of {BATCH} items over {VARIANTS} variants ({waiting} with a shopper waiting)",
        VARIANTS / BATCH
    );
    // Three passes over the catalog: first levels (sold out, nothing fires), every
    // variant back in stock (a transition and a restock event each), then a plain
    // change of quantity (no transition).
    let passes: [(&str, i64, usize); 3] = [
        ("first levels, sold out", 0, 0),
        ("all restocked", 5, VARIANTS),
        ("quantity changed", 3, 0),
    ];
    let mut at = 1_000;
    for (label, available, expect_restocks) in passes {
        at += 1_000;
        let mut restocks = 0;
        let mut slowest = Duration::ZERO;
        let start = Instant::now();
        for batch in batches(available, at) {
            let t = Instant::now();
            let out =
                b.db.apply_stock_batch(store, "bench", &batch, &[], at)
                    .await?;
            slowest = slowest.max(t.elapsed());
            anyhow::ensure!(
                out.applied as usize == batch.len(),
                "applied {} of {}",
                out.applied,
                batch.len()
            );
            restocks += out.restocks.len();
        }
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            restocks == expect_restocks,
            "{restocks} restocks, expected {expect_restocks}"
        );
        println!(
            "  {label:<24} {:>8.0} items/s   ({secs:.2} s; slowest batch {:.1} ms)",
            VARIANTS as f64 / secs,
            slowest.as_secs_f64() * 1000.0
        );
    }
    // The floor: the same levels written by one set-wise upsert per batch, with no
    // version check and no state machine.
    at += 1_000;
    let ids = b.db.bench_variant_ids(store).await?;
    let start = Instant::now();
    for chunk in ids.chunks(BATCH) {
        b.db.bench_raw_upsert_levels(store, chunk, 4, at).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  {:<24} {:>8.0} items/s   ({secs:.2} s; one upsert per batch, no rule applied)",
        "raw upsert of levels",
        ids.len() as f64 / secs
    );
    b.drop_schema().await
}

async fn signups(args: &BenchArgs) -> anyhow::Result<()> {
    let per_client = (args.signup_requests as usize).div_ceil(CLIENTS);
    let mut b = fresh_db(&args.db).await?;
    let store = seed_catalog(&b.db, "signups").await?;
    let publishable = b.db.store(store).await?.context("store")?.publishable_key;
    let app = crate::App::new(
        Config::from_defaults_and("[dispatch]\nenabled = false")?,
        b.db.clone(),
        Clock::System,
        EmailChannel::Memory(MemoryOutbox::default()),
    )
    .await?;
    let server = BenchServer::start(&app, &mut b).await?;
    let addr = server.addr;
    let url = format!("http://{addr}/storefront/v1/{publishable}/subscriptions");
    let http = crate::tls::http_client_builder().build()?;

    let started = Instant::now();
    let clients = (0..CLIENTS).map(|c| {
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut times = Vec::with_capacity(per_client);
            for i in 0..per_client {
                // Distinct shoppers; every tenth signs up again (a merge).
                let n = if i % 10 == 9 { i - 1 } else { i };
                let body = serde_json::json!({
                    "email": format!("c{c}n{n}@bench.example"),
                    "sku": sku((c * per_client + i) % VARIANTS),
                    "consent_text": "Tell me when it is back",
                });
                let t = Instant::now();
                let resp = http.post(&url).json(&body).send().await?;
                let status = resp.status();
                resp.bytes().await?;
                times.push((t.elapsed(), n != i));
                anyhow::ensure!(status.is_success(), "sign-up answered {status}");
            }
            anyhow::Ok(times)
        })
    });
    let mut times = Vec::new();
    for r in futures::future::join_all(clients).await {
        times.extend(r??);
    }
    let secs = started.elapsed().as_secs_f64();
    server.stop().await?;
    times.sort();
    // Every tenth sign-up is an address the store knows: a path of its own.
    let p99_of = |known: bool| {
        let t: Vec<Duration> = times.iter().filter(|t| t.1 == known).map(|t| t.0).collect();
        t[((t.len() - 1) as f64 * 0.99).round() as usize].as_secs_f64() * 1000.0
    };
    let (first_p99, known_p99) = (p99_of(false), p99_of(true));
    let times: Vec<Duration> = times.into_iter().map(|t| t.0).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "\nstorefront sign-ups: {} requests from {CLIENTS} concurrent clients over loopback HTTP",
        times.len()
    );
    println!(
        "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   {:.0} requests/s",
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(pick(1.0)),
        times.len() as f64 / secs
    );
    println!(
        "  p99 of first sign-ups {first_p99:.1} ms, of addresses already known {known_p99:.1} ms"
    );
    b.drop_schema().await
}

/// Lines of the CSV stock import: five passes over the catalog, each newer.
const CSV_LINES: usize = 100_000;

async fn csv_stock(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::intake::csv::{Import, ImportKind};
    let b = fresh_db(&args.db).await?;
    let store = seed_catalog(&b.db, "csv").await?;
    b.db.bench_analyze().await?;
    let app = crate::App::new(
        Config::from_defaults_and("[dispatch]\nenabled = false")?,
        b.db.clone(),
        Clock::System,
        EmailChannel::Memory(MemoryOutbox::default()),
    )
    .await?;
    let line = |i: usize| {
        format!(
            "{},wh-1,{},{}\n",
            sku(i % VARIANTS),
            (i / VARIANTS) % 4,
            i + 1
        )
    };
    let mut csv = String::from("sku,location,available,sequence\n");
    for i in 0..CSV_LINES {
        csv.push_str(&line(i));
    }
    println!(
        "\nCSV stock import: {CSV_LINES} lines ({:.1} MB) over {VARIANTS} variants, fed in 64 KiB chunks",
        csv.len() as f64 / 1e6
    );
    let start = Instant::now();
    let mut import = Import::new(app.clone(), store, ImportKind::Stock, 1000);
    for chunk in csv.as_bytes().chunks(64 * 1024) {
        import
            .feed(chunk)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    }
    let summary = import
        .finish()
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        summary.rejected == 0 && summary.read == CSV_LINES as u64,
        "read {}, rejected {}",
        summary.read,
        summary.rejected
    );
    println!(
        "  {:<24} {:>8.0} lines/s   ({secs:.2} s; {} applied, {} stale, {} restocks)",
        "CSV import",
        CSV_LINES as f64 / secs,
        summary.applied,
        summary.stale,
        summary.restocks
    );
    // The same updates, already parsed, straight into stock batches: what the
    // reading, checking and dead-letter bookkeeping of the import cost on top.
    let at = app.now() + 1;
    let start = Instant::now();
    for chunk in (0..CSV_LINES).collect::<Vec<_>>().chunks(BATCH) {
        let batch: Vec<StockUpdate> = chunk
            .iter()
            .map(|&i| {
                let mut u = stock(&sku(i % VARIANTS), ((i / VARIANTS) % 4) as i64, at);
                u.location = "wh-2".into();
                u.version.sequence = Some(i as i64 + 1);
                u
            })
            .collect();
        b.db.apply_stock_batch(store, "bench", &batch, &[], at)
            .await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  {:<24} {:>8.0} lines/s   ({secs:.2} s; parsed updates, batches of {BATCH})",
        "stock batches directly",
        CSV_LINES as f64 / secs
    );
    b.drop_schema().await
}

impl Db {
    /// A shopper waiting for one variant in `every` of the store's (benchmarks only).
    /// Returns how many variants have one.
    async fn bench_seed_waiting_every(&self, store: StoreId, every: usize) -> anyhow::Result<u64> {
        let every = every as i64;
        Ok(crate::storage::with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO shoppers (store_id, created_at, updated_at) \
                 SELECT $1, v.id, 0 FROM variants v WHERE v.store_id = $1 AND v.id % $2 = 0",
            )
            .bind(store.0)
            .bind(every)
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query(
                "INSERT INTO subscriptions (store_id, shopper_id, product_id, variant_id, status, source, created_at, \
                                            last_signup_at, updated_at) \
                 SELECT $1, s.id, v.product_id, v.id, 'waiting', 'bench', 0, 0, 0 \
                 FROM shoppers s JOIN variants v ON v.id = s.created_at WHERE s.store_id = $1",
            )
            .bind(store.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            n
        }))
    }

    async fn bench_variant_ids(&self, store: StoreId) -> anyhow::Result<Vec<i64>> {
        Ok(crate::storage::with_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM variants WHERE store_id = $1 ORDER BY id")
                .bind(store.0)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The same level written for each of `variants` by one statement.
    async fn bench_raw_upsert_levels(
        &self,
        store: StoreId,
        variants: &[i64],
        available: i64,
        at: i64,
    ) -> anyhow::Result<()> {
        const SET: &str = "ON CONFLICT (variant_id, location) DO UPDATE SET available = excluded.available, \
             observed_at = excluded.observed_at, updated_at = excluded.updated_at";
        match self {
            Db::Sqlite(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO stock_levels (variant_id, location, store_id, available, observed_at, source, updated_at) \
                     SELECT j.value, 'default', $1, $2, $3, 'bench', $3 FROM json_each($4) j WHERE true {SET}"
                )))
                .bind(store.0)
                .bind(available)
                .bind(at)
                .bind(serde_json::to_string(variants)?)
                .execute(pool)
                .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO stock_levels (variant_id, location, store_id, available, observed_at, source, updated_at) \
                     SELECT u.id, 'default', $1, $2, $3, 'bench', $3 FROM UNNEST($4::bigint[]) AS u(id) {SET}"
                )))
                .bind(store.0)
                .bind(available)
                .bind(at)
                .bind(variants)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }
}
