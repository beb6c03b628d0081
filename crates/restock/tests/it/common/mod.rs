//! Shared integration-test harness: the real server on port 0 against a fresh
//! database (a temporary SQLite file, or a fresh PostgreSQL schema), workers driven
//! explicitly and time controlled through a manual clock.
#![allow(dead_code)]

pub mod python_server;
pub mod smtp;
pub mod tls_smtp;

use std::sync::Arc;

use restock::App;
use restock::channels::EmailChannel;
use restock::channels::email::EmailTransport;
use restock::config::Config;
use restock::storage::{Db, Warmth};
use restock::util::Clock;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The secrets key every test server runs with (so secrets are sealed at rest in
/// every test); tests of throttling and of key rotation override the settings.
pub const TEST_SECRETS_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A fixed start time: 2026-03-01T12:00:00Z.
pub const T0: i64 = 1_772_366_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("RESTOCK_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs a test body once per database: `both_dbs!(name, |backend| async move { ... });`
#[macro_export]
macro_rules! both_dbs {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::common::Backend::Postgres).await
            }
        }
    };
}

/// Finished messages in a file-transport folder, sorted: `.eml` files only (a write
/// in progress is a `.eml.partial`). None when the folder does not exist yet.
pub fn eml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
}

/// The `To` address of a raw message, which must parse as MIME.
pub fn recipient_of(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .expect("valid MIME")
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("recipient")
        .to_string()
}

/// A fresh, migrated database; the guard removes it.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let t = TestDb::empty(backend).await;
        t.db.migrate().await.expect("migrates");
        t
    }

    /// A fresh database with no tables yet (for tests that migrate it themselves).
    pub async fn empty(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}/restock.db", dir.path().display());
                let db = Db::connect_url(&url, 8).await.expect("sqlite connects");
                TestDb {
                    db,
                    url,
                    dir,
                    schema: None,
                }
            }
            Backend::Postgres => {
                let schema = format!(
                    "t_{}",
                    restock::util::random_token(9)
                        .to_lowercase()
                        .replace(['-', '_'], "x")
                );
                let db = Db::connect_postgres_schema(&pg_url(), &schema, 8, Warmth::Lazy)
                    .await
                    .expect("postgres connects");
                let url = format!("{}?options=-csearch_path%3D{schema}", pg_url());
                TestDb {
                    db,
                    url,
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }

    /// Drops the PostgreSQL schema (call at the end of a passing test).
    pub async fn cleanup(&self) {
        self.db.close().await;
        if let Some(schema) = &self.schema
            && let Ok(admin) = sqlx::PgPool::connect(&pg_url()).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&admin)
            .await;
        }
    }
}

pub struct TestApp {
    pub app: App,
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub outbox_dir: std::path::PathBuf,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

#[derive(Debug, Clone)]
pub struct StoreKeys {
    pub id: i64,
    pub slug: String,
    pub api_key: String,
    pub publishable_key: String,
}

impl TestApp {
    /// Server on port 0, workers off (tests call `run_pending`), manual clock at T0,
    /// email written as files into a temp folder unless `extra_config` says otherwise.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, "").await
    }

    pub async fn spawn_with(backend: Backend, extra_config: &str) -> TestApp {
        let db = TestDb::new(backend).await;
        let outbox_dir = db.dir.path().join("outbox");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!(
            "public_url = \"http://{addr}\"\nadmin_token = \"operator-secret\"\n\
             [email]\ntransport = \"file\"\nfile_dir = \"{}\"\nfrom = \"Shop <alerts@shop.example>\"\n\
             [dispatch]\nenabled = false\n\
             [http]\nauth_failures_per_minute = 1000000\n\
             [secrets]\nkey = \"{TEST_SECRETS_KEY}\"\n",
            outbox_dir.display()
        );
        let config = Config::from_layers(&[&base, extra_config]).expect("test config");
        let email = EmailChannel::Transport(Arc::new(
            EmailTransport::from_config(&config).expect("email transport"),
        ));
        let app = App::new(config, db.db.clone(), Clock::manual(T0), email)
            .await
            .expect("app");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(restock::run(app.clone(), listener, shutdown.clone()));
        TestApp {
            app,
            base: format!("http://{addr}"),
            http: restock::tls::http_client_builder()
                .build()
                .expect("HTTP client"),
            db,
            outbox_dir,
            shutdown,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn advance(&self, ms: i64) {
        self.app.clock.advance_ms(ms);
    }

    pub fn now(&self) -> i64 {
        self.app.now()
    }

    /// Delivers everything due now; returns how many notifications were processed.
    pub async fn run_pending(&self) -> usize {
        restock::dispatch::run_pending(&self.app)
            .await
            .expect("dispatch runs")
    }

    /// Plans the restocks that are due (as the workers would) and returns how many
    /// alerts the first restock in a stock answer planned (0 when it reports none).
    pub async fn planned(&self, store: &StoreKeys, stock_answer: &Value) -> i64 {
        restock::planning::plan_due(&self.app)
            .await
            .expect("planning runs");
        let Some(id) = stock_answer["restocks"][0]["restock_id"].as_i64() else {
            return 0;
        };
        let (status, r) = self
            .get(&format!("/v1/restocks/{id}"), &store.api_key)
            .await;
        assert_eq!(status, 200, "{r}");
        r["planned"].as_i64().expect("planned")
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self.db.cleanup().await;
    }

    pub async fn create_store(&self, slug: &str) -> StoreKeys {
        let body = self
            .post_json_admin(
                "/admin/stores",
                &json!({"name": format!("Store {slug}"), "slug": slug, "allowed_origins": ["https://shop.example"], "shopify_secret": format!("shpss_{slug}")}),
            )
            .await;
        StoreKeys {
            id: body["id"].as_i64().expect("id"),
            slug: slug.into(),
            api_key: body["api_key"].as_str().expect("api key").into(),
            publishable_key: body["publishable_key"]
                .as_str()
                .expect("publishable key")
                .into(),
        }
    }

    async fn post_json_admin(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth("operator-secret")
            .json(body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 201, "admin call failed");
        resp.json().await.expect("json")
    }

    /// A merchant call with `key`; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, key, None).await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, key, Some(body)).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, key, Some(body))
            .await
    }

    /// Upserts the standard test product: "shoe" with variants S-42 and S-43.
    pub async fn seed_catalog(&self, store: &StoreKeys) {
        let (status, body) = self
            .put("/v1/products/shoe", &store.api_key, &shoe_product())
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Posts stock items; panics unless 200.
    pub async fn stock(&self, store: &StoreKeys, items: Value) -> Value {
        let (status, body) = self
            .post("/v1/stock", &store.api_key, &json!({ "items": items }))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Signs a shopper up through the storefront; returns (status, body).
    pub async fn subscribe(&self, store: &StoreKeys, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(&format!(
                "/storefront/v1/{}/subscriptions",
                store.publishable_key
            )))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The .eml files the file transport wrote, raw.
    pub fn sent_files(&self) -> Vec<Vec<u8>> {
        eml_files(&self.outbox_dir)
            .into_iter()
            .map(|p| std::fs::read(p).expect("read eml"))
            .collect()
    }

    /// Recipients of every message written so far.
    pub fn sent_recipients(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .sent_files()
            .iter()
            .map(|raw| recipient_of(raw))
            .collect();
        r.sort();
        r
    }

    pub async fn outbox(&self, store: &StoreKeys) -> Value {
        let (status, body) = self.get("/v1/outbox", &store.api_key).await;
        assert_eq!(status, 200);
        body
    }
}

/// A webhook signature as Shopify and WooCommerce make it,
/// base64(HMAC-SHA256(secret, body)), computed independently of the product code:
/// Python's hmac module.
pub fn python_signature(secret: &str, body: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64,hashlib,hmac,sys; print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).digest()).decode())",
            secret,
            body,
        ])
        .output()
        .expect("python3");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

pub fn shoe_product() -> Value {
    json!({
        "title": "Trail Shoe",
        "description": "Grippy & light",
        "image_url": "https://cdn.shop.example/shoe.jpg",
        "url": "https://shop.example/products/shoe",
        "category": "shoes",
        "price": 12900,
        "currency": "EUR",
        "variants": [
            {"sku": "S-42", "title": "42", "options": {"size": "42"}, "url": "https://shop.example/products/shoe?size=42", "inventory_item_id": "4242"},
            {"sku": "S-43", "title": "43", "options": {"size": "43"}, "price": 11900}
        ]
    })
}

/// Polls `check` until it holds, or fails the test after `secs` (for what happens
/// asynchronously: the test waits for what a user would see).
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
