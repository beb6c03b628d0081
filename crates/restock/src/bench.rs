//! `restock bench`: planning throughput for one restock with N waiting subscribers,
//! and the time from a stock update being accepted to the first notification handed
//! to the channel. Figures are recorded in docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use restock_core::ids::StoreId;
use restock_core::stock::{StockUpdate, Version};
use restock_core::values::{Currency, HttpUrl, Sku};
use tokio_util::sync::CancellationToken;

use crate::channels::{EmailChannel, MemoryOutbox};
use crate::config::Config;
use crate::storage::catalog::{ProductInput, VariantInput};
use crate::storage::stores::NewStore;
use crate::storage::{Db, Warmth};
use crate::util::Clock;

mod email;
mod intake;
mod jetstream;
mod poller;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// "sqlite" (a temporary file) or a postgres:// URL (a fresh schema is used and dropped).
    #[arg(long, default_value = "sqlite")]
    pub db: String,
    /// Waiting-list sizes to plan, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 1_000_000])]
    pub subscribers: Vec<u64>,
    /// Samples of restock-to-first-send latency, and of stock-update answers per N.
    #[arg(long, default_value_t = 50)]
    pub latency_samples: u32,
    /// Only measure email: Restock's SMTP rate with default settings beside
    /// `smtp-source` -> `smtp-sink` on loopback, a small restock end to end, and the
    /// file outbox beside a write + fsync + rename loop (needs Postfix's tools).
    #[arg(long)]
    pub email: bool,
    /// Notifications of one restock sent over SMTP (`--email`).
    #[arg(long, default_value_t = 20_000)]
    pub emails: u64,
    /// Waiting shoppers of the small restock timed end to end (`--email`).
    #[arg(long, default_value_t = 1_000)]
    pub small_restock: u64,
    /// Messages written to the file outbox (`--email`).
    #[arg(long, default_value_t = 2_000)]
    pub file_messages: u64,
    /// Only time a /metrics scrape with this many notifications in the outbox
    /// (comma separated, ascending), instead of the planning and latency runs.
    #[arg(long, value_delimiter = ',')]
    pub metrics_at: Vec<u64>,
    /// Only time stock updates in batches of 1,000 (see bench/intake.rs).
    #[arg(long)]
    pub stock_throughput: bool,
    /// Only time storefront sign-ups from 16 concurrent clients (see bench/intake.rs).
    #[arg(long)]
    pub signups: bool,
    /// Only time a CSV stock import (100,000 lines over 20,000 variants) through the
    /// import path, beside the same updates applied as stock batches.
    #[arg(long)]
    pub csv_stock: bool,
    /// Sign-ups to send with --signups.
    #[arg(long, default_value_t = 4_000)]
    pub signup_requests: u64,
    /// Only time the SQL poller over a large PostgreSQL source table (see
    /// bench/poller.rs): a first run, 1 % of rows changed, no change; beside a raw read.
    #[arg(long)]
    pub sql_poller: bool,
    /// Rows of the source table for --sql-poller.
    #[arg(long, default_value_t = 1_000_000)]
    pub poller_rows: u64,
    /// The PostgreSQL database holding the source table for --sql-poller (a fresh
    /// schema is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub poller_source: String,
    /// Only time stock updates through NATS JetStream: Restock's source beside a
    /// minimal consumer reading the same stream (see bench/jetstream.rs).
    #[arg(long)]
    pub jetstream: bool,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub jetstream_url: String,
    /// Messages published with --jetstream.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Messages per pull and per apply with --jetstream.
    #[arg(long, default_value_t = 500)]
    pub jetstream_batch: usize,
}

struct BenchDb {
    db: Db,
    /// Stops the SQLite checkpointer, which runs beside the bench as it runs beside
    /// the server (PostgreSQL has none); dropped when the server itself runs.
    checkpointer: Option<tokio_util::sync::DropGuard>,
    _dir: Option<tempfile_dir::TempDir>,
    schema: Option<(String, String)>,
}

mod tempfile_dir {
    /// A directory removed on drop (the bench must not leave gigabytes behind).
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn fresh_db(spec: &str) -> anyhow::Result<BenchDb> {
    if spec == "sqlite" {
        let dir =
            std::env::temp_dir().join(format!("restock-bench-{}", crate::util::random_token(6)));
        std::fs::create_dir_all(&dir)?;
        // Warm, as the server's pool is.
        let db = Db::connect_url_with(
            &format!("sqlite://{}/bench.db", dir.display()),
            8,
            Duration::from_secs(10),
            Warmth::Warm,
        )
        .await?;
        db.migrate().await?;
        let stop = tokio_util::sync::CancellationToken::new();
        db.start_checkpointer(stop.clone());
        Ok(BenchDb {
            db,
            checkpointer: Some(stop.drop_guard()),
            _dir: Some(tempfile_dir::TempDir(dir)),
            schema: None,
        })
    } else {
        let schema = format!(
            "bench_{}",
            crate::util::random_token(6)
                .to_lowercase()
                .replace(['-', '_'], "x")
        );
        let db = Db::connect_postgres_schema(spec, &schema, 8, Warmth::Warm).await?;
        db.migrate().await?;
        Ok(BenchDb {
            db,
            checkpointer: None,
            _dir: None,
            schema: Some((spec.to_string(), schema)),
        })
    }
}

impl BenchDb {
    async fn drop_schema(self) -> anyhow::Result<()> {
        self.db.close().await;
        if let Some((url, schema)) = &self.schema {
            let admin = sqlx::PgPool::connect(url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&admin)
            .await?;
        }
        Ok(())
    }
}

fn stock(sku: &str, available: i64, at: i64) -> StockUpdate {
    StockUpdate {
        sku: Sku::parse(sku).unwrap_or_else(|_| unreachable!("bench SKUs are valid")),
        location: "default".into(),
        available,
        reserved: 0,
        incoming: None,
        incoming_at_ms: None,
        available_until_ms: None,
        version: Version {
            observed_at_ms: at,
            sequence: None,
        },
    }
}

/// A store with one product and one sold-out variant.
async fn seed_store(db: &Db, slug: &str) -> anyhow::Result<(StoreId, i64, i64)> {
    let created = db.create_store(NewStore::plain("Bench", slug), 0).await?;
    let store = created.store.store_id();
    let url = HttpUrl::parse("https://bench.example/p/1")?;
    let product = ProductInput {
        external_id: "p1".into(),
        title: "Bench product".into(),
        description: String::new(),
        image_url: None,
        url,
        category: None,
        price_minor: 1000,
        currency: Currency::parse("EUR")?,
        min_stock: None,
        notify_threshold: None,
        release: None,
        variants: vec![VariantInput::plain(Sku::parse("B-1")?, "One")],
    };
    let (product_id, _) = db.upsert_product(store, &product, 1).await?;
    let variant = db.variant_by_sku(store, "B-1").await?.context("variant")?;
    Ok((store, product_id.0, variant.id))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let backend = if args.db == "sqlite" {
        "sqlite"
    } else {
        "postgres"
    };
    println!(
        "restock bench on {backend} ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if !args.metrics_at.is_empty() {
        return metrics_scrape(&args).await;
    }
    if args.email {
        return email::run(
            &args.db,
            args.emails,
            args.small_restock,
            args.file_messages,
        )
        .await;
    }
    if args.sql_poller {
        return poller::run(&args).await;
    }
    if args.jetstream {
        return jetstream::run(&args).await;
    }
    if args.stock_throughput || args.signups || args.csv_stock {
        return intake::run(&args).await;
    }
    for &n in &args.subscribers {
        let b = fresh_db(&args.db).await?;
        let (store, product, variant) = seed_store(&b.db, "bench").await?;
        b.db.bench_seed_waiting_list(store, product, variant, n)
            .await?;
        println!("\nN = {n} waiting for one variant (everyone at once, default policy):");

        // The raw limit: the same N outbox rows written by one INSERT ... SELECT from
        // the waiting list, with no rule applied at all.
        let raw = b.db.bench_raw_insert_select(variant).await?;
        println!(
            "  raw INSERT ... SELECT of {n} outbox rows: {:.3} s",
            raw.as_secs_f64()
        );

        // A stock update that restocks the variant: what intake waits for. Planning
        // runs afterwards in the workers (none run here), so the answer does not
        // depend on N.
        let mut at = 100;
        let mut answers = Vec::new();
        for _ in 0..args.latency_samples {
            at += 2;
            b.db.apply_stock_batch(store, "bench", &[stock("B-1", 0, at)], &[], at)
                .await?;
            at += 2;
            let start = Instant::now();
            let out =
                b.db.apply_stock_batch(store, "bench", &[stock("B-1", 5, at)], &[], at)
                    .await?;
            answers.push(start.elapsed());
            anyhow::ensure!(out.restocks.len() == 1, "expected a restock");
        }
        // Only the last restock is planned; the earlier ones sold out again.
        b.db.bench_close_all_but_last_restock().await?;
        answers.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pick = |q: f64| answers[((answers.len() - 1) as f64 * q).round() as usize];
        println!(
            "  stock update that restocks it ({} samples): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            answers.len(),
            ms(pick(0.5)),
            ms(pick(0.99)),
            ms(pick(1.0))
        );

        // Planning that restock: pages of waiting shoppers through the core planner
        // into the outbox, as the workers do it.
        let app = crate::App::new(
            Config::from_defaults_and("[dispatch]\nenabled = false")?,
            b.db.clone(),
            Clock::Manual(Arc::new(std::sync::atomic::AtomicI64::new(at + 1))),
            EmailChannel::Memory(MemoryOutbox::default()),
        )
        .await?;
        let start = Instant::now();
        crate::planning::plan_due(&app).await?;
        let secs = start.elapsed().as_secs_f64();
        let planned = b.db.bench_planned_count().await?;
        anyhow::ensure!(planned == n as i64, "planned {planned}, expected {n}");
        println!(
            "  planned {n} through the core planner: {secs:.3} s ({:.0} /s), {:.2}x the raw INSERT ... SELECT",
            n as f64 / secs,
            secs / raw.as_secs_f64()
        );
        b.drop_schema().await?;
    }
    latency(&args).await
}

/// Times a /metrics render (what a scrape runs) as the outbox grows to each of
/// `args.metrics_at` notifications, mostly finished ones, as history accumulates.
/// For comparison it also times the count the scrape used to make (every
/// notification grouped by state).
async fn metrics_scrape(args: &BenchArgs) -> anyhow::Result<()> {
    const WAITING: u64 = 10_000;
    let b = fresh_db(&args.db).await?;
    let (store, product, variant) = seed_store(&b.db, "metrics").await?;
    b.db.bench_seed_waiting_list(store, product, variant, WAITING)
        .await?;
    let metrics = crate::metrics::Metrics::new();
    println!("\n/metrics scrape time by outbox size (20 scrapes each):");
    println!(
        "{:>12} {:>10} {:>12} {:>12} {:>22}",
        "notifications", "seed s", "median ms", "max ms", "old GROUP BY count ms"
    );
    let mut have = 0u64;
    let mut event = 0i64;
    for &target in &args.metrics_at {
        let started = Instant::now();
        while have < target {
            event += 1;
            b.db.bench_seed_finished(store, product, variant, event)
                .await?;
            have += WAITING;
        }
        b.db.bench_analyze().await?;
        let seed_secs = started.elapsed().as_secs_f64();
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let text = metrics.render(&b.db).await;
            times.push(t.elapsed());
            anyhow::ensure!(
                text.contains("restock_outbox_depth"),
                "scrape rendered no depth"
            );
        }
        times.sort();
        let t = Instant::now();
        let rows = b.db.outbox_depth(None).await?;
        let old = t.elapsed();
        let total: i64 = rows.iter().map(|(_, n)| n).sum();
        anyhow::ensure!(total as u64 == have, "counted {total}, expected {have}");
        println!(
            "{have:>12} {seed_secs:>10.1} {:>12.2} {:>12.2} {:>22.1}",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0,
            old.as_secs_f64() * 1000.0
        );
    }
    b.drop_schema().await
}

/// The real server (`crate::run`) on a loopback port, for the benchmarks that go
/// through HTTP and the workers.
struct BenchServer {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BenchServer {
    /// Starts the server on `b`'s database; the server checkpoints SQLite itself, so
    /// the bench's own checkpointer stops.
    async fn start(app: &crate::App, b: &mut BenchDb) -> anyhow::Result<BenchServer> {
        b.checkpointer = None;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(crate::run(app.clone(), listener, shutdown.clone()));
        Ok(BenchServer {
            addr,
            shutdown,
            handle,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await?
    }
}

async fn latency(args: &BenchArgs) -> anyhow::Result<()> {
    let mut b = fresh_db(&args.db).await?;
    let (store, product, variant) = seed_store(&b.db, "latency").await?;
    let memory = MemoryOutbox::default();
    let config = Config::from_defaults_and("[dispatch]\npoll_interval_ms = 1000")?;
    let app = crate::App::new(
        config,
        b.db.clone(),
        Clock::System,
        EmailChannel::Memory(memory.clone()),
    )
    .await?;
    let server = BenchServer::start(&app, &mut b).await?;
    let addr = server.addr;
    let key = b.db.create_api_key(store, 0).await?;
    let http = crate::tls::http_client_builder().build()?;
    let mut samples = Vec::new();
    let mut at = chrono::Utc::now().timestamp_millis();
    for i in 0..args.latency_samples {
        // A fresh waiter each round (earlier ones were notified), then out, then back.
        b.db.bench_seed_waiting_list_named(store, product, variant, &format!("lat{i}"))
            .await?;
        at += 2;
        b.db.apply_stock_batch(store, "bench", &[stock("B-1", 0, at)], &[], at)
            .await?;
        let before = memory.count();
        at += 2;
        let start = Instant::now();
        let resp = http
            .post(format!("http://{addr}/v1/stock"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"items": [{"sku": "B-1", "available": 5, "observed_at": crate::util::format_ms(at)}]}))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "stock update failed: {}",
            resp.status()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while memory.count() == before {
            anyhow::ensure!(Instant::now() < deadline, "no send within 10 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let sent = memory.sent_at(before as usize).await.context("send time")?;
        samples.push(sent.duration_since(start));
    }
    server.stop().await?;
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "\nstock update sent -> first notification handed to the channel ({} samples, 1 waiting subscriber, worker idle):",
        samples.len()
    );
    println!(
        "  p50 {:.1} ms   p90 {:.1} ms   max {:.1} ms",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(1.0))
    );
    let _ = Arc::strong_count(&app.inner);
    b.drop_schema().await
}

impl Db {
    /// Bulk-creates `n` shoppers with an email address each, waiting for `variant`
    /// (benchmarks only).
    pub async fn bench_seed_waiting_list(
        &self,
        store: StoreId,
        product: i64,
        variant: i64,
        n: u64,
    ) -> anyhow::Result<()> {
        crate::storage::with_pool!(self, pool => {
            sqlx::query(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $2) \
                 INSERT INTO shoppers (store_id, created_at, updated_at) SELECT $1, 0, 0 FROM seq",
            )
            .bind(store.0)
            .bind(n as i64)
            .execute(pool)
            .await?;
            sqlx::query(
                "INSERT INTO contact_points (store_id, shopper_id, channel, address, address_key, consent_at, created_at, updated_at) \
                 SELECT $1, id, 'email', 'shopper' || id || '@bench.example', 'shopper' || id || '@bench.example', 0, 0, 0 \
                 FROM shoppers WHERE store_id = $1",
            )
            .bind(store.0)
            .execute(pool)
            .await?;
            sqlx::query(
                "INSERT INTO subscriptions (store_id, shopper_id, product_id, variant_id, status, source, created_at, \
                                            last_signup_at, updated_at) \
                 SELECT $1, id, $2, $3, 'waiting', 'bench', id, id, id FROM shoppers WHERE store_id = $1",
            )
            .bind(store.0)
            .bind(product)
            .bind(variant)
            .execute(pool)
            .await?;
        });
        if let Db::Postgres(pool) = self {
            sqlx::query("ANALYZE").execute(pool).await?;
        }
        Ok(())
    }

    /// Writes one outbox row per waiting sign-up with one INSERT ... SELECT (the
    /// address joined, nothing decided), times it, and removes the rows again.
    async fn bench_raw_insert_select(&self, variant: i64) -> anyhow::Result<Duration> {
        const RAW: &str = "INSERT INTO notifications (store_id, restock_event_id, shopper_id, subscription_id, \
               variant_id, purpose, channel, contact_point_id, recipient, wave, state, attempts, due_at, planned_at, updated_at) \
             SELECT s.store_id, 0, s.shopper_id, s.id, s.variant_id, 'alert', 'email', cp.id, cp.address, 1, 'pending', 0, 1, 1, 1 \
             FROM subscriptions s JOIN contact_points cp ON cp.shopper_id = s.shopper_id \
             WHERE s.variant_id = $1 AND s.status = 'waiting'";
        let elapsed = crate::storage::with_pool!(self, pool => {
            let start = Instant::now();
            sqlx::query(RAW).bind(variant).execute(pool).await?;
            let elapsed = start.elapsed();
            sqlx::query("DELETE FROM notifications WHERE restock_event_id = 0").execute(pool).await?;
            elapsed
        });
        if let Db::Postgres(pool) = self {
            sqlx::query("VACUUM ANALYZE notifications")
                .execute(pool)
                .await?;
        }
        Ok(elapsed)
    }

    async fn bench_close_all_but_last_restock(&self) -> anyhow::Result<()> {
        crate::storage::with_pool!(self, pool => {
            sqlx::query(
                "UPDATE restock_events SET plan_state = 'sold_out' \
                 WHERE id < (SELECT MAX(id) FROM restock_events) AND plan_state = 'pending'",
            )
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// One past restock event whose notifications (one per subscription of the
    /// store) were sent: history, as it accumulates in the outbox. The first event
    /// also leaves 1 % pending and 1 % dead, a live queue that stays the same size.
    pub async fn bench_seed_finished(
        &self,
        store: StoreId,
        product: i64,
        variant: i64,
        event: i64,
    ) -> anyhow::Result<()> {
        crate::storage::with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let transition: i64 = sqlx::query_scalar(
                "INSERT INTO availability_transitions (store_id, variant_id, to_state, quantity, cause, at) \
                 VALUES ($1, $2, 'in_stock', 5, 'bench', $3) RETURNING id",
            )
            .bind(store.0)
            .bind(variant)
            .bind(event)
            .fetch_one(&mut *tx)
            .await?;
            let restock: i64 = sqlx::query_scalar(
                "INSERT INTO restock_events (store_id, variant_id, product_id, transition_id, quantity, created_at) \
                 VALUES ($1, $2, $3, $4, 5, $5) RETURNING id",
            )
            .bind(store.0)
            .bind(variant)
            .bind(product)
            .bind(transition)
            .bind(event)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO notifications (store_id, subscription_id, shopper_id, restock_event_id, variant_id, \
                                            channel, recipient, state, attempts, due_at, planned_at, sent_at, updated_at) \
                 SELECT s.store_id, s.id, s.shopper_id, $2, $3, 'email', 'x@bench.example', \
                        CASE WHEN $4 = 1 AND s.id % 100 = 0 THEN 'dead' \
                             WHEN $4 = 1 AND s.id % 100 = 1 THEN 'pending' ELSE 'done' END, \
                        1, $4, $4, $4, $4 \
                 FROM subscriptions s WHERE s.store_id = $1",
            )
            .bind(store.0)
            .bind(restock)
            .bind(variant)
            .bind(event)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn bench_planned_count(&self) -> anyhow::Result<i64> {
        Ok(crate::storage::with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM notifications WHERE state = 'pending'")
                .fetch_one(pool)
                .await?
        }))
    }

    /// Fresh planner statistics after a bulk load.
    pub async fn bench_analyze(&self) -> anyhow::Result<()> {
        crate::storage::with_pool!(self, pool => {
            sqlx::query("ANALYZE").execute(pool).await?;
        });
        Ok(())
    }

    async fn bench_seed_waiting_list_named(
        &self,
        store: StoreId,
        product: i64,
        variant: i64,
        name: &str,
    ) -> anyhow::Result<()> {
        let signup = crate::storage::demand::SignUp {
            email: restock_core::values::Email::parse(&format!("{name}@bench.example"))?,
            target: crate::storage::demand::Target::Variant {
                product: restock_core::ids::ProductId(product),
                variant: restock_core::ids::VariantId(variant),
            },
            market: None,
            source: "bench".into(),
            consent: Default::default(),
            time_zone: None,
            anonymous: false,
        };
        self.subscribe(store, &signup, 0).await?;
        Ok(())
    }
}
