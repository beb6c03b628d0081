//! WooCommerce's webhooks: signatures as WooCommerce makes them (checked against an
//! independent implementation), product stock, orders, redeliveries, the ping, and
//! payloads kept for replay. Payloads follow the REST API v3 product and order JSON.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

/// A simple product as WooCommerce sends it on `product.updated`.
fn product(sku: &str, quantity: i64, modified_gmt: &str) -> String {
    json!({
        "id": 794, "name": "Trail Shoe 42", "slug": "trail-shoe-42",
        "permalink": "https://shop.example/product/trail-shoe-42/",
        "date_created": "2026-02-01T10:00:00", "date_created_gmt": "2026-02-01T09:00:00",
        "date_modified": "2026-03-01T13:00:00", "date_modified_gmt": modified_gmt,
        "type": "simple", "status": "publish", "featured": false, "catalog_visibility": "visible",
        "sku": sku, "price": "129.00", "regular_price": "129.00", "sale_price": "",
        "purchasable": true, "manage_stock": true, "stock_quantity": quantity,
        "stock_status": if quantity > 0 { "instock" } else { "outofstock" },
        "backorders": "no", "backorders_allowed": false, "backordered": false,
        "categories": [{"id": 9, "name": "Shoes", "slug": "shoes"}],
        "attributes": [], "variations": [], "meta_data": []
    })
    .to_string()
}

fn woo_secret(store: &StoreKeys) -> String {
    format!("wc-secret-{}", store.slug)
}

async fn connect(t: &TestApp, store: &StoreKeys) {
    let (status, r) = t
        .call(
            reqwest::Method::PATCH,
            "/v1/store",
            &store.api_key,
            Some(&json!({"woocommerce_secret": woo_secret(store)})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["woocommerce_connected"], true, "{r}");
    assert!(
        !r.to_string().contains(&woo_secret(store)),
        "write-only: {r}"
    );
}

/// Posts a delivery with WooCommerce's headers; `signature` None sends none.
async fn deliver(
    t: &TestApp,
    slug: &str,
    topic: &str,
    delivery: &str,
    body: &str,
    signature: Option<&str>,
) -> (u16, Value) {
    let (resource, event) = topic.split_once('.').unwrap_or((topic, ""));
    let mut req = t
        .http
        .post(t.url(&format!("/webhooks/woocommerce/{slug}")))
        .header("content-type", "application/json")
        .header("user-agent", "WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)")
        .header("x-wc-webhook-source", "https://shop.example/")
        .header("x-wc-webhook-topic", topic)
        .header("x-wc-webhook-resource", resource)
        .header("x-wc-webhook-event", event)
        .header("x-wc-webhook-id", "12")
        .header("x-wc-webhook-delivery-id", delivery)
        .body(body.to_string());
    if let Some(sig) = signature {
        req = req.header("x-wc-webhook-signature", sig);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A delivery signed with the store's WooCommerce secret.
async fn signed(
    t: &TestApp,
    store: &StoreKeys,
    topic: &str,
    delivery: &str,
    body: &str,
) -> (u16, Value) {
    let sig = common::python_signature(&woo_secret(store), body);
    deliver(t, &store.slug, topic, delivery, body, Some(&sig)).await
}

async fn variant(t: &TestApp, store: &StoreKeys, sku: &str) -> Value {
    let (status, body) = t.get(&format!("/v1/variants/{sku}"), &store.api_key).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn rejections(t: &TestApp, store: &StoreKeys) -> Value {
    let (status, body) = t.get("/v1/rejections", &store.api_key).await;
    assert_eq!(status, 200, "{body}");
    body["items"].clone()
}

both_dbs!(
    signed_product_update_restocks_and_older_is_stale,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        connect(&t, &store).await;

        let body = product("S-42", 0, "2026-03-01T12:00:00");
        let (status, r) = signed(&t, &store, "product.updated", "1001", &body).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("applied")),
            "{r}"
        );
        assert_eq!(
            t.subscribe(&store, json!({"email": "ann@example.com", "sku": "S-42"}))
                .await
                .0,
            201
        );

        let body = product("S-42", 8, "2026-03-01T12:05:00");
        let (status, r) = signed(&t, &store, "product.updated", "1002", &body).await;
        assert_eq!(
            (status, r["result"].clone(), r["sku"].clone()),
            (200, json!("restocked"), json!("S-42")),
            "{r}"
        );
        let v = variant(&t, &store, "S-42").await;
        assert_eq!(v["available"], 8, "{v}");
        assert_eq!(v["levels"][0]["location"], "default");
        assert_eq!(v["levels"][0]["observed_at"], "2026-03-01T12:05:00.000Z");
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), vec!["ann@example.com"]);

        // An older edit delivered late changes nothing.
        let body = product("S-42", 0, "2026-03-01T12:01:00");
        let (status, r) = signed(&t, &store, "product.updated", "1003", &body).await;
        assert_eq!((status, r["result"].clone()), (200, json!("stale")), "{r}");
        assert_eq!(variant(&t, &store, "S-42").await["available"], 8);

        // A new product whose SKU the catalog lacks is kept as a rejection, as the
        // stock API keeps it, and answered 2xx so WooCommerce keeps the webhook on.
        let body = product("NEW-1", 4, "2026-03-01T12:06:00");
        let (status, r) = signed(&t, &store, "product.created", "1004", &body).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("unknown_sku")),
            "{r}"
        );
        let kept = rejections(&t, &store).await;
        assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
        assert_eq!(kept[0]["source"], "woocommerce");
        assert_eq!(kept[0]["reason_code"], "unknown_sku", "{kept}");
        // Parked (the default profile): once the catalog has the SKU, the kept level
        // applies by itself, and replaying it again finds nothing newer to do.
        let mut product = common::shoe_product();
        product["variants"][1]["sku"] = json!("NEW-1");
        assert_eq!(
            t.put("/v1/products/shoe", &store.api_key, &product).await.0,
            200
        );
        assert_eq!(variant(&t, &store, "NEW-1").await["available"], 4);
        let id = kept[0]["id"].as_i64().expect("id");
        let (status, r) = t
            .post(
                &format!("/v1/rejections/{id}/replay"),
                &store.api_key,
                &json!({}),
            )
            .await;
        assert_eq!((status, r["result"].clone()), (200, json!("stale")), "{r}");
        assert_eq!(variant(&t, &store, "NEW-1").await["available"], 4);
        t.stop().await;
    }
);

both_dbs!(
    bad_or_missing_signatures_apply_nothing,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        let unconnected = t.create_store("other").await;
        t.seed_catalog(&store).await;
        t.seed_catalog(&unconnected).await;
        connect(&t, &store).await;
        let body = product("S-42", 8, "2026-03-01T12:05:00");
        let good = common::python_signature(&woo_secret(&store), &body);
        let altered = product("S-42", 9, "2026-03-01T12:05:00");
        let cases: [(&str, &str, Option<String>); 5] = [
            ("missing signature", &body, None),
            ("garbage signature", &body, Some("not-base64!".into())),
            (
                "the store's Shopify secret",
                &body,
                Some(common::python_signature(
                    &format!("shpss_{}", store.slug),
                    &body,
                )),
            ),
            ("body altered after signing", &altered, Some(good.clone())),
            (
                "signature of a different body",
                &body,
                Some(common::python_signature(&woo_secret(&store), &altered)),
            ),
        ];
        for (i, (what, body, sig)) in cases.into_iter().enumerate() {
            let (status, r) = deliver(
                &t,
                &store.slug,
                "product.updated",
                &format!("bad-{i}"),
                body,
                sig.as_deref(),
            )
            .await;
            assert_eq!(
                (status, r["code"].clone()),
                (401, json!("invalid_signature")),
                "{what}: {r}"
            );
        }
        // A store that never set a WooCommerce secret accepts nothing.
        let sig = common::python_signature(&woo_secret(&unconnected), &body);
        let (status, r) = deliver(
            &t,
            &unconnected.slug,
            "product.updated",
            "x",
            &body,
            Some(&sig),
        )
        .await;
        assert_eq!(
            (status, r["code"].clone()),
            (401, json!("invalid_signature"))
        );
        assert_eq!(variant(&t, &store, "S-42").await["levels"], json!([]));
        assert_eq!(variant(&t, &unconnected, "S-42").await["levels"], json!([]));
        assert_eq!(rejections(&t, &store).await, json!([]), "not stored");

        // A refused delivery id is not burnt: the correctly signed one still applies.
        let (status, r) = deliver(
            &t,
            &store.slug,
            "product.updated",
            "bad-0",
            &body,
            Some(&good),
        )
        .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("restocked")),
            "{r}"
        );
        let (status, r) = deliver(
            &t,
            "no-such-store",
            "product.updated",
            "y",
            &body,
            Some(&good),
        )
        .await;
        assert_eq!((status, r["code"].clone()), (404, json!("unknown_store")));
        t.stop().await;
    }
);

both_dbs!(
    a_redelivered_delivery_id_is_a_no_op,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        connect(&t, &store).await;
        let body = product("S-42", 5, "2026-03-01T12:00:00");
        let (status, r) = signed(&t, &store, "product.updated", "7001", &body).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("restocked")),
            "{r}"
        );
        // Same delivery id, even with a newer body: answered as done, not applied.
        let newer = product("S-42", 0, "2026-03-01T12:30:00");
        let (status, r) = signed(&t, &store, "product.updated", "7001", &newer).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("duplicate")),
            "{r}"
        );
        assert_eq!(variant(&t, &store, "S-42").await["available"], 5);
        // Another delivery of it applies.
        let (status, r) = signed(&t, &store, "product.updated", "7002", &newer).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("applied")),
            "{r}"
        );
        assert_eq!(variant(&t, &store, "S-42").await["available"], 0);
        t.stop().await;
    }
);

both_dbs!(
    a_variable_product_is_ignored_unless_it_carries_its_variations,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        connect(&t, &store).await;
        // As WooCommerce sends it: the parent, with variation ids only.
        let parent = json!({
            "id": 799, "name": "Trail Shoe", "type": "variable", "status": "publish",
            "date_modified_gmt": "2026-03-01T12:00:00", "sku": "", "price": "129.00",
            "manage_stock": false, "stock_quantity": null, "stock_status": "instock",
            "attributes": [{"id": 0, "name": "Size", "variation": true, "options": ["42", "43"]}],
            "variations": [733, 732]
        });
        let (status, r) = signed(&t, &store, "product.updated", "v1", &parent.to_string()).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("ignored")),
            "{r}"
        );
        assert!(
            r["reason"].as_str().is_some_and(|s| s.contains("variable")),
            "{r}"
        );
        assert_eq!(variant(&t, &store, "S-42").await["levels"], json!([]));
        assert_eq!(rejections(&t, &store).await, json!([]), "nothing to keep");

        // With the variations' stock (an extended payload), each is applied.
        let mut full = parent.clone();
        full["variations"] = json!([
            {"id": 733, "sku": "S-42", "manage_stock": true, "stock_quantity": 3,
             "stock_status": "instock", "date_modified_gmt": "2026-03-01T12:00:00"},
            {"id": 732, "sku": "S-43", "manage_stock": true, "stock_quantity": 0,
             "stock_status": "outofstock"}
        ]);
        let (status, r) = signed(&t, &store, "product.updated", "v2", &full.to_string()).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("restocked")),
            "{r}"
        );
        assert_eq!(variant(&t, &store, "S-42").await["available"], 3);
        let v = variant(&t, &store, "S-43").await;
        assert_eq!(v["levels"][0]["available"], 0, "{v}");
        assert_eq!(v["levels"][0]["observed_at"], "2026-03-01T12:00:00.000Z");
        t.stop().await;
    }
);

both_dbs!(
    order_created_records_the_order_once,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        connect(&t, &store).await;
        let order = json!({
            "id": 727, "parent_id": 0, "number": "727", "status": "processing", "currency": "EUR",
            "date_created": "2026-03-01T13:00:00", "date_created_gmt": "2026-03-01T12:00:00",
            "customer_id": 0,
            "billing": {"first_name": "John", "last_name": "Doe", "email": "john.doe@example.com"},
            "line_items": [
                {"id": 315, "name": "Trail Shoe - 42", "product_id": 799, "variation_id": 733,
                 "quantity": 2, "sku": "S-42", "price": 129, "subtotal": "258.00", "total": "258.00"}
            ]
        })
        .to_string();
        let (status, r) = signed(&t, &store, "order.created", "o1", &order).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("recorded")),
            "{r}"
        );
        // WooCommerce redelivers under a new delivery id: the order id makes it a no-op.
        let (status, r) = signed(&t, &store, "order.created", "o2", &order).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("duplicate")),
            "{r}"
        );
        t.stop().await;
    }
);

both_dbs!(
    an_unparseable_signed_payload_is_kept,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        connect(&t, &store).await;
        let body = r#"{"id": "not a number", "type": "simple""#;
        let (status, r) = signed(&t, &store, "product.updated", "u1", body).await;
        assert_eq!(
            (status, r["code"].clone()),
            (422, json!("invalid_payload")),
            "{r}"
        );
        let order =
            json!({"id": 728, "date_created_gmt": "yesterday", "line_items": []}).to_string();
        let (status, r) = signed(&t, &store, "order.created", "u2", &order).await;
        assert_eq!(status, 422, "{r}");
        assert!(r["code"].is_string(), "{r}");
        let (status, r) = signed(&t, &store, "coupon.created", "u3", "{}").await;
        assert_eq!(
            (status, r["code"].clone()),
            (422, json!("unsupported_topic")),
            "{r}"
        );
        let kept = rejections(&t, &store).await;
        let mut sources: Vec<(String, String)> = kept
            .as_array()
            .expect("items")
            .iter()
            .map(|k| {
                (
                    k["source"].as_str().unwrap_or("").to_string(),
                    k["payload"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        sources.sort();
        assert_eq!(
            sources,
            vec![
                ("woocommerce".to_string(), body.to_string()),
                ("woocommerce".to_string(), "{}".to_string()),
                ("woocommerce_orders".to_string(), order.clone()),
            ],
            "kept whole: {kept}"
        );
        // Replaying what still cannot be read keeps it rejected, adding no rejection.
        for k in kept.as_array().expect("items") {
            let id = k["id"].as_i64().expect("id");
            let (status, r) = t
                .post(
                    &format!("/v1/rejections/{id}/replay"),
                    &store.api_key,
                    &json!({}),
                )
                .await;
            if k["reason_code"] == "unsupported_topic" {
                assert_eq!(
                    (status, r["code"].clone()),
                    (409, json!("not_replayable")),
                    "{r}"
                );
            } else {
                assert_eq!(
                    (status, r["result"].clone()),
                    (200, json!("rejected")),
                    "{r}"
                );
            }
        }
        assert_eq!(
            rejections(&t, &store).await.as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(variant(&t, &store, "S-42").await["levels"], json!([]));
        t.stop().await;
    }
);

both_dbs!(the_ping_is_answered_200, |backend: Backend| async move {
    let t = TestApp::spawn(backend).await;
    let store = t.create_store("shop").await;
    connect(&t, &store).await;
    // As WooCommerce sends it when the webhook is saved: form body, no signature.
    let resp = t
        .http
        .post(t.url(&format!("/webhooks/woocommerce/{}", store.slug)))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)")
        .body("webhook_id=12")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.expect("json");
    assert_eq!(r["result"], "ping", "{r}");
    assert_eq!(rejections(&t, &store).await, json!([]));
    // Anything else unsigned is still refused.
    let (status, _) = deliver(
        &t,
        &store.slug,
        "product.updated",
        "p",
        "webhook_id=12",
        None,
    )
    .await;
    assert_eq!(status, 401);
    t.stop().await;
});
