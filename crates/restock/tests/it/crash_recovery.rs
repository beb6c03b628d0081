//! The real binary, killed mid-dispatch: nothing is lost and nothing is planned
//! twice. And a graceful stop lets sends in flight finish.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::smtp::{Behaviour, SmtpSink};
use common::{Backend, TestDb};
use restock::storage::stores::NewStore;
use restock_core::ids::StoreId;
use serde_json::{Value, json};

const CONCURRENCY: usize = 2;

/// A running `restock serve`; killed on drop so a failing test leaves nothing behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    db: TestDb,
    config: PathBuf,
    outbox: PathBuf,
    base: String,
    api_key: String,
    store: StoreId,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Setup {
    /// Messages to files in `outbox`; two sends in flight, short leases.
    async fn new(backend: Backend) -> Setup {
        Self::configured(backend, |outbox| {
            format!(
                "[email]\ntransport = \"file\"\nfile_dir = \"{}\"\n\
                 [dispatch]\nconcurrency = {CONCURRENCY}\nbatch_size = 10\nlease_secs = 2\npoll_interval_ms = 100\n",
                outbox.display()
            )
        })
        .await
    }

    /// `settings` gives the configuration's email and dispatch sections.
    async fn configured(backend: Backend, settings: impl Fn(&std::path::Path) -> String) -> Setup {
        let db = TestDb::new(backend).await;
        let port = free_port();
        let outbox = db.dir.path().join("outbox");
        let config = db.dir.path().join("restock.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
                 [database]\nurl = \"{}\"\n{}",
                db.url,
                settings(&outbox)
            ),
        )
        .expect("write config");
        let created = db
            .db
            .create_store(NewStore::plain("Crash", "crash"), 0)
            .await
            .expect("store");
        Setup {
            store: created.store.store_id(),
            api_key: created.api_key,
            db,
            config,
            outbox,
            base: format!("http://127.0.0.1:{port}"),
            http: restock::tls::http_client_builder()
                .build()
                .expect("HTTP client"),
        }
    }

    async fn start(&self) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_restock"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            // RESTOCK_TEST_SERVER_LOG=info shows what the server did, when debugging.
            .env(
                "RESTOCK_LOG",
                std::env::var("RESTOCK_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start restock serve");
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await
                && r.status() == 200
            {
                return server;
            }
            assert!(Instant::now() < deadline, "restock serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// Catalog, S-42 sold out, `n` shoppers waiting; then the restock, planned by the
    /// server's worker. Returns the restock event id.
    async fn restock_with_waiters(&self, n: u64) -> i64 {
        let id = self.restock_only(n).await;
        self.wait_planned(id, n).await;
        id
    }

    async fn wait_planned(&self, id: i64, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let e = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/restocks/{id}"),
                    json!(null),
                )
                .await;
            if e["plan_state"] == "done" {
                assert_eq!(e["planned"], n, "{e}");
                return;
            }
            assert!(Instant::now() < deadline, "planning did not finish: {e}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The same, returning as soon as the restock is recorded.
    async fn restock_only(&self, n: u64) -> i64 {
        self.call(
            reqwest::Method::PUT,
            "/v1/products/shoe",
            common::shoe_product(),
        )
        .await;
        self.call(reqwest::Method::POST, "/v1/stock", json!({"items": [{"sku": "S-42", "available": 0, "observed_at": "2026-01-01T00:00:00Z"}]}))
            .await;
        let v = self
            .db
            .db
            .variant_by_sku(self.store, "S-42")
            .await
            .expect("query")
            .expect("variant");
        self.db
            .db
            .bench_seed_waiting_list(self.store, v.product_id, v.id, n)
            .await
            .expect("seed");
        let r = self
            .call(reqwest::Method::POST, "/v1/stock", json!({"items": [{"sku": "S-42", "available": 5000, "observed_at": "2026-01-01T00:00:01Z"}]}))
            .await;
        r["restocks"][0]["restock_id"].as_i64().expect("restock id")
    }

    fn files(&self) -> usize {
        common::eml_files(&self.outbox).len()
    }

    /// Waits until the files count reaches `at_least`.
    async fn wait_for_files(&self, at_least: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = self.files();
            if n >= at_least {
                return n;
            }
            assert!(Instant::now() < deadline, "only {n} messages written");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_until_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let o = self
                .call(reqwest::Method::GET, "/v1/outbox", json!(null))
                .await;
            if o["pending"] == 0 && o["running"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "delivery did not finish: {o}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn recipients(&self) -> Vec<String> {
        let mut r: Vec<String> = common::eml_files(&self.outbox)
            .iter()
            .map(|p| common::recipient_of(&std::fs::read(p).expect("read eml")))
            .collect();
        r.sort();
        r
    }

    async fn planned_count(&self, event: i64) -> i64 {
        let sql = "SELECT planned_count FROM restock_events WHERE id = $1";
        match &self.db.db {
            restock::storage::Db::Sqlite(p) => {
                sqlx::query_scalar(sql).bind(event).fetch_one(p).await
            }
            restock::storage::Db::Postgres(p) => {
                sqlx::query_scalar(sql).bind(event).fetch_one(p).await
            }
        }
        .expect("planned count")
    }

    async fn scalar(&self, sql: &'static str, event: i64) -> i64 {
        match &self.db.db {
            restock::storage::Db::Sqlite(p) => {
                sqlx::query_scalar(sql).bind(event).fetch_one(p).await
            }
            restock::storage::Db::Postgres(p) => {
                sqlx::query_scalar(sql).bind(event).fetch_one(p).await
            }
        }
        .expect("scalar")
    }

    async fn counts(&self, event: i64) -> (i64, i64, i64, i64) {
        let sql = "SELECT COUNT(*), COUNT(DISTINCT subscription_id), \
                          CAST(COALESCE(SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                          CAST(COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) AS BIGINT) \
                   FROM notifications WHERE restock_event_id = $1";
        match &self.db.db {
            restock::storage::Db::Sqlite(p) => sqlx::query_as(sql).bind(event).fetch_one(p).await,
            restock::storage::Db::Postgres(p) => sqlx::query_as(sql).bind(event).fetch_one(p).await,
        }
        .expect("counts")
    }
}

fn expected_recipients(n: u64) -> Vec<String> {
    let mut v: Vec<String> = (1..=n)
        .map(|i| format!("shopper{i}@bench.example"))
        .collect();
    v.sort();
    v
}

both_dbs!(
    sigkill_mid_dispatch_loses_nothing_and_plans_once,
    |backend: Backend| async move {
        const N: u64 = 1500;
        let s = Setup::new(backend).await;
        let mut server = s.start().await;
        let event = s.restock_with_waiters(N).await;

        let seen = s.wait_for_files(N as usize / 10).await;
        server.0.kill().expect("SIGKILL");
        server.0.wait().expect("reap");
        let at_kill = s.files();
        assert!(
            at_kill < N as usize,
            "the kill must land mid-dispatch (saw {seen}, {at_kill} at kill)"
        );
        let (_, _, _, running) = s.counts(event).await;
        eprintln!("killed with {at_kill} of {N} messages written and {running} claims held");

        let _server = s.start().await;
        s.wait_until_drained().await;

        let (planned, distinct, done, running) = s.counts(event).await;
        assert_eq!(
            (planned, distinct),
            (N as i64, N as i64),
            "planned exactly once per subscription"
        );
        assert_eq!((done, running), (N as i64, 0));
        let mut got = s.recipients();
        let total = got.len();
        got.dedup();
        assert_eq!(got, expected_recipients(N), "every shopper got the message");
        // Only a send that finished writing but whose outcome was not yet committed
        // when the process died can go out twice: the worker caps sends in flight
        // plus outcomes awaiting their group commit at a multiple of its concurrency.
        let duplicates = total - N as usize;
        let bound = restock::dispatch::unrecorded_per_send(&s.db.db) * CONCURRENCY;
        eprintln!("duplicates after SIGKILL: {duplicates} (at most {bound})");
        assert!(duplicates <= bound, "{duplicates} duplicates");
        drop(_server);
        s.db.cleanup().await;
    }
);

both_dbs!(
    at_the_largest_concurrency_sends_slower_than_the_lease_still_go_once,
    |backend: Backend| async move {
        // Every send takes over two seconds (the relay waits before answering DATA)
        // against a one-second lease, with every claim in flight at once: only lease
        // renewal keeps the once-a-second reaper from handing them to a second attempt.
        const N: u64 = 300;
        let sink = SmtpSink::start(Behaviour::SlowData);
        let s = Setup::configured(backend, |_| {
            format!(
                "[email]\ntransport = \"smtp\"\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntimeout_secs = 30\n\
                 [dispatch]\nconcurrency = {}\nbatch_size = 100\nlease_secs = 1\npoll_interval_ms = 100\n",
                sink.port,
                restock::config::MAX_CONCURRENCY
            )
        })
        .await;
        let _server = s.start().await;
        let event = s.restock_with_waiters(N).await;
        s.wait_until_drained().await;

        let (planned, distinct, done, running) = s.counts(event).await;
        assert_eq!(
            (planned, distinct, done, running),
            (N as i64, N as i64, N as i64, 0)
        );
        let attempts: i64 = s
            .scalar("SELECT CAST(SUM(attempts) AS BIGINT) FROM notifications WHERE restock_event_id = $1", event)
            .await;
        assert_eq!(
            attempts, N as i64,
            "every notification went on its first attempt"
        );
        let mut got: Vec<String> = sink
            .messages()
            .into_iter()
            .flat_map(|m| m.rcpt_to)
            .collect();
        got.sort();
        assert_eq!(got, expected_recipients(N), "each shopper exactly once");
        let metrics = s
            .http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let renewals: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("restock_dispatch_lease_renewals_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("renewal counter");
        assert!(
            renewals >= N,
            "leases were renewed while sends ran: {renewals}"
        );
        drop(_server);
        s.db.cleanup().await;
    }
);

both_dbs!(
    sigkill_mid_planning_resumes_where_it_stopped,
    |backend: Backend| async move {
        const N: u64 = 100_000;
        let s = Setup::new(backend).await;
        // Quiet all day: every alert is deferred, so nothing is sent and the test
        // watches planning alone.
        let policy = restock_core::policy::StorePolicy {
            quiet_hours: Some(restock_core::policy::QuietHoursSetting {
                start: "00:00".into(),
                end: "23:59".into(),
            }),
            ..Default::default()
        };
        s.db.db
            .set_store_policy(s.store, &policy)
            .await
            .expect("policy");
        let mut server = s.start().await;
        let event = s.restock_only(N).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        // Kill as soon as the first page is committed (a cheap look at the restock's
        // running count, not a count of the outbox).
        while s.planned_count(event).await == 0 {
            assert!(Instant::now() < deadline, "planning did not start");
            tokio::task::yield_now().await;
        }
        server.0.kill().expect("SIGKILL");
        server.0.wait().expect("reap");
        let (at_kill, _, _, _) = s.counts(event).await;
        assert!(
            at_kill < N as i64,
            "the kill must land mid-planning ({at_kill} planned)"
        );
        eprintln!("killed with {at_kill} of {N} planned");

        let _server = s.start().await;
        s.wait_planned(event, N).await;
        let (planned, distinct, done, _) = s.counts(event).await;
        assert_eq!(
            (planned, distinct, done),
            (N as i64, N as i64, 0),
            "each shopper planned once"
        );
        drop(_server);
        s.db.cleanup().await;
    }
);

both_dbs!(
    sigterm_lets_in_flight_sends_finish,
    |backend: Backend| async move {
        const N: u64 = 800;
        let s = Setup::new(backend).await;
        let mut server = s.start().await;
        let event = s.restock_with_waiters(N).await;
        s.wait_for_files(N as usize / 10).await;

        let pid = server.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = server.0.try_wait().expect("wait") {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "did not stop within 30 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exit.success(), "graceful stop exits 0: {exit:?}");
        let at_stop = s.files();
        let (planned, _, done, running) = s.counts(event).await;
        assert_eq!(running, 0, "nothing left claimed after a graceful stop");
        assert_eq!(
            done as usize, at_stop,
            "every message written was recorded as sent"
        );
        assert!(at_stop < N as usize, "stopped mid-dispatch");
        assert_eq!(planned, N as i64);

        let _server = s.start().await;
        s.wait_until_drained().await;
        assert_eq!(
            s.recipients(),
            expected_recipients(N),
            "all delivered, none twice"
        );
        drop(_server);
        s.db.cleanup().await;
    }
);
