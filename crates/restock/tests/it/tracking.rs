//! Signed links: the unsubscribe page and its choices, and forged tokens.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use restock_core::token::{Purpose, Signer};
use serde_json::{Value, json};

/// Ann waits for S-42 and S-43 (which is sold out too); S-42 restocks and Ann's
/// message goes out. Returns the unsubscribe URL from it.
async fn notified(t: &TestApp) -> (StoreKeys, String) {
    let store = t.create_store("track").await;
    t.seed_catalog(&store).await;
    t.stock(
        &store,
        json!([{"sku": "S-42", "available": 0}, {"sku": "S-43", "available": 0}]),
    )
    .await;
    for sku in ["S-42", "S-43"] {
        assert_eq!(
            t.subscribe(&store, json!({"email": "ann@example.com", "sku": sku}))
                .await
                .0,
            201
        );
    }
    assert_eq!(
        t.subscribe(&store, json!({"email": "bob@example.com", "sku": "S-43"}))
            .await
            .0,
        201
    );
    t.advance(1_000);
    t.stock(&store, json!([{"sku": "S-42", "available": 5}]))
        .await;
    assert_eq!(t.run_pending().await, 1);
    let raw = t.sent_files().pop().expect("a message");
    let msg = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("MIME");
    let url = msg
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe")
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    (store, url)
}

async fn statuses(t: &TestApp, store: &StoreKeys) -> Vec<(String, String, String)> {
    let (_, body) = t.get("/v1/subscriptions", &store.api_key).await;
    let mut out: Vec<_> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s: &Value| {
            (
                s["email"].as_str().unwrap_or_default().to_string(),
                s["sku"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn row(email: &str, sku: &str, status: &str) -> (String, String, String) {
    (email.into(), sku.into(), status.into())
}

both_dbs!(
    unsubscribe_page_asks_and_never_acts_on_get,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let (store, url) = notified(&t).await;
        let before = statuses(&t, &store).await;
        let page = t.http.get(&url).send().await.expect("page");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("html");
        assert!(
            html.contains("Store track") && html.contains("Trail Shoe"),
            "{html}"
        );
        assert!(
            html.contains("value=\"all\""),
            "offers ending all alerts: {html}"
        );
        assert_eq!(
            statuses(&t, &store).await,
            before,
            "a GET (link scanners) changes nothing"
        );
        t.stop().await;
    }
);

both_dbs!(
    form_can_end_all_of_the_shoppers_alerts_at_the_store,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let (store, url) = notified(&t).await;
        let resp = t
            .http
            .post(&url)
            .form(&[("scope", "all")])
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.text()
                .await
                .expect("html")
                .contains("no more back-in-stock alerts")
        );
        assert_eq!(
            statuses(&t, &store).await,
            vec![
                row("ann@example.com", "S-42", "unsubscribed"),
                row("ann@example.com", "S-43", "unsubscribed"),
                row("bob@example.com", "S-43", "waiting"),
            ]
        );
        // S-43 restocks: only Bob is planned.
        t.advance(1_000);
        let body = t
            .stock(&store, json!([{"sku": "S-43", "available": 5}]))
            .await;
        assert_eq!(t.planned(&store, &body).await, 1, "{body}");
        t.stop().await;
    }
);

both_dbs!(
    one_click_ends_only_that_alert,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let (store, url) = notified(&t).await;
        let resp = t
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            statuses(&t, &store).await,
            vec![
                row("ann@example.com", "S-42", "unsubscribed"),
                row("ann@example.com", "S-43", "waiting"),
                row("bob@example.com", "S-43", "waiting"),
            ]
        );
        t.stop().await;
    }
);

both_dbs!(
    forged_and_cross_purpose_tokens_are_rejected,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let (store, url) = notified(&t).await;
        let token = url.rsplit('/').next().expect("token").to_string();
        let id: i64 = token
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("id");
        let before = statuses(&t, &store).await;
        let forged = Signer::new(b"not the instance key").sign(Purpose::Unsubscribe, id);
        let click_token = t.app.signer.sign(Purpose::Click, id);
        for bad in [
            forged.as_str(),
            click_token.as_str(),
            "1",
            "x.y",
            &format!("{}.{}", id + 1, token.split('.').nth(1).expect("sig")),
        ] {
            let resp = t
                .http
                .post(t.url(&format!("/t/u/{bad}")))
                .form(&[("scope", "all")])
                .send()
                .await
                .expect("post");
            assert_eq!(resp.status(), 404, "token {bad:?} must be refused");
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["code"], "invalid_token");
            if bad != click_token {
                let click = t
                    .http
                    .get(t.url(&format!("/t/c/{bad}")))
                    .send()
                    .await
                    .expect("get");
                assert_eq!(click.status(), 404, "click token {bad:?} must be refused");
            }
        }
        assert_eq!(statuses(&t, &store).await, before, "nothing changed");
        t.stop().await;
    }
);
