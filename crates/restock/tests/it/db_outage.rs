//! PostgreSQL stops and starts again in the middle of deliveries. On a dedicated
//! cluster this test starts and stops itself (never the shared server on 5432):
//! requests get 503 with a code and Retry-After at once, /readyz answers within a
//! second and truthfully, and sends that reached the relay while the database was
//! away are recorded when it returns, never sent twice.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::smtp::{Behaviour, SmtpSink};
use restock::App;
use restock::channels::EmailChannel;
use restock::channels::email::EmailTransport;
use restock::config::Config;
use restock::storage::Db;
use restock::util::Clock;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A throwaway PostgreSQL cluster on its own port, run as the postgres user.
struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

impl PgCluster {
    fn pg(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_new() -> PgCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("pg_ctl").exists())
            .expect("pg_ctl");
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let c = PgCluster { dir, bin, port };
        let out = c
            .pg("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(c.data())
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.start();
        c
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .pg("pg_ctl")
            .args(["-w", "-t", "30", "-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.data())
            .arg("start")
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let out = self
            .pg("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.data())
            .arg("stop")
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }
}

async fn timed_get(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> (u16, Value, Option<String>, Duration) {
    let started = Instant::now();
    let mut req = http.get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_string());
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, retry, started.elapsed())
}

fn outbox_dir(p: &Path) -> PathBuf {
    p.join("outbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_mid_delivery_loses_and_duplicates_nothing() {
    let pg = PgCluster::start_new();
    let sink = SmtpSink::start(Behaviour::SlowData);
    let work = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = Config::from_layers(&[&format!(
        "public_url = \"http://{addr}\"\nadmin_token = \"operator-secret\"\n\
         [database]\nurl = \"{}\"\nacquire_timeout_ms = 1000\n\
         [email]\ntransport = \"smtp\"\nfile_dir = \"{}\"\nfrom = \"Shop <alerts@shop.example>\"\n\
         [email.smtp]\nport = {}\npool_size = 16\n\
         [dispatch]\nenabled = true\nconcurrency = 16\nlease_secs = 10\npoll_interval_ms = 200\n",
        pg.url(),
        outbox_dir(work.path()).display(),
        sink.port
    )])
    .expect("config");
    let db = Db::connect(&config.database, restock::storage::Warmth::Warm)
        .await
        .expect("connects");
    db.migrate().await.expect("migrates");
    let email = EmailChannel::Transport(Arc::new(
        EmailTransport::from_config(&config).expect("transport"),
    ));
    let app = App::new(config, db, Clock::System, email)
        .await
        .expect("app");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(restock::run(app.clone(), listener, shutdown.clone()));
    let base = format!("http://{addr}");
    let http = restock::tls::http_client_builder()
        .build()
        .expect("HTTP client");

    let created: Value = http
        .post(format!("{base}/admin/stores"))
        .bearer_auth("operator-secret")
        .json(&json!({"name": "Shop", "slug": "shop"}))
        .send()
        .await
        .expect("create store")
        .json()
        .await
        .expect("json");
    let key = created["api_key"].as_str().expect("key").to_string();
    let pk = created["publishable_key"].as_str().expect("pk").to_string();
    let put = http
        .put(format!("{base}/v1/products/shoe"))
        .bearer_auth(&key)
        .json(&common::shoe_product())
        .send()
        .await
        .expect("product");
    assert_eq!(put.status(), 200);
    const N: usize = 40;
    for i in 0..N {
        let r = http
            .post(format!("{base}/storefront/v1/{pk}/subscriptions"))
            .json(&json!({"email": format!("shopper{i}@example.com"), "sku": "S-42"}))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(r.status(), 201);
    }
    let r = http
        .post(format!("{base}/v1/stock"))
        .bearer_auth(&key)
        .json(&json!({"items": [{"sku": "S-42", "available": 100}]}))
        .send()
        .await
        .expect("stock");
    assert_eq!(r.status(), 200);

    // Sends are in flight (the relay waits 2 s before taking each message).
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.stop();

    let (status, body, retry, took) =
        timed_get(&http, &format!("{base}/v1/notifications"), Some(&key)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (503, json!("database_unavailable")),
        "{body}"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(
        retry.is_some_and(|r| r.parse::<u64>().is_ok()),
        "Retry-After"
    );
    assert!(took < Duration::from_millis(2500), "answered in {took:?}");
    for _ in 0..3 {
        let (status, body, _, took) = timed_get(&http, &format!("{base}/readyz"), None).await;
        assert_eq!(
            (status, body["code"].clone()),
            (503, json!("not_ready")),
            "{body}"
        );
        assert!(took < Duration::from_secs(1), "readyz took {took:?}");
    }
    // The sends in flight finish at the relay while the database is still away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_relay = sink.messages().len();
    assert!(at_relay > 0, "no send reached the relay during the outage");
    pg.start();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body, _, _) = timed_get(&http, &format!("{base}/v1/outbox"), Some(&key)).await;
        if status == 200 && body["done"] == json!(N) {
            break;
        }
        assert!(Instant::now() < deadline, "not all done: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _, _, took) = timed_get(&http, &format!("{base}/readyz"), None).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1));
    // Past every lease: nothing goes out a second time.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut recipients: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    recipients.sort();
    let total = recipients.len();
    recipients.dedup();
    assert_eq!(
        (total, recipients.len()),
        (N, N),
        "each shopper exactly once"
    );

    shutdown.cancel();
    server.await.expect("server task").expect("stops");
}
