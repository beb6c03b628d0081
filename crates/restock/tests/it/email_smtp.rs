//! Email through a real SMTP server (Postfix's smtp-sink): the message a shopper
//! gets, its links, and what happens when the relay answers 4xx, 5xx or nothing.

use crate::common;

use common::smtp::{Behaviour, SmtpSink};
use common::{Backend, StoreKeys, TestApp};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};

fn smtp_config(port: u16) -> String {
    format!(
        "[email]\ntransport = \"smtp\"\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 2\n\
         [dispatch.retry]\nbase_delay_ms = 1000\nmax_delay_ms = 4000\nmax_attempts = 3\n"
    )
}

/// A store with the shoe catalog, S-42 sold out and `emails` waiting for it, then
/// restocked with temporary stock.
async fn restocked_with_waiters(t: &TestApp, emails: &[&str]) -> StoreKeys {
    let store = t.create_store("mail").await;
    let mut product = common::shoe_product();
    product["title"] = json!("Trail <Shoe> & Co");
    let (status, body) = t.put("/v1/products/shoe", &store.api_key, &product).await;
    assert_eq!(status, 200, "{body}");
    t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
        .await;
    for email in emails {
        let (status, body) = t
            .subscribe(&store, json!({"email": email, "sku": "S-42"}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    t.advance(1_000);
    let body = t
        .stock(
            &store,
            json!([{"sku": "S-42", "available": 7, "available_until": "2026-03-20T18:00:00Z"}]),
        )
        .await;
    assert_eq!(
        t.planned(&store, &body).await,
        emails.len() as i64,
        "{body}"
    );
    store
}

async fn notifications(t: &TestApp, store: &StoreKeys, state: &str) -> Vec<Value> {
    let (status, body) = t
        .get(&format!("/v1/notifications?state={state}"), &store.api_key)
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().expect("items").clone()
}

fn no_redirects() -> reqwest::Client {
    restock::tls::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

both_dbs!(
    message_is_valid_mime_with_both_parts_and_working_links,
    |backend: Backend| async move {
        let sink = SmtpSink::start(Behaviour::Accept);
        let t = TestApp::spawn_with(backend, &smtp_config(sink.port)).await;
        let store = restocked_with_waiters(&t, &["ann@example.com", "bob@example.com"]).await;
        assert_eq!(t.run_pending().await, 2);

        let received = sink.messages();
        assert_eq!(received.len(), 2);
        let mut envelope: Vec<_> = received.iter().flat_map(|m| m.rcpt_to.clone()).collect();
        envelope.sort();
        assert_eq!(envelope, vec!["ann@example.com", "bob@example.com"]);
        let ann = received
            .iter()
            .find(|m| m.rcpt_to == ["ann@example.com"])
            .expect("ann's message");
        assert_eq!(ann.mail_from, "alerts@shop.example");

        let msg = MessageParser::default()
            .parse(&ann.message)
            .expect("valid MIME");
        assert_eq!(
            msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("ann@example.com")
        );
        assert_eq!(
            msg.subject(),
            Some("Trail <Shoe> & Co (42) is back in stock")
        );
        assert!(
            msg.content_type()
                .is_some_and(|c| c.ctype() == "multipart" && c.subtype() == Some("alternative"))
        );
        assert!(
            msg.message_id()
                .is_some_and(|id| id.starts_with("restock.")),
            "{:?}",
            msg.message_id()
        );
        let text = msg.body_text(0).expect("text part").to_string();
        let html = msg.body_html(0).expect("html part").to_string();
        assert!(text.contains("Price: EUR 129.00"), "{text}");
        assert!(
            text.contains("Available until 20 March 2026, 18:00 UTC"),
            "{text}"
        );
        assert!(text.contains("size: 42"), "{text}");
        assert!(
            html.contains("Trail &lt;Shoe&gt; &amp; Co"),
            "title must be escaped in HTML: {html}"
        );
        assert!(html.contains("cdn.shop.example"), "product image: {html}");

        // RFC 8058 headers.
        let header = |name: &str| {
            msg.header_raw(name)
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("missing {name} header"))
        };
        let list_unsubscribe = header("List-Unsubscribe");
        assert_eq!(
            header("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click"
        );
        let unsubscribe_url = list_unsubscribe
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        assert!(unsubscribe_url.starts_with(&t.base), "{unsubscribe_url}");
        assert!(
            text.contains(&unsubscribe_url),
            "the text part carries the same unsubscribe link"
        );

        // The tracked link redirects to the exact variant and records the click.
        let click = text
            .lines()
            .find_map(|l| l.strip_prefix("Buy it now: "))
            .expect("link in text part")
            .trim()
            .to_string();
        let client = no_redirects();
        let resp = client.get(&click).send().await.expect("click");
        assert_eq!(resp.status(), 303);
        let location = resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        assert!(
            location.starts_with("https://shop.example/products/shoe?size=42&utm_source=restock"),
            "{location}"
        );
        let nid: i64 = click
            .rsplit('/')
            .next()
            .and_then(|t| t.split('.').next())
            .and_then(|n| n.parse().ok())
            .expect("id");
        assert_eq!(
            t.app
                .db
                .tracking_count(restock_core::ids::NotificationId(nid), "click")
                .await
                .expect("count"),
            1
        );

        // A tampered click token is refused and redirects nowhere.
        let tampered = format!("{}A", &click[..click.len() - 1]);
        let tampered = if tampered == click {
            format!("{}B", &click[..click.len() - 1])
        } else {
            tampered
        };
        assert_eq!(
            client
                .get(&tampered)
                .send()
                .await
                .expect("tampered")
                .status(),
            404
        );

        // One-click unsubscribe (RFC 8058) ends Ann's subscription without a login.
        let resp = client
            .post(&unsubscribe_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .expect("one-click");
        assert_eq!(resp.status(), 200);
        let (_, subs) = t.get("/v1/subscriptions", &store.api_key).await;
        let status_of = |email: &str| {
            subs["items"]
                .as_array()
                .expect("items")
                .iter()
                .find(|s| s["email"] == email)
                .map(|s| s["status"].clone())
        };
        assert_eq!(status_of("ann@example.com"), Some(json!("unsubscribed")));
        assert_eq!(status_of("bob@example.com"), Some(json!("notified")));
        drop(sink);
        t.stop().await;
    }
);

both_dbs!(
    temporary_failures_retry_with_backoff_until_dead_then_replay,
    |backend: Backend| async move {
        let sink = SmtpSink::start(Behaviour::TempFailRcpt);
        let t = TestApp::spawn_with(backend, &smtp_config(sink.port)).await;
        let store = restocked_with_waiters(&t, &["cat@example.com"]).await;

        // Attempt 1: 450 → back to pending, due after a backoff of 0.5-1 s.
        assert_eq!(t.run_pending().await, 1);
        let pending = notifications(&t, &store, "pending").await;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0]["attempts"], 1);
        assert!(
            pending[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("450")),
            "{}",
            pending[0]
        );
        let due = pending[0]["due_at"].as_i64().expect("due_at") - t.now();
        assert!((500..=1000).contains(&due), "first backoff {due} ms");
        assert_eq!(t.run_pending().await, 0, "not due yet");

        // Attempt 2 after the backoff; attempt 3 is the last and makes it dead.
        t.advance(1_000);
        assert_eq!(t.run_pending().await, 1);
        let pending = notifications(&t, &store, "pending").await;
        let due = pending[0]["due_at"].as_i64().expect("due_at") - t.now();
        assert!(
            (1000..=2000).contains(&due),
            "second backoff {due} ms doubles"
        );
        t.advance(2_000);
        assert_eq!(t.run_pending().await, 1);
        let dead = notifications(&t, &store, "dead").await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["attempts"], 3);
        assert!(
            dead[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("gave up after 3 attempts")),
            "{}",
            dead[0]
        );
        t.advance(60_000);
        assert_eq!(t.run_pending().await, 0, "dead is never retried by itself");
        assert!(sink.messages().is_empty());

        // The CLI lists it too.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_restock"))
            .args(["notifications", "dead", "--store", &store.slug])
            .env("RESTOCK_DATABASE__URL", &t.db.url)
            .output()
            .expect("run restock");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed.contains("cat@example.com") && listed.contains("dead"),
            "{listed}"
        );

        // The relay recovers; replaying the dead notification delivers it.
        let port = sink.stop();
        let sink = SmtpSink::start_on(port, Behaviour::Accept);
        let id = dead[0]["id"].as_i64().expect("id");
        let (status, body) = t
            .post(
                &format!("/v1/notifications/{id}/replay"),
                &store.api_key,
                &json!({}),
            )
            .await;
        assert_eq!(
            (status, body["state"].clone()),
            (200, json!("pending")),
            "{body}"
        );
        let (status, _) = t
            .post(
                &format!("/v1/notifications/{id}/replay"),
                &store.api_key,
                &json!({}),
            )
            .await;
        assert_eq!(status, 409, "a pending notification is not replayable");
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(notifications(&t, &store, "done").await.len(), 1);
        assert_eq!(sink.messages().len(), 1);
        assert_eq!(sink.messages()[0].rcpt_to, vec!["cat@example.com"]);
        t.stop().await;
    }
);

both_dbs!(
    temporary_failure_at_data_is_retried_too,
    |backend: Backend| async move {
        let sink = SmtpSink::start(Behaviour::TempFailData);
        let t = TestApp::spawn_with(backend, &smtp_config(sink.port)).await;
        let store = restocked_with_waiters(&t, &["dan@example.com"]).await;
        assert_eq!(t.run_pending().await, 1);
        let pending = notifications(&t, &store, "pending").await;
        assert_eq!(pending.len(), 1, "a 4xx at DATA is temporary");
        assert!(notifications(&t, &store, "failed").await.is_empty());
        t.stop().await;
    }
);

both_dbs!(
    a_5xx_that_is_not_about_the_address_is_retried_not_suppressed,
    |backend: Backend| async move {
        // smtp-sink's hard error is "500 5.3.0 command failed": the relay refuses the
        // command, which says nothing about the recipient. (A 550 for an unknown
        // recipient fails and suppresses: see email_tls.rs.)
        let sink = SmtpSink::start(Behaviour::PermFailRcpt);
        let t = TestApp::spawn_with(backend, &smtp_config(sink.port)).await;
        let store = restocked_with_waiters(&t, &["eve@example.com", "fay@example.com"]).await;
        assert_eq!(t.run_pending().await, 2);
        let pending = notifications(&t, &store, "pending").await;
        assert_eq!(pending.len(), 2, "retried");
        assert!(
            pending[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("relay refused (500)")),
            "{}",
            pending[0]
        );
        assert!(notifications(&t, &store, "failed").await.is_empty());
        let (status, _) = t
            .subscribe(&store, json!({"email": "eve@example.com", "sku": "S-43"}))
            .await;
        assert_eq!(status, 201, "the address was not suppressed");
        drop(sink);
        t.stop().await;
    }
);

both_dbs!(
    a_relay_that_never_answers_times_out_and_is_retried,
    |backend: Backend| async move {
        // Accepts TCP connections and never says a word.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let t = TestApp::spawn_with(backend, &smtp_config(port)).await;
        let store = restocked_with_waiters(&t, &["gus@example.com"]).await;
        assert_eq!(t.run_pending().await, 1);
        let pending = notifications(&t, &store, "pending").await;
        assert_eq!(pending.len(), 1, "a timeout is temporary");
        assert_eq!(pending[0]["attempts"], 1);
        drop(silent);
        t.stop().await;
    }
);

both_dbs!(
    a_pooled_connection_the_relay_closed_is_replaced_not_failed,
    |backend: Backend| async move {
        let sink = SmtpSink::start(Behaviour::Accept);
        let t = TestApp::spawn_with(backend, &smtp_config(sink.port)).await;
        let store = restocked_with_waiters(&t, &["ann@example.com"]).await;
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(sink.messages().len(), 1);

        // The relay restarts: the session kept in the pool is closed under it.
        let port = sink.stop();
        let sink = SmtpSink::start_on(port, Behaviour::Accept);
        t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
            .await;
        let (status, body) = t
            .subscribe(&store, json!({"email": "bob@example.com", "sku": "S-42"}))
            .await;
        assert_eq!(status, 201, "{body}");
        t.advance(1_000);
        let body = t
            .stock(&store, json!([{"sku": "S-42", "available": 7}]))
            .await;
        assert_eq!(t.planned(&store, &body).await, 1, "{body}");
        assert_eq!(t.run_pending().await, 1);

        // Nothing was accepted on the dead session, so the message went over a new
        // one at once: delivered on its first attempt, not scheduled for a retry.
        let received = sink.messages();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].rcpt_to, ["bob@example.com"]);
        let done = notifications(&t, &store, "done").await;
        let bob = done
            .iter()
            .find(|n| n["recipient"] == "bob@example.com")
            .expect("bob's message done");
        assert_eq!(bob["attempts"], 1, "{bob}");
        t.stop().await;
    }
);
