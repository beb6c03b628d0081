//! What the real binary writes to its logs at INFO: no shopper address in clear and
//! no signed-link token, even on a failed send or a 500 on a tracking link.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls_smtp::{Tls, TlsSmtp};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_mask_addresses_and_tokens() {
    let relay = TlsSmtp::start(Tls::None, None, &["ann.smith@example.com"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let db_path = dir.path().join("r.db");
    let log_path = dir.path().join("restock.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_restock"))
        .arg("serve")
        .env(
            "RESTOCK_DATABASE__URL",
            format!("sqlite://{}", db_path.display()),
        )
        .env("RESTOCK_LISTEN", format!("127.0.0.1:{port}"))
        .env("RESTOCK_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("RESTOCK_ADMIN_TOKEN", "operator-secret")
        .env("RESTOCK_EMAIL__TRANSPORT", "smtp")
        .env("RESTOCK_EMAIL__SMTP__PORT", relay.port.to_string())
        .env("RESTOCK_EMAIL__FROM", "Shop <alerts@shop.example>")
        .env("RESTOCK_DISPATCH__POLL_INTERVAL_MS", "100")
        .env("RESTOCK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("start restock");
    let base = format!("http://127.0.0.1:{port}");
    let http = restock::tls::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store: Value = http
        .post(format!("{base}/admin/stores"))
        .bearer_auth("operator-secret")
        .json(&json!({"name": "Shop", "slug": "shop"}))
        .send()
        .await
        .expect("store")
        .json()
        .await
        .expect("json");
    let key = store["api_key"].as_str().expect("key");
    let pk = store["publishable_key"].as_str().expect("pk");
    let put = |path: &str, body: Value| {
        http.put(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    assert_eq!(
        put("/v1/products/shoe", common::shoe_product())
            .await
            .expect("product")
            .status(),
        200
    );
    for email in ["ann.smith@example.com", "bob.jones@example.com"] {
        let r = http
            .post(format!("{base}/storefront/v1/{pk}/subscriptions"))
            .json(&json!({"email": email, "sku": "S-42"}))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(r.status(), 201);
    }
    let r = http
        .post(format!("{base}/v1/stock"))
        .bearer_auth(key)
        .json(&json!({"items": [{"sku": "S-42", "available": 10}]}))
        .send()
        .await
        .expect("stock");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outbox: Value = http
            .get(format!("{base}/v1/outbox"))
            .bearer_auth(key)
            .send()
            .await
            .expect("outbox")
            .json()
            .await
            .expect("json");
        if outbox["done"] == 1 && outbox["failed"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{outbox}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bob's click link, followed once; then tracking breaks and the click is a 500.
    let raw = relay.messages().pop().expect("Bob's message").message;
    let text = String::from_utf8_lossy(&raw).replace("=\r\n", "");
    let start = text.find("/t/c/").expect("click link");
    let token: String = text[start + 5..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-' || *c == '_')
        .collect();
    let click = format!("{base}/t/c/{token}");
    assert_eq!(http.get(&click).send().await.expect("click").status(), 303);
    let db = restock::storage::Db::connect_url(&format!("sqlite://{}", db_path.display()), 1)
        .await
        .expect("db");
    let restock::storage::Db::Sqlite(pool) = &db else {
        unreachable!("sqlite")
    };
    sqlx::query("DROP TABLE tracking_events")
        .execute(pool)
        .await
        .expect("drop");
    let failed = http.get(&click).send().await.expect("click");
    assert_eq!(failed.status(), 500);
    let request_id = failed.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();

    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log.contains("a***@example.com"),
        "the failed send was logged:\n{log}"
    );
    assert!(
        log.contains("/t/c/{token}"),
        "the 500 names its route:\n{log}"
    );
    // The 500's log lines carry the request id the client was answered with.
    assert!(
        log.contains(&request_id),
        "request id {request_id} not in:\n{log}"
    );
    for secret in [
        "ann.smith@example.com",
        "bob.jones@example.com",
        token.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "{secret:?} appears in the log:\n{log}"
        );
    }
}
