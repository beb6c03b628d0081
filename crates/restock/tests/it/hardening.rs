//! The hostile trial's cases, on both databases: each answers 4xx with a code (or
//! works), and both backends accept and refuse exactly the same inputs.

use crate::common;

use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

/// Every error answer carries a JSON `code` from the documented list and a `message`.
fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, what: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["code"], want_code, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no message: {body}"
    );
    assert_eq!(
        body["message"], body["detail"],
        "{what}: detail mirrors message"
    );
    let code = body["code"].as_str().expect("code");
    assert!(
        restock::error_code::ErrorCode::ALL
            .iter()
            .any(|c| c.as_str() == code),
        "{what}: undocumented code {code}"
    );
}

/// Method, path, API key, content type, body, expected status and code.
type Case<'a> = (
    Method,
    String,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
);

async fn raw(
    t: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = t.http.request(method, t.url(path)).body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

both_dbs!(
    every_error_answer_is_json_with_a_code,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        let key = Some(store.api_key.as_str());
        let json_ct = Some("application/json");
        let big = format!(
            "{{\"items\": [{}]}}",
            vec![r#"{"sku":"S-42","available":1}"#; 150_000].join(",")
        );
        let cases: Vec<Case> = vec![
            (
                Method::GET,
                "/nowhere".into(),
                None,
                None,
                vec![],
                404,
                "not_found",
            ),
            (
                Method::DELETE,
                "/v1/store".into(),
                key,
                None,
                vec![],
                405,
                "method_not_allowed",
            ),
            (
                Method::GET,
                format!("/v1/products?after={}", "1".repeat(9000)),
                key,
                None,
                vec![],
                414,
                "uri_too_long",
            ),
            (
                Method::GET,
                "/v1/products?limit=lots".into(),
                key,
                None,
                vec![],
                400,
                "invalid_query",
            ),
            (
                Method::GET,
                "/v1/products?limit=100000".into(),
                key,
                None,
                vec![],
                400,
                "invalid_query",
            ),
            (
                Method::GET,
                "/v1/notifications?after=-x".into(),
                key,
                None,
                vec![],
                400,
                "invalid_query",
            ),
            (
                Method::POST,
                "/v1/notifications/abc/replay".into(),
                key,
                None,
                vec![],
                400,
                "invalid_path",
            ),
            (
                Method::POST,
                "/v1/rejections/99999999999999999999/replay".into(),
                key,
                None,
                vec![],
                400,
                "invalid_path",
            ),
            (
                Method::GET,
                "/v1/products/a%00b".into(),
                key,
                None,
                vec![],
                400,
                "invalid_path",
            ),
            (
                Method::POST,
                "/v1/stock".into(),
                key,
                json_ct,
                big.into_bytes(),
                413,
                "payload_too_large",
            ),
            (
                Method::POST,
                format!("/webhooks/shopify/{}", store.slug),
                None,
                json_ct,
                vec![b' '; 2 * 1024 * 1024 + 1],
                413,
                "payload_too_large",
            ),
            (
                Method::POST,
                format!("/storefront/v1/{}/subscriptions", store.publishable_key),
                None,
                json_ct,
                vec![b' '; 9 * 1024],
                413,
                "payload_too_large",
            ),
            (
                Method::POST,
                "/v1/stock".into(),
                key,
                Some("text/plain"),
                b"{}".to_vec(),
                415,
                "unsupported_media_type",
            ),
            (
                Method::PUT,
                "/v1/products/shoe".into(),
                key,
                json_ct,
                b"{not json".to_vec(),
                400,
                "invalid_json",
            ),
            (
                Method::GET,
                "/v1/store".into(),
                Some("rk_nope"),
                None,
                vec![],
                401,
                "unauthorized",
            ),
            (
                Method::GET,
                "/t/c/1.forged".into(),
                None,
                None,
                vec![],
                404,
                "invalid_token",
            ),
        ];
        for (method, path, key, ct, body, status, code) in cases {
            let what = format!("{method} {}", &path[..path.len().min(60)]);
            let (got, resp) = raw(&t, method, &path, key, ct, body).await;
            assert_error(got, &resp, status, code, &what);
        }
        t.stop().await;
    }
);

both_dbs!(answers_carry_a_request_id, |backend: Backend| async move {
    let t = TestApp::spawn(backend).await;
    let resp = t.http.get(t.url("/healthz")).send().await.expect("request");
    let made = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(made.len() >= 32, "{made}");
    let resp = t
        .http
        .get(t.url("/nowhere"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    t.stop().await;
});

both_dbs!(large_lists_are_compressed, |backend: Backend| async move {
    let t = TestApp::spawn(backend).await;
    let store = t.create_store("shop").await;
    for i in 0..60 {
        let mut p = common::shoe_product();
        p["variants"] = json!([]);
        let (status, _) = t
            .put(&format!("/v1/products/p{i}"), &store.api_key, &p)
            .await;
        assert_eq!(status, 200);
    }
    let resp = t
        .http
        .get(t.url("/v1/products?limit=100"))
        .bearer_auth(&store.api_key)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    // Small answers are not worth it.
    let resp = t
        .http
        .get(t.url("/healthz"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert!(resp.headers().get("content-encoding").is_none());
    t.stop().await;
});

both_dbs!(
    nul_characters_are_refused_alike,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        let mut p = common::shoe_product();
        p["title"] = json!("Trail\u{0}Shoe");
        let (s, b) = t.put("/v1/products/shoe", &store.api_key, &p).await;
        assert_error(s, &b, 422, "invalid_value", "NUL in a title");
        let mut p = common::shoe_product();
        p["category"] = json!("sh\u{0}oes");
        let (s, b) = t.put("/v1/products/shoe", &store.api_key, &p).await;
        assert_error(s, &b, 422, "invalid_value", "NUL in a category");
        let (s, b) = t
            .put(
                "/v1/categories/shoes",
                &store.api_key,
                &json!({"name": "Sh\u{0}oes"}),
            )
            .await;
        assert_error(s, &b, 422, "invalid_value", "NUL in a category name");
        let (s, b) = t
            .subscribe(
                &store,
                json!({"email": "ann@example.com", "sku": "S\u{0}42"}),
            )
            .await;
        assert_error(s, &b, 422, "invalid_value", "NUL in a sign-up");

        // In a stock batch only the item with the NUL is rejected, and it is kept.
        let body = t
            .stock(
                &store,
                json!([
                    {"sku": "S-42", "available": 3, "location": "wh\u{0}1"},
                    {"sku": "S-43", "available": 4},
                ]),
            )
            .await;
        assert_eq!(body["applied"], 1, "{body}");
        assert_eq!(body["rejected"][0]["index"], 0, "{body}");
        assert_eq!(body["rejected"][0]["code"], "invalid_location", "{body}");
        let (_, kept) = t.get("/v1/rejections", &store.api_key).await;
        assert_eq!(kept["items"].as_array().map(Vec::len), Some(1), "{kept}");

        // A signed Shopify body with a raw NUL byte is refused, and kept for replay.
        let body = b"{\"inventory_item_id\":4242,\"location_id\":1,\"available\":5,\"updated_at\":\"2026-03-01T07:00:00Z\x00\"}";
        let resp = t
            .http
            .post(t.url(&format!("/webhooks/shopify/{}", store.slug)))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "inventory_levels/update")
            .header(
                "x-shopify-hmac-sha256",
                restock::intake::shopify::sign(&format!("shpss_{}", store.slug), body),
            )
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let b: Value = resp.json().await.expect("json");
        assert_error(
            status,
            &b,
            422,
            "invalid_payload",
            "NUL in a signed webhook",
        );
        let (_, kept) = t.get("/v1/rejections", &store.api_key).await;
        assert_eq!(kept["items"].as_array().map(Vec::len), Some(2), "{kept}");
        assert_eq!(kept["items"][0]["source"], "shopify");
        t.stop().await;
    }
);

both_dbs!(
    a_huge_quantity_is_rejected_per_item,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        let body = t
            .stock(
                &store,
                json!([
                    {"sku": "S-42", "available": i64::MAX, "location": "a"},
                    {"sku": "S-42", "available": 5, "location": "b"},
                    {"sku": "S-43", "available": 2, "incoming": i64::MAX},
                ]),
            )
            .await;
        assert_eq!(body["applied"], 1, "{body}");
        let codes: Vec<_> = body["rejected"]
            .as_array()
            .expect("rejected")
            .iter()
            .map(|r| (r["index"].clone(), r["code"].clone()))
            .collect();
        assert_eq!(
            codes,
            vec![
                (json!(0), json!("invalid_quantity")),
                (json!(2), json!("invalid_quantity"))
            ]
        );
        // The variant keeps working: another location, another batch.
        let body = t
            .stock(
                &store,
                json!([{"sku": "S-42", "available": 1_000_000_000, "location": "c"}]),
            )
            .await;
        assert_eq!(body["applied"], 1, "{body}");
        let (_, v) = t.get("/v1/variants/S-42", &store.api_key).await;
        assert_eq!(v["available"], 1_000_000_005);
        t.stop().await;
    }
);

both_dbs!(
    sign_ups_the_mailer_cannot_address_are_refused,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
            .await;
        for email in [
            "\"john..doe\"@example.com",
            "\"ann\"@example.com",
            "john..doe@example.com",
        ] {
            let (s, b) = t
                .subscribe(&store, json!({"email": email, "sku": "S-42"}))
                .await;
            assert_error(s, &b, 422, "invalid_email", email);
        }
        t.stop().await;
    }
);

both_dbs!(
    rejections_page_back_in_time,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        let items: Vec<Value> = (0..250)
            .map(|i| json!({"sku": format!("NOPE-{i}"), "available": 1}))
            .collect();
        t.stock(&store, Value::Array(items)).await;
        let mut seen = Vec::new();
        let mut path = "/v1/rejections?sort=newest&limit=100".to_string();
        loop {
            let (status, page) = t.get(&path, &store.api_key).await;
            assert_eq!(status, 200, "{page}");
            let ids: Vec<i64> = page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|r| r["id"].as_i64().expect("id"))
                .collect();
            assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
            seen.extend(ids);
            match page["next"].as_i64() {
                Some(next) => path = format!("/v1/rejections?sort=newest&limit=100&before={next}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 250);
        seen.dedup();
        assert_eq!(seen.len(), 250, "no rejection twice");
        // Ranked by impact (the default), pages follow `next` as an offset.
        let mut ranked = Vec::new();
        let mut path = "/v1/rejections?limit=100".to_string();
        loop {
            let (status, page) = t.get(&path, &store.api_key).await;
            assert_eq!(status, 200, "{page}");
            ranked.extend(
                page["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|r| r["id"].as_i64().expect("id")),
            );
            match page["next"].as_i64() {
                Some(next) => path = format!("/v1/rejections?limit=100&offset={next}"),
                None => break,
            }
        }
        ranked.sort_unstable();
        seen.sort_unstable();
        assert_eq!(ranked, seen, "every rejection once, in either order");
        t.stop().await;
    }
);

both_dbs!(
    urls_with_userinfo_are_refused,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        let mut p = common::shoe_product();
        p["variants"][0]["url"] = json!("https://shop.example@evil.example/");
        let (s, b) = t.put("/v1/products/shoe", &store.api_key, &p).await;
        assert_error(s, &b, 422, "invalid_value", "userinfo in a variant URL");
        let mut p = common::shoe_product();
        p["url"] = json!("https://user:pw@shop.example/p");
        let (s, b) = t.put("/v1/products/shoe", &store.api_key, &p).await;
        assert_error(s, &b, 422, "invalid_value", "userinfo in a product URL");
        t.stop().await;
    }
);

both_dbs!(
    wrong_keys_are_throttled_per_client,
    |backend: Backend| async move {
        let t = TestApp::spawn_with(backend, "[http]\nauth_failures_per_minute = 5\n").await;
        let store = t.create_store("shop").await;
        for _ in 0..5 {
            let (s, b) = t.get("/v1/store", "rk_guess").await;
            assert_error(s, &b, 401, "unauthorized", "a wrong key");
        }
        let resp = t
            .http
            .get(t.url("/v1/store"))
            .bearer_auth(&store.api_key)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 429, "throttled, even with the right key");
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "{retry}");
        let b: Value = resp.json().await.expect("json");
        assert_error(429, &b, 429, "too_many_attempts", "throttled");
        // Admin tokens count too.
        let resp = t
            .http
            .post(t.url("/admin/stores"))
            .bearer_auth("operator-secret")
            .json(&json!({"name": "x", "slug": "x"}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 429);
        // A minute later the client may try again.
        t.advance(60_000);
        assert_eq!(t.get("/v1/store", &store.api_key).await.0, 200);
        t.stop().await;
    }
);

fn shopify_body(item: u64, available: i64, at: &str) -> String {
    format!(
        r#"{{"inventory_item_id":{item},"location_id":24826418,"available":{available},"updated_at":"{at}"}}"#
    )
}

async fn deliver_shopify(
    t: &TestApp,
    slug: &str,
    topic: &str,
    webhook_id: &str,
    body: &str,
) -> (u16, Value) {
    let resp = t
        .http
        .post(t.url(&format!("/webhooks/shopify/{slug}")))
        .header("content-type", "application/json")
        .header("x-shopify-topic", topic)
        .header("x-shopify-webhook-id", webhook_id)
        .header(
            "x-shopify-hmac-sha256",
            restock::intake::shopify::sign(&format!("shpss_{slug}"), body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

both_dbs!(
    shopify_redeliveries_and_foreign_topics,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        let topic = "inventory_levels/update";
        let first = shopify_body(4242, 3, "2026-03-01T07:00:00Z");
        let (s, r) = deliver_shopify(&t, &store.slug, topic, "wh-1", &first).await;
        assert_eq!((s, r["result"].clone()), (200, json!("restocked")), "{r}");
        // Shopify redelivers the same id: answered, not applied again, even when a
        // newer level arrived in between.
        let newer = shopify_body(4242, 7, "2026-03-01T08:00:00Z");
        let (s, _) = deliver_shopify(&t, &store.slug, topic, "wh-2", &newer).await;
        assert_eq!(s, 200);
        let (s, r) = deliver_shopify(&t, &store.slug, topic, "wh-1", &first).await;
        assert_eq!((s, r["result"].clone()), (200, json!("duplicate")), "{r}");
        let (_, v) = t.get("/v1/variants/S-42", &store.api_key).await;
        assert_eq!(v["available"], 7);

        // Another topic with an inventory-shaped body is kept, never applied, and
        // refuses replay; its redelivery is a duplicate.
        let sneaky = shopify_body(4242, 99, "2026-03-01T09:00:00Z");
        let (s, r) = deliver_shopify(&t, &store.slug, "customers/create", "wh-3", &sneaky).await;
        assert_error(s, &r, 422, "unsupported_topic", "another topic");
        let (s, r) = deliver_shopify(&t, &store.slug, "customers/create", "wh-3", &sneaky).await;
        assert_eq!((s, r["result"].clone()), (200, json!("duplicate")), "{r}");
        let (_, kept) = t.get("/v1/rejections", &store.api_key).await;
        assert_eq!(kept["items"].as_array().map(Vec::len), Some(1), "{kept}");
        let id = kept["items"][0]["id"].as_i64().expect("id");
        let (s, r) = t
            .post(
                &format!("/v1/rejections/{id}/replay"),
                &store.api_key,
                &json!({}),
            )
            .await;
        assert_error(s, &r, 409, "not_replayable", "replaying another topic");
        let (_, v) = t.get("/v1/variants/S-42", &store.api_key).await;
        assert_eq!(v["available"], 7, "never applied");
        t.stop().await;
    }
);

/// One store, a restocked variant, one message sent: returns its click URL.
async fn sent_message(
    t: &TestApp,
    slug: &str,
) -> (common::StoreKeys, mail_parser::MessageParser, Vec<u8>) {
    let store = t.create_store(slug).await;
    t.seed_catalog(&store).await;
    t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
        .await;
    let (s, _) = t
        .subscribe(&store, json!({"email": "ann@example.com", "sku": "S-42"}))
        .await;
    assert_eq!(s, 201);
    t.advance(1_000);
    t.stock(&store, json!([{"sku": "S-42", "available": 5}]))
        .await;
    assert_eq!(t.run_pending().await, 1);
    let raw = t.sent_files().pop().expect("a message");
    (store, mail_parser::MessageParser::default(), raw)
}

both_dbs!(
    head_requests_on_click_links_are_not_counted,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let (_, parser, raw) = sent_message(&t, "shop").await;
        let msg = parser.parse(&raw).expect("MIME");
        let html = msg.body_html(0).expect("html").to_string();
        let start = html.find("href=\"").expect("href") + 6;
        let link = &html[start..start + html[start..].find('"').expect("end")];
        assert!(
            link.starts_with("http://") && link.contains("/t/c/"),
            "{link}"
        );
        let no_redirects = restock::tls::http_client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        for _ in 0..3 {
            let r = no_redirects.head(link).send().await.expect("head");
            assert_eq!(r.status(), 303);
        }
        let token = link.rsplit('/').next().expect("token");
        let id: i64 = token
            .split('.')
            .next()
            .expect("id")
            .parse()
            .expect("number");
        let n = restock_core::ids::NotificationId(id);
        assert_eq!(t.app.db.tracking_count(n, "click").await.expect("count"), 0);
        let r = no_redirects.get(link).send().await.expect("get");
        assert_eq!(r.status(), 303);
        assert_eq!(t.app.db.tracking_count(n, "click").await.expect("count"), 1);
        t.stop().await;
    }
);

both_dbs!(
    message_ids_differ_across_stores_and_installations,
    |backend: Backend| async move {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let t = TestApp::spawn(backend).await;
            for slug in ["one", "two"] {
                let (_, parser, raw) = sent_message(&t, slug).await;
                let msg = parser.parse(&raw).expect("MIME");
                ids.push(msg.message_id().expect("Message-ID").to_string());
            }
            t.stop().await;
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "{ids:?}");
    }
);

both_dbs!(
    finished_history_is_purged_and_metrics_stay_live,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let (store, _, _) = sent_message(&t, "shop").await;
        let (s, b) = t
            .call(
                Method::PATCH,
                "/v1/store",
                &store.api_key,
                Some(&json!({"retention_days": 30})),
            )
            .await;
        assert_eq!((s, b["retention_days"].clone()), (200, json!(30)), "{b}");
        let (s, b) = t
            .call(
                Method::PATCH,
                "/v1/store",
                &store.api_key,
                Some(&json!({"retention_days": 0})),
            )
            .await;
        assert_error(s, &b, 422, "invalid_value", "retention of 0 days");
        let (_, page) = t.get("/v1/notifications", &store.api_key).await;
        let n = restock_core::ids::NotificationId(page["items"][0]["id"].as_i64().expect("id"));
        t.app
            .db
            .record_tracking_event(store.id, n, "click", t.now())
            .await
            .expect("click");
        let purge = |at: i64| {
            let db = t.app.db.clone();
            async move { db.purge_expired(at, 2).await.expect("purge") }
        };
        // Not yet 30 days old: kept.
        assert_eq!(purge(t.now() + 29 * 86_400_000).await.notifications, 0);
        let p = purge(t.now() + 31 * 86_400_000).await;
        assert_eq!((p.notifications, p.tracking_events), (1, 1), "{p:?}");
        let (_, page) = t.get("/v1/notifications", &store.api_key).await;
        assert_eq!(page["items"], json!([]));
        // The metrics still render; done rows are not a gauge any more.
        let metrics = t.http.get(t.url("/metrics")).send().await.expect("metrics");
        let text = metrics.text().await.expect("text");
        assert!(
            text.contains("restock_outbox_depth{state=\"pending\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("restock_outbox_depth{state=\"done\"}"),
            "{text}"
        );
        t.stop().await;
    }
);

both_dbs!(secrets_are_sealed_at_rest, |backend: Backend| async move {
    let t = TestApp::spawn(backend).await;
    let store = t.create_store("shop").await;
    let secret = format!("shpss_{}", store.slug);
    let stored: Vec<(i64, String)> = t
        .app
        .db
        .webhook_secrets(restock::storage::stores::WebhookSecret::Shopify)
        .await
        .expect("secrets");
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].1.contains(&secret), "{}", stored[0].1);
    assert!(stored[0].1.starts_with("enc:v1:"), "{}", stored[0].1);
    let link_key = t
        .app
        .db
        .instance_secret("link_signing_key", "unused")
        .await
        .expect("key");
    assert!(link_key.starts_with("enc:v1:"), "{link_key}");
    // The sealed secret still verifies webhooks.
    t.seed_catalog(&store).await;
    let body = shopify_body(4242, 3, "2026-03-01T07:00:00Z");
    let (s, r) = deliver_shopify(&t, &store.slug, "inventory_levels/update", "w", &body).await;
    assert_eq!(s, 200, "{r}");
    // Rotation: a new key, the old one as previous; rotate re-seals everything.
    let new_key = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let cfg = restock::config::SecretsConfig {
        key: new_key.to_string().into(),
        previous_keys: vec![common::TEST_SECRETS_KEY.to_string().into()],
    };
    let boxed = restock::secrets::SecretBox::from_config(&cfg).expect("keys");
    assert_eq!(
        restock::secrets::rotate(&t.app.db, &boxed)
            .await
            .expect("rotate"),
        2
    );
    let only_new = restock::secrets::SecretBox::from_config(&restock::config::SecretsConfig {
        key: new_key.to_string().into(),
        previous_keys: vec![],
    })
    .expect("key");
    let stored = t
        .app
        .db
        .webhook_secrets(restock::storage::stores::WebhookSecret::Shopify)
        .await
        .expect("secrets");
    assert_eq!(
        only_new
            .open("shopify_secret", &stored[0].1)
            .expect("opens"),
        secret
    );
    t.stop().await;
});
