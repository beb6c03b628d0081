//! The pull sources against real servers: the SQL poller reading the merchant's
//! MariaDB, PostgreSQL and SQLite databases (Restock's own storage on SQLite and
//! PostgreSQL), and the HTTP JSON poller against a local HTTP server that checks the
//! conditional headers. Runs are driven explicitly (one `run_once` per step) except
//! where the runner itself is under test (failures, the breaker, health).

use crate::common;

use std::time::Duration;

use common::{Backend, StoreKeys, T0, TestApp};
use restock::intake::runner::{PullOutcome, SourceCtx};
use restock_core::ids::StoreId;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn suffix() -> String {
    restock::util::random_token(8)
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "x")
}

#[derive(Debug, Clone, Copy)]
enum Merchant {
    Mariadb,
    Postgres,
    Sqlite,
}

/// The merchant's database: one table `stock_<suffix>` (sku, stock, legacy_qty).
struct MerchantDb {
    kind: Merchant,
    url: String,
    table: String,
    pool: MerchantPool,
    _dir: tempfile::TempDir,
}

enum MerchantPool {
    My(sqlx::MySqlPool),
    Pg(sqlx::PgPool, String),
    Lite(sqlx::SqlitePool),
}

impl MerchantDb {
    async fn new(kind: Merchant) -> MerchantDb {
        let sfx = suffix();
        let table = format!("stock_{sfx}");
        let dir = tempfile::tempdir().expect("temp dir");
        let create = format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, sku VARCHAR(200) NULL, stock BIGINT NULL, legacy_qty VARCHAR(40) NULL)"
        );
        let (url, pool) = match kind {
            Merchant::Mariadb => {
                let pool = sqlx::MySqlPool::connect(MARIADB_URL)
                    .await
                    .expect("MariaDB at 127.0.0.1:3306");
                (MARIADB_URL.to_string(), MerchantPool::My(pool))
            }
            Merchant::Postgres => {
                let schema = format!("merchant_{sfx}");
                let admin = sqlx::PgPool::connect(&common::pg_url())
                    .await
                    .expect("postgres");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&admin)
                    .await
                    .expect("schema");
                admin.close().await;
                let url = format!("{}?options=-csearch_path%3D{schema}", common::pg_url());
                let pool = sqlx::PgPool::connect(&url).await.expect("postgres");
                (url, MerchantPool::Pg(pool, schema))
            }
            Merchant::Sqlite => {
                let path = dir.path().join("erp.db");
                let url = format!("sqlite://{}", path.display());
                let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                    .await
                    .expect("sqlite");
                (url, MerchantPool::Lite(pool))
            }
        };
        let db = MerchantDb {
            kind,
            url,
            table,
            pool,
            _dir: dir,
        };
        db.exec(&create).await;
        db
    }

    async fn exec(&self, sql: &str) {
        let sql = sql.replace("$T", &self.table);
        match &self.pool {
            MerchantPool::My(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(|_| ()),
            MerchantPool::Pg(p, _) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(|_| ()),
            MerchantPool::Lite(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(|_| ()),
        }
        .expect("merchant SQL runs");
    }

    /// Inserts one row with bound values (so any byte can go in).
    async fn insert(&self, id: i64, sku: Option<&str>, stock: Option<i64>, legacy: Option<&str>) {
        let t = &self.table;
        match &self.pool {
            MerchantPool::My(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {t} (id, sku, stock, legacy_qty) VALUES (?, ?, ?, ?)"
            )))
            .bind(id)
            .bind(sku)
            .bind(stock)
            .bind(legacy)
            .execute(p)
            .await
            .map(|_| ()),
            MerchantPool::Pg(p, _) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {t} (id, sku, stock, legacy_qty) VALUES ($1, $2, $3, $4)"
            )))
            .bind(id)
            .bind(sku)
            .bind(stock)
            .bind(legacy)
            .execute(p)
            .await
            .map(|_| ()),
            MerchantPool::Lite(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {t} (id, sku, stock, legacy_qty) VALUES ($1, $2, $3, $4)"
            )))
            .bind(id)
            .bind(sku)
            .bind(stock)
            .bind(legacy)
            .execute(p)
            .await
            .map(|_| ()),
        }
        .expect("insert");
    }

    /// A URL for the same database with credentials that do not work.
    fn wrong_url(&self) -> String {
        match self.kind {
            Merchant::Mariadb => "mysql://root:wrong-password@127.0.0.1:3306/test".into(),
            Merchant::Postgres => "postgres://no_such_role@127.0.0.1:5432/test".into(),
            Merchant::Sqlite => format!("sqlite://{}/missing.db", self._dir.path().display()),
        }
    }

    async fn cleanup(self) {
        match self.pool {
            MerchantPool::My(p) => {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {}", self.table)))
                    .execute(&p)
                    .await;
                p.close().await;
            }
            MerchantPool::Pg(p, schema) => {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&p)
                    .await;
                p.close().await;
            }
            MerchantPool::Lite(p) => p.close().await,
        }
    }
}

/// The catalog the merchant's table is about: P-1 … P-5.
async fn seed_products(t: &TestApp, s: &StoreKeys) {
    let variants: Vec<Value> = (1..=5)
        .map(|i| json!({"sku": format!("P-{i}"), "title": format!("Size {i}")}))
        .collect();
    let (status, body) = t
        .put(
            "/v1/products/boot",
            &s.api_key,
            &json!({
                "title": "Boot", "url": "https://shop.example/boot", "price": 9900,
                "currency": "EUR", "variants": variants
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn put_sql_source(
    t: &TestApp,
    s: &StoreKeys,
    name: &str,
    url: &str,
    query: &str,
    available: &str,
) {
    let (status, r) = t
        .put(
            &format!("/v1/sources/{name}"),
            &s.api_key,
            &json!({
                "kind": "sql",
                "config": {
                    "url": url,
                    "query": query,
                    "columns": {"sku": "sku", "available": available},
                    "statement_timeout_secs": 30
                }
            }),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["interval_secs"], 900, "15 minutes by default: {r}");
}

/// One run of the store's source `name`, as the runner would start it.
async fn poll(t: &TestApp, s: &StoreKeys, name: &str) -> anyhow::Result<PullOutcome> {
    let row = t
        .app
        .db
        .source(StoreId(s.id), name)
        .await
        .expect("source row")
        .expect("source exists");
    let ctx = SourceCtx::from_row(&t.app, &row)?;
    match ctx.kind {
        restock::intake::source::Kind::Sql => {
            restock::intake::poll_sql::run_once(&t.app, &ctx, CancellationToken::new()).await
        }
        _ => restock::intake::poll_http::run_once(&t.app, &ctx, CancellationToken::new()).await,
    }
}

/// The variant's available quantity at the default location (none recorded: None).
async fn level(t: &TestApp, s: &StoreKeys, sku: &str) -> Option<i64> {
    let (status, v) = t.get(&format!("/v1/variants/{sku}"), &s.api_key).await;
    assert_eq!(status, 200, "{v}");
    v["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .find(|l| l["location"] == "default")
        .and_then(|l| l["available"].as_i64())
}

async fn rejections(t: &TestApp, s: &StoreKeys, query: &str) -> Vec<Value> {
    let (status, r) = t.get(&format!("/v1/rejections?{query}"), &s.api_key).await;
    assert_eq!(status, 200, "{r}");
    r["items"].as_array().expect("items").clone()
}

/// Runs without the intake runner: each test drives the poll itself.
async fn spawn_manual(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, "[intake]\nenabled = false\n").await
}

async fn reconciles(merchant: Merchant, backend: Backend) {
    let m = MerchantDb::new(merchant).await;
    let t = spawn_manual(backend).await;
    let s = t.create_store("alpha").await;
    seed_products(&t, &s).await;
    for (id, sku, stock) in [
        (1, "P-1", 5),
        (2, "P-2", 0),
        (3, "P-3", 7),
        (4, "GHOST-1", 3),
    ] {
        m.insert(id, Some(sku), Some(stock), None).await;
    }
    put_sql_source(
        &t,
        &s,
        "erp",
        &m.url,
        &format!("SELECT sku, stock FROM {} ORDER BY id", m.table),
        "stock",
    )
    .await;

    // First run: every row is new to Restock. The SKU the catalog lacks is parked.
    let out = poll(&t, &s, "erp").await.expect("first run");
    assert_eq!(out.delivered.applied, 3, "{out:?}");
    assert_eq!(out.delivered.rejected, 1, "{out:?}");
    assert_eq!(level(&t, &s, "P-1").await, Some(5));
    assert_eq!(level(&t, &s, "P-2").await, Some(0));
    assert_eq!(level(&t, &s, "P-3").await, Some(7));
    let parked = rejections(&t, &s, "reason_code=unknown_sku").await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["source"], "erp", "{parked:?}");

    // Unchanged table: nothing applied, nothing dead-lettered again.
    t.advance(60_000);
    let out = poll(&t, &s, "erp").await.expect("second run");
    assert_eq!(out.delivered.applied, 0, "{out:?}");
    assert_eq!(out.delivered.rejected, 0, "{out:?}");
    assert_eq!(
        out.delivered.stale, 0,
        "nothing was even handed over: {out:?}"
    );

    // A shopper waits for P-2; one row changes: one update and a restock planned.
    let (status, r) = t
        .subscribe(&s, json!({"email": "ana@example.com", "sku": "P-2"}))
        .await;
    assert!(status == 201 || status == 200, "{r}");
    m.exec("UPDATE $T SET stock = 6 WHERE sku = 'P-2'").await;
    t.advance(60_000);
    let out = poll(&t, &s, "erp").await.expect("third run");
    assert_eq!(out.delivered.applied, 1, "{out:?}");
    assert_eq!(out.delivered.restocks, 1, "{out:?}");
    assert_eq!(level(&t, &s, "P-2").await, Some(6));
    restock::planning::plan_due(&t.app)
        .await
        .expect("planning runs");
    let events = t
        .app
        .db
        .restock_events(StoreId(s.id), 10)
        .await
        .expect("events");
    let p2: Vec<_> = events.iter().filter(|e| e.sku == "P-2").collect();
    assert_eq!(p2.len(), 1, "{events:?}");
    assert_eq!(p2[0].planned_count, 1, "{events:?}");

    // A missed webhook: P-3 sold out in the merchant's database and nobody told
    // Restock. The next poll catches it.
    m.exec("UPDATE $T SET stock = 0 WHERE sku = 'P-3'").await;
    t.advance(60_000);
    let out = poll(&t, &s, "erp").await.expect("fourth run");
    assert_eq!(out.delivered.applied, 1, "{out:?}");
    assert_eq!(level(&t, &s, "P-3").await, Some(0));

    // A webhook newer than the poll wins; the poll wins over anything older.
    let future = chrono::DateTime::from_timestamp_millis(t.now() + 30_000)
        .expect("time")
        .to_rfc3339();
    t.stock(
        &s,
        json!([{"sku": "P-1", "available": 9, "observed_at": future}]),
    )
    .await;
    t.advance(1_000);
    let out = poll(&t, &s, "erp").await.expect("fifth run");
    assert_eq!(out.delivered.applied, 0, "{out:?}");
    assert_eq!(
        out.delivered.stale, 1,
        "the poll's row is older than the webhook: {out:?}"
    );
    assert_eq!(level(&t, &s, "P-1").await, Some(9));
    t.advance(60_000);
    let out = poll(&t, &s, "erp").await.expect("sixth run");
    assert_eq!(out.delivered.applied, 1, "{out:?}");
    assert_eq!(
        level(&t, &s, "P-1").await,
        Some(5),
        "the table is newer now"
    );

    // The catalog gains the parked SKU: its update applies, and the poll agrees.
    let (status, body) = t
        .put(
            "/v1/products/ghost",
            &s.api_key,
            &json!({"title": "Ghost", "url": "https://shop.example/ghost", "price": 100,
                    "currency": "EUR", "variants": [{"sku": "GHOST-1", "title": "One"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(level(&t, &s, "GHOST-1").await, Some(3));
    t.advance(60_000);
    let out = poll(&t, &s, "erp").await.expect("seventh run");
    assert_eq!(out.delivered.applied, 0, "{out:?}");
    assert_eq!(out.delivered.rejected, 0, "{out:?}");

    t.stop().await;
    m.cleanup().await;
}

async fn dead_letters(merchant: Merchant, backend: Backend) {
    let m = MerchantDb::new(merchant).await;
    let t = spawn_manual(backend).await;
    let s = t.create_store("alpha").await;
    seed_products(&t, &s).await;
    // PostgreSQL text cannot hold NUL; a control character stands in for it there.
    let nul_sku = match merchant {
        Merchant::Postgres => "BAD\u{1}SKU",
        _ => "BAD\0SKU",
    };
    m.insert(1, Some("P-1"), Some(5), Some("5")).await;
    m.insert(2, None, Some(1), Some("1")).await;
    m.insert(3, Some("  "), Some(2), Some("2")).await;
    m.insert(4, Some(nul_sku), Some(3), Some("3")).await;
    m.insert(5, Some("P-4"), Some(4), Some("n/a")).await;
    m.insert(6, Some("P-5"), Some(8), Some("99999999999999"))
        .await;
    m.insert(7, Some("P-3"), Some(2), Some("2.5")).await;
    // The merchant first maps the wrong column: the legacy text quantity.
    let query = format!("SELECT * FROM {} ORDER BY id", m.table);
    put_sql_source(&t, &s, "erp", &m.url, &query, "legacy_qty").await;
    let out = poll(&t, &s, "erp").await.expect("run");
    assert_eq!(out.delivered.applied, 1, "{out:?}");
    assert_eq!(out.delivered.rejected, 6, "{out:?}");
    let dead = rejections(&t, &s, "source=erp").await;
    let mut codes: Vec<&str> = dead
        .iter()
        .filter_map(|r| r["reason_code"].as_str())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "invalid_quantity",
            "invalid_quantity",
            "invalid_quantity",
            "invalid_sku",
            "invalid_sku",
            "invalid_sku"
        ],
        "{dead:?}"
    );
    // The raw row is kept, keys sorted.
    let p4 = dead
        .iter()
        .find(|r| r["payload"].as_str().is_some_and(|p| p.contains("\"P-4\"")))
        .expect("P-4's dead letter");
    assert_eq!(
        p4["payload"], r#"{"id":5,"legacy_qty":"n/a","sku":"P-4","stock":4}"#,
        "{p4}"
    );
    // The same bad rows on the next run are the same dead letters, counted again.
    t.advance(60_000);
    let out = poll(&t, &s, "erp").await.expect("run");
    assert_eq!(out.delivered.applied, 0, "{out:?}");
    let again = rejections(&t, &s, "source=erp").await;
    assert_eq!(again.len(), 6, "{again:?}");
    assert!(again.iter().all(|r| r["seen_count"] == 2), "{again:?}");

    // The fix: map the right column; replaying parses the kept rows again.
    put_sql_source(&t, &s, "erp", &m.url, &query, "stock").await;
    let (status, r) = t
        .post(
            "/v1/rejections/replay",
            &s.api_key,
            &json!({"source": "erp"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["applied"], 3, "{r}");
    assert_eq!(r["rejected"], 3, "the SKU-less rows stay dead: {r}");
    assert_eq!(level(&t, &s, "P-4").await, Some(4));
    assert_eq!(level(&t, &s, "P-5").await, Some(8));
    assert_eq!(level(&t, &s, "P-3").await, Some(2));
    t.stop().await;
    m.cleanup().await;
}

/// Wrong credentials: each run fails, the runner backs off, and after
/// `intake.breaker_failures` failures in a row the breaker opens; the health shows it.
async fn breaker(merchant: Merchant, backend: Backend) {
    let m = MerchantDb::new(merchant).await;
    let t = TestApp::spawn_with(
        backend,
        "[intake]\nenabled = true\ntick_ms = 50\nretry_base_ms = 50\nbreaker_failures = 3\nbreaker_open_secs = 3600\n",
    )
    .await;
    let s = t.create_store("alpha").await;
    seed_products(&t, &s).await;
    m.insert(1, Some("P-1"), Some(5), None).await;
    let query = format!("SELECT sku, stock FROM {}", m.table);
    put_sql_source(&t, &s, "erp", &m.wrong_url(), &query, "stock").await;
    // The runner's clock is the test's manual one: it moves only when told, in
    // steps far below the breaker's open time.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (status, v) = t.get("/v1/sources/erp", &s.api_key).await;
        assert_eq!(status, 200, "{v}");
        if v["health"]["status"] == "breaker_open" {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "breaker never opened: {v}"
        );
        t.advance(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let h = &view["health"];
    assert_eq!(h["consecutive_failures"], 3, "{view}");
    assert!(
        h["breaker_open_until"].as_i64().is_some_and(|u| u > T0),
        "{view}"
    );
    assert!(
        h["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{view}"
    );
    assert_eq!(h["error_rate"], 1.0, "{view}");
    assert_eq!(level(&t, &s, "P-1").await, None, "nothing applied");
    if let Some(url) = view["config"]["url"].as_str() {
        assert!(
            !url.contains("wrong-password"),
            "the password is masked: {url}"
        );
    }
    // Left alone while open: no more runs.
    for _ in 0..8 {
        t.advance(1_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, v) = t.get("/v1/sources/erp", &s.api_key).await;
    assert_eq!(v["health"]["consecutive_failures"], 3, "{v}");

    // Fixed settings close the breaker; the next run succeeds and health says so.
    put_sql_source(&t, &s, "erp", &m.url, &query, "stock").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (_, v) = t.get("/v1/sources/erp", &s.api_key).await;
        if v["health"]["status"] == "ok" && !v["health"]["last_success_at"].is_null() {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never recovered: {v}");
        t.advance(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view["health"]["applied"], 1, "{view}");
    assert_eq!(view["health"]["consecutive_failures"], 0, "{view}");
    assert!(
        view["health"]["last_success_at"].as_i64().is_some(),
        "{view}"
    );
    let (next, last) = (
        view["health"]["next_run_at"].as_i64().expect("next_run_at"),
        view["health"]["last_success_at"]
            .as_i64()
            .expect("last_success_at"),
    );
    assert!(
        (next - last - 900_000).abs() <= 1_000,
        "next run in 15 minutes: {view}"
    );
    assert_eq!(level(&t, &s, "P-1").await, Some(5));
    t.stop().await;
    m.cleanup().await;
}

macro_rules! per_merchant {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;
            both_dbs!(mariadb, |b| super::$scenario(Merchant::Mariadb, b));
            both_dbs!(postgres_merchant, |b| super::$scenario(
                Merchant::Postgres,
                b
            ));
            both_dbs!(sqlite_merchant, |b| super::$scenario(Merchant::Sqlite, b));
        }
    };
}

per_merchant!(reconciles);
per_merchant!(dead_letters);
per_merchant!(breaker);

#[test]
fn sql_settings_are_checked_and_the_password_is_masked() {
    use restock::intake::source::{Kind, check_config, redacted};
    let good = json!({"url": "postgres://shop:s3cret@db.internal/erp", "query": "SELECT sku, qty FROM stock",
                      "columns": {"available": "qty"}});
    assert_eq!(check_config(Kind::Sql, &good), Ok(()));
    let shown = redacted(&good);
    assert!(!shown.to_string().contains("s3cret"), "{shown}");
    for bad in [
        json!({"url": "oracle://x/y", "query": "SELECT 1"}),
        json!({"url": "postgres://x/y", "query": ""}),
        json!({"url": "postgres://x/y", "query": "SELECT 1", "driver": "mysql"}),
        json!({"url": "postgres://x/y", "query": "SELECT 1", "statement_timeout_secs": 0}),
        json!({"url": "postgres://x/y", "query": "SELECT 1", "columns": {"sku": ""}}),
        json!({"url": "postgres://x/y", "query": "SELECT 1", "unknown": 1}),
    ] {
        assert!(check_config(Kind::Sql, &bad).is_err(), "{bad}");
    }
}

/// A `restock serve` child process, killed (SIGKILL) when dropped.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn start_serve(db: &common::TestDb, name: &str) -> (Serve, String) {
    let port = free_port();
    let config = db.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [database]\nurl = \"{}\"\n\
             [email]\ntransport = \"file\"\nfile_dir = \"{}\"\n\
             [secrets]\nkey = \"{}\"\n\
             [intake]\ntick_ms = 100\nlease_secs = 2\nretry_base_ms = 100\n",
            db.url,
            db.dir.path().join("outbox").display(),
            common::TEST_SECRETS_KEY
        ),
    )
    .expect("write config");
    let child = Serve(
        std::process::Command::new(env!("CARGO_BIN_EXE_restock"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("HOSTNAME", name)
            .env(
                "RESTOCK_LOG",
                std::env::var("RESTOCK_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start restock serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = restock::tls::http_client_builder()
        .build()
        .expect("HTTP client");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            return (child, base);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restock serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, &url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

/// Two `restock serve` processes on one PostgreSQL database share one SQL source:
/// the lease makes exactly one run it, and when that one is killed the other takes
/// the poller over within a lease period and applies the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_poller_and_take_over_when_one_dies() {
    let db = common::TestDb::new(Backend::Postgres).await;
    let created = db
        .db
        .create_store(
            restock::storage::stores::NewStore::plain("Lease", "lease"),
            0,
        )
        .await
        .expect("store");
    let key = created.api_key;
    let m = MerchantDb::new(Merchant::Postgres).await;
    m.insert(1, Some("P-1"), Some(5), None).await;
    let (a, a_url) = start_serve(&db, "inst-a").await;
    let (b, b_url) = start_serve(&db, "inst-b").await;
    let mut servers = vec![(a, a_url.clone(), "inst-a"), (b, b_url, "inst-b")];
    let http = restock::tls::http_client_builder()
        .build()
        .expect("HTTP client");
    let variants: Vec<Value> = (1..=2)
        .map(|i| json!({"sku": format!("P-{i}"), "title": format!("Size {i}")}))
        .collect();
    api(
        &http,
        reqwest::Method::PUT,
        format!("{a_url}/v1/products/boot"),
        &key,
        Some(json!({
            "title": "Boot", "url": "https://shop.example/boot", "price": 9900,
            "currency": "EUR", "variants": variants
        })),
    )
    .await;
    api(
        &http,
        reqwest::Method::PUT,
        format!("{a_url}/v1/sources/erp"),
        &key,
        Some(json!({
            "kind": "sql",
            "config": {"url": m.url, "query": format!("SELECT sku, stock FROM {}", m.table),
                       "columns": {"available": "stock"}}
        })),
    )
    .await;
    let source = |base: String| {
        let http = http.clone();
        let key = key.clone();
        async move {
            api(
                &http,
                reqwest::Method::GET,
                format!("{base}/v1/sources/erp"),
                &key,
                None,
            )
            .await
        }
    };
    let level = |base: String, sku: &'static str| {
        let http = http.clone();
        let key = key.clone();
        async move {
            let v = api(
                &http,
                reqwest::Method::GET,
                format!("{base}/v1/variants/{sku}"),
                &key,
                None,
            )
            .await;
            v["levels"][0]["available"].as_i64()
        }
    };
    let wait_level = |base: String, sku: &'static str, want: i64| {
        let level = &level;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while level(base.clone(), sku).await != Some(want) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{sku} never reached {want}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_level(a_url.clone(), "P-1", 5).await;
    // From now on it runs every second, so the test sees several runs (the API's
    // minimum is a minute).
    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .expect("restock's database");
    sqlx::query("UPDATE sources SET interval_secs = 1, next_run_at = 0 WHERE name = 'erp'")
        .execute(&pool)
        .await
        .expect("shorten the interval");

    // Several runs later, one instance has run them all.
    let mut owners = std::collections::BTreeSet::new();
    let first = source(a_url.clone()).await;
    for _ in 0..30 {
        let v = source(a_url.clone()).await;
        if let Some(o) = v["health"]["running_on"].as_str() {
            owners.insert(o.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = source(a_url.clone()).await;
    assert!(
        v["health"]["runs"].as_i64() > first["health"]["runs"].as_i64(),
        "the poller keeps running: {v}"
    );
    assert_eq!(
        owners.len(),
        1,
        "exactly one instance runs the poller: {owners:?}"
    );
    let owner = owners.into_iter().next().expect("owner");
    // Each change applied once, though both instances are up.
    m.exec("UPDATE $T SET stock = 6 WHERE sku = 'P-1'").await;
    wait_level(a_url.clone(), "P-1", 6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = source(a_url.clone()).await;
    assert_eq!(v["health"]["applied"], 2, "5, then 6, each once: {v}");
    let levels_from_erp: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM stock_levels WHERE source = 'erp'")
            .fetch_one(&pool)
            .await
            .expect("levels");
    assert_eq!(levels_from_erp, 1, "one level, written by the poller");

    // SIGKILL the instance running it: no chance to release the lease.
    let at = servers
        .iter()
        .position(|(_, _, name)| owner.starts_with(&format!("{name}-")))
        .expect("the owner is one of ours");
    let (mut dead, _, _) = servers.remove(at);
    let (_, survivor_url, survivor) = &servers[0];
    dead.0.kill().expect("SIGKILL");
    let _ = dead.0.wait();
    let killed_at = std::time::Instant::now();
    m.exec("UPDATE $T SET stock = 0 WHERE sku = 'P-1'").await;
    let deadline = killed_at + Duration::from_secs(10);
    loop {
        let v = source(survivor_url.clone()).await;
        if v["health"]["running_on"]
            .as_str()
            .is_some_and(|o| o.starts_with(&format!("{survivor}-")))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never taken over: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed_at.elapsed();
    // A lease of 2 s, renewal attempts every third of it.
    assert!(
        took <= Duration::from_millis(3_500),
        "taken over after {took:?}"
    );
    wait_level(survivor_url.clone(), "P-1", 0).await;
    let v = source(survivor_url.clone()).await;
    assert_eq!(v["health"]["applied"], 3, "{v}");
    drop(servers);
    pool.close().await;
    db.cleanup().await;
    m.cleanup().await;
}

/// The merchant's JSON endpoint: answers with the current document, honours
/// `If-None-Match` / `If-Modified-Since`, requires a bearer token, and records what
/// each request carried.
#[derive(Default)]
struct Feed {
    body: String,
    etag: Option<String>,
    last_modified: Option<String>,
    status: u16,
    seen: Vec<(Option<String>, Option<String>, Option<String>)>,
}

type SharedFeed = std::sync::Arc<std::sync::Mutex<Feed>>;

async fn feed_handler(
    axum::extract::State(feed): axum::extract::State<SharedFeed>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut f = feed.lock().expect("feed");
    f.seen.push((
        h("authorization"),
        h("if-none-match"),
        h("if-modified-since"),
    ));
    if h("authorization").as_deref() != Some("Bearer feed-token") {
        return (axum::http::StatusCode::UNAUTHORIZED, "no").into_response();
    }
    if f.status != 200 {
        return axum::http::StatusCode::from_u16(f.status)
            .expect("status")
            .into_response();
    }
    let not_modified = match (&f.etag, h("if-none-match")) {
        (Some(e), Some(sent)) => *e == sent,
        (Some(_), None) => false,
        (None, _) => f.last_modified.is_some() && f.last_modified == h("if-modified-since"),
    };
    let mut resp = if not_modified {
        axum::http::StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([("content-type", "application/json")], f.body.clone()).into_response()
    };
    if let Some(e) = &f.etag {
        resp.headers_mut().insert("etag", e.parse().expect("etag"));
    }
    if let Some(lm) = &f.last_modified {
        resp.headers_mut()
            .insert("last-modified", lm.parse().expect("last-modified"));
    }
    resp
}

async fn start_feed() -> (SharedFeed, String) {
    let feed: SharedFeed = Default::default();
    feed.lock().expect("feed").status = 200;
    let app = axum::Router::new()
        .route("/stock.json", axum::routing::get(feed_handler))
        .with_state(feed.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (feed, format!("http://{addr}/stock.json"))
}

/// Runs the source once and records the run as the runner does (cursor included).
async fn poll_and_record(t: &TestApp, s: &StoreKeys, name: &str) -> anyhow::Result<PullOutcome> {
    let out = poll(t, s, name).await?;
    let row = t
        .app
        .db
        .source(StoreId(s.id), name)
        .await
        .expect("row")
        .expect("source");
    let report = restock::storage::sources::RunReport {
        ok: true,
        applied: out.delivered.applied,
        rejected: out.delivered.rejected,
        cursor: out.cursor.clone(),
        ..Default::default()
    };
    t.app
        .db
        .record_source_run(row.id, &report, t.now())
        .await
        .expect("record");
    Ok(out)
}

both_dbs!(
    http_poller_sends_conditional_headers_and_applies_only_changes,
    |backend: Backend| async move {
        let t = spawn_manual(backend).await;
        let s = t.create_store("alpha").await;
        seed_products(&t, &s).await;
        let (feed, url) = start_feed().await;
        let doc = |p1: i64| {
            json!({"data": {"items": [
                {"code": "P-1", "qty": p1, "where": "main"},
                {"code": "P-2", "qty": "lots"},
                "not an item"
            ]}})
            .to_string()
        };
        {
            let mut f = feed.lock().expect("feed");
            f.body = doc(5);
            f.etag = Some("\"v1\"".into());
        }
        let config = |max_bytes: u64| {
            json!({"kind": "http", "config": {
                "url": url, "headers": {"Authorization": "Bearer feed-token"},
                "items_pointer": "/data/items",
                "fields": {"sku": "code", "available": "qty"},
                "max_bytes": max_bytes, "timeout_secs": 5
            }})
        };
        let (status, r) = t
            .put("/v1/sources/feed", &s.api_key, &config(100_000))
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["interval_secs"], 900, "{r}");
        assert_eq!(
            r["config"]["headers"], "********",
            "the auth header is masked: {r}"
        );

        // First run: P-1 applied; the unreadable items are dead letters.
        let out = poll_and_record(&t, &s, "feed").await.expect("first run");
        assert_eq!(out.delivered.applied, 1, "{out:?}");
        assert_eq!(out.delivered.rejected, 2, "{out:?}");
        assert_eq!(level(&t, &s, "P-1").await, Some(5));
        let dead = rejections(&t, &s, "source=feed").await;
        let mut codes: Vec<&str> = dead
            .iter()
            .filter_map(|r| r["reason_code"].as_str())
            .collect();
        codes.sort();
        assert_eq!(codes, ["invalid_item", "invalid_quantity"], "{dead:?}");
        // Logged: the one record that changed, as a stock item.
        let (status, logged) = t.get("/v1/sources/feed/log", &s.api_key).await;
        assert_eq!(status, 200, "{logged}");
        assert_eq!(
            logged["items"].as_array().map(Vec::len),
            Some(1),
            "{logged}"
        );
        assert_eq!(logged["items"][0]["format"], "rows");
        let rows: Value =
            serde_json::from_str(logged["items"][0]["payload"].as_str().expect("payload"))
                .expect("rows");
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
        assert_eq!(
            (rows[0]["sku"].clone(), rows[0]["available"].clone()),
            (json!("P-1"), json!(5))
        );
        {
            let f = feed.lock().expect("feed");
            assert_eq!(f.seen.len(), 1);
            assert_eq!(
                f.seen[0].0.as_deref(),
                Some("Bearer feed-token"),
                "auth header sent"
            );
            assert_eq!(f.seen[0].1, None, "nothing to match yet");
        }

        // Unchanged: the server answers 304 to the ETag; nothing delivered.
        t.advance(60_000);
        let out = poll_and_record(&t, &s, "feed").await.expect("second run");
        assert_eq!(out.delivered.applied, 0, "{out:?}");
        assert_eq!(out.delivered.rejected, 0, "{out:?}");
        assert_eq!(
            feed.lock().expect("feed").seen[1].1.as_deref(),
            Some("\"v1\"")
        );

        // A new version: only the changed item applies.
        {
            let mut f = feed.lock().expect("feed");
            f.body = doc(8);
            f.etag = Some("\"v2\"".into());
        }
        t.advance(60_000);
        let out = poll_and_record(&t, &s, "feed").await.expect("third run");
        assert_eq!(out.delivered.applied, 1, "{out:?}");
        assert_eq!(level(&t, &s, "P-1").await, Some(8));

        // Last-Modified only: If-Modified-Since comes back, and a 304 delivers nothing.
        {
            let mut f = feed.lock().expect("feed");
            f.etag = None;
            f.last_modified = Some("Sun, 01 Mar 2026 11:00:00 GMT".into());
            f.body = doc(3);
        }
        t.advance(60_000);
        let out = poll_and_record(&t, &s, "feed").await.expect("fourth run");
        assert_eq!(out.delivered.applied, 1, "{out:?}");
        t.advance(60_000);
        let out = poll_and_record(&t, &s, "feed").await.expect("fifth run");
        assert_eq!(out.delivered.applied, 0, "{out:?}");
        {
            let f = feed.lock().expect("feed");
            let last = f.seen.last().expect("request");
            assert_eq!(
                last.2.as_deref(),
                Some("Sun, 01 Mar 2026 11:00:00 GMT"),
                "{:?}",
                f.seen
            );
        }
        assert_eq!(level(&t, &s, "P-1").await, Some(3));

        // A missed change caught: Restock's level moved without the feed changing, the
        // next full answer puts it back.
        t.stock(
            &s,
            json!([{"sku": "P-1", "available": 40, "observed_at": "2026-03-01T11:59:00Z"}]),
        )
        .await;
        assert_eq!(
            level(&t, &s, "P-1").await,
            Some(3),
            "older than the poll: stale"
        );

        // Over max_bytes: refused, the run fails.
        let (status, r) = t.put("/v1/sources/feed", &s.api_key, &config(40)).await;
        assert_eq!(status, 200, "{r}");
        feed.lock().expect("feed").last_modified = None;
        let err = poll(&t, &s, "feed").await.expect_err("oversize answer");
        assert!(err.to_string().contains("max_bytes"), "{err:#}");

        // Non-2xx: a run failure.
        let (status, r) = t
            .put("/v1/sources/feed", &s.api_key, &config(100_000))
            .await;
        assert_eq!(status, 200, "{r}");
        feed.lock().expect("feed").status = 503;
        let err = poll(&t, &s, "feed").await.expect_err("503");
        assert!(err.to_string().contains("503"), "{err:#}");

        // Wrong token: 401, a failure.
        feed.lock().expect("feed").status = 200;
        let mut wrong = config(100_000);
        wrong["config"]["headers"]["Authorization"] = json!("Bearer nope");
        let (status, r) = t.put("/v1/sources/feed", &s.api_key, &wrong).await;
        assert_eq!(status, 200, "{r}");
        let err = poll(&t, &s, "feed").await.expect_err("401");
        assert!(err.to_string().contains("401"), "{err:#}");
        t.stop().await;
    }
);

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

both_dbs!(
    https_poller_trusts_the_public_roots_and_a_named_private_ca,
    |backend: Backend| async move {
        // Python's ssl (OpenSSL) on the other side, with a certificate from a test CA.
        let server =
            common::python_server::PythonServer::start("https_json_server.py", &[], "python3");
        std::fs::write(
            server.dir.path().join("stock.json"),
            json!({"items": [{"sku": "P-1", "qty": 7}]}).to_string(),
        )
        .expect("write feed");
        let ca = std::fs::read_to_string(server.ca_file()).expect("test CA");
        let t = spawn_manual(backend).await;
        let s = t.create_store("alpha").await;
        seed_products(&t, &s).await;
        let config = |ca_pem: Option<&str>| {
            let mut c = json!({"kind": "http", "config": {
                "url": format!("https://127.0.0.1:{}/stock.json", server.port),
                "headers": {"Authorization": "Bearer feed-token"},
                "items_pointer": "/items",
                "fields": {"sku": "sku", "available": "qty"},
                "timeout_secs": 5
            }});
            if let Some(pem) = ca_pem {
                c["config"]["ca_pem"] = json!(pem);
            }
            c
        };

        // The test CA is not a public root: the certificate is refused, nothing applied.
        let (status, r) = t.put("/v1/sources/feed", &s.api_key, &config(None)).await;
        assert_eq!(status, 200, "{r}");
        let err = poll(&t, &s, "feed")
            .await
            .expect_err("untrusted certificate");
        let why = format!("{err:#}");
        assert!(why.contains("certificate"), "{why}");
        assert_eq!(level(&t, &s, "P-1").await, None);

        // Named as the source's CA: read over TLS and applied.
        let (status, r) = t
            .put("/v1/sources/feed", &s.api_key, &config(Some(&ca)))
            .await;
        assert_eq!(status, 200, "{r}");
        let out = poll(&t, &s, "feed").await.expect("read over TLS");
        assert_eq!(out.delivered.applied, 1, "{out:?}");
        assert_eq!(level(&t, &s, "P-1").await, Some(7));

        // The name must match the certificate: the leaf is for 127.0.0.1 and
        // localhost, not for 127.0.0.2 (which also reaches the server).
        let mut other_name = config(Some(&ca));
        other_name["config"]["url"] =
            json!(format!("https://127.0.0.2:{}/stock.json", server.port));
        let (status, r) = t.put("/v1/sources/feed", &s.api_key, &other_name).await;
        assert_eq!(status, 200, "{r}");
        let err = poll(&t, &s, "feed").await.expect_err("name mismatch");
        assert!(format!("{err:#}").contains("certificate"), "{err:#}");

        // A CA that is not a PEM certificate is refused when saved, with the reason.
        let (status, r) = t
            .put(
                "/v1/sources/feed",
                &s.api_key,
                &config(Some("not a certificate")),
            )
            .await;
        assert_eq!(status, 422, "{r}");
        assert!(r["code"].is_string(), "{r}");
        assert!(
            r["message"].as_str().unwrap_or_default().contains("ca_pem"),
            "{r}"
        );
        t.stop().await;
    }
);

both_dbs!(
    sql_poller_reads_the_merchant_postgres_over_tls_and_checks_its_certificate,
    |backend: Backend| async move {
        let t = spawn_manual(backend).await;
        let s = t.create_store("alpha").await;
        seed_products(&t, &s).await;
        // The quantity says whether the poller's own connection is encrypted.
        let query = "SELECT 'P-1' AS sku, CASE WHEN ssl THEN 6 ELSE 0 END AS qty \
                     FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        put_sql_source(
            &t,
            &s,
            "erp",
            &with_params(&common::pg_url(), "sslmode=require"),
            query,
            "qty",
        )
        .await;
        let out = poll(&t, &s, "erp").await.expect("read over TLS");
        assert_eq!(out.delivered.applied, 1, "{out:?}");
        assert_eq!(
            level(&t, &s, "P-1").await,
            Some(6),
            "the connection used TLS"
        );

        // verify-full checks the server's certificate against the trusted roots: the
        // test server's self-signed certificate is not among them.
        put_sql_source(
            &t,
            &s,
            "erp",
            &with_params(&common::pg_url(), "sslmode=verify-full"),
            query,
            "qty",
        )
        .await;
        let err = poll(&t, &s, "erp").await.expect_err("unverified server");
        assert!(format!("{err:#}").contains("certificate"), "{err:#}");

        // A CA for a SQLite file is a settings error.
        let (status, r) = t
            .put(
                "/v1/sources/erp",
                &s.api_key,
                &json!({"kind": "sql", "config": {
                    "url": "sqlite:///tmp/x.db", "query": "SELECT 1",
                    "columns": {"sku": "sku", "available": "qty"},
                    "ca_pem": "-----BEGIN CERTIFICATE-----"
                }}),
            )
            .await;
        assert_eq!(status, 422, "{r}");
        t.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_poller_never_falls_back_to_plain_text_when_tls_is_required() {
    // This MariaDB offers no TLS: a source that requires it fails the run.
    let t = spawn_manual(Backend::Sqlite).await;
    let s = t.create_store("alpha").await;
    seed_products(&t, &s).await;
    put_sql_source(
        &t,
        &s,
        "erp",
        &with_params(MARIADB_URL, "ssl-mode=REQUIRED"),
        "SELECT 'P-1' AS sku, 3 AS qty",
        "qty",
    )
    .await;
    let err = poll(&t, &s, "erp").await.expect_err("TLS required");
    assert!(format!("{err:#}").to_lowercase().contains("tls"), "{err:#}");
    assert_eq!(level(&t, &s, "P-1").await, None);
    // The same source preferring TLS reads in plain text from this server.
    put_sql_source(
        &t,
        &s,
        "erp",
        &with_params(MARIADB_URL, "ssl-mode=PREFERRED"),
        "SELECT 'P-1' AS sku, 3 AS qty",
        "qty",
    )
    .await;
    poll(&t, &s, "erp")
        .await
        .expect("plain text when only preferred");
    assert_eq!(level(&t, &s, "P-1").await, Some(3));
    t.stop().await;
}
