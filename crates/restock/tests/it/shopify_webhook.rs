//! Shopify's inventory_levels/update webhook: signature verification exactly as
//! Shopify documents it, application, staleness, and dead-lettering.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

fn payload(item: u64, available: i64, updated_at: &str) -> String {
    format!(
        r#"{{"inventory_item_id":{item},"location_id":24826418,"available":{available},"updated_at":"{updated_at}","admin_graphql_api_id":"gid://shopify/InventoryLevel/24826418?inventory_item_id={item}"}}"#
    )
}

async fn deliver(t: &TestApp, slug: &str, body: &str, signature: Option<&str>) -> (u16, Value) {
    let mut req = t
        .http
        .post(t.url(&format!("/webhooks/shopify/{slug}")))
        .header("content-type", "application/json")
        .header("x-shopify-topic", "inventory_levels/update")
        .body(body.to_string());
    if let Some(sig) = signature {
        req = req.header("x-shopify-hmac-sha256", sig);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn levels(t: &TestApp, store: &StoreKeys) -> Value {
    let (status, body) = t.get("/v1/variants/S-42", &store.api_key).await;
    assert_eq!(status, 200);
    body["levels"].clone()
}

both_dbs!(
    signed_update_applies_and_restocks,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        let secret = format!("shpss_{}", store.slug);

        let body = payload(4242, 0, "2026-03-01T07:00:00-05:00");
        let (status, r) = deliver(
            &t,
            &store.slug,
            &body,
            Some(&common::python_signature(&secret, &body)),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            t.subscribe(&store, json!({"email": "ann@example.com", "sku": "S-42"}))
                .await
                .0,
            201
        );

        let body = payload(4242, 8, "2026-03-01T07:05:00-05:00");
        let (status, r) = deliver(
            &t,
            &store.slug,
            &body,
            Some(&common::python_signature(&secret, &body)),
        )
        .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("restocked")),
            "{r}"
        );
        let l = levels(&t, &store).await;
        assert_eq!(l[0]["location"], "shopify:24826418");
        assert_eq!(l[0]["available"], 8);
        assert_eq!(l[0]["observed_at"], "2026-03-01T12:05:00.000Z");
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), vec!["ann@example.com"]);

        // An older update delivered late changes nothing.
        let body = payload(4242, 0, "2026-03-01T07:01:00-05:00");
        let (status, r) = deliver(
            &t,
            &store.slug,
            &body,
            Some(&common::python_signature(&secret, &body)),
        )
        .await;
        assert_eq!((status, r["result"].clone()), (200, json!("stale")), "{r}");
        assert_eq!(levels(&t, &store).await[0]["available"], 8);
        t.stop().await;
    }
);

both_dbs!(
    bad_or_missing_signatures_apply_nothing,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        let other = t.create_store("other").await;
        t.seed_catalog(&store).await;
        let secret = format!("shpss_{}", store.slug);
        let body = payload(4242, 8, "2026-03-01T07:05:00-05:00");
        let good = common::python_signature(&secret, &body);
        let altered = payload(4242, 9, "2026-03-01T07:05:00-05:00");
        let cases: [(&str, &str, Option<String>); 5] = [
            ("missing signature", &body, None),
            ("garbage signature", &body, Some("not-base64!".into())),
            (
                "another store's secret",
                &body,
                Some(common::python_signature(
                    &format!("shpss_{}", other.slug),
                    &body,
                )),
            ),
            ("body altered after signing", &altered, Some(good.clone())),
            (
                "signature of a different body",
                &body,
                Some(common::python_signature(&secret, &altered)),
            ),
        ];
        for (what, body, sig) in cases {
            let (status, r) = deliver(&t, &store.slug, body, sig.as_deref()).await;
            assert_eq!(
                (status, r["code"].clone()),
                (401, json!("invalid_signature")),
                "{what}: {r}"
            );
        }
        assert_eq!(levels(&t, &store).await, json!([]), "nothing was applied");
        let (_, rejections) = t.get("/v1/rejections", &store.api_key).await;
        let rejections = rejections["items"].clone();
        assert_eq!(rejections, json!([]), "unauthenticated input is not stored");
        // The correctly signed one is accepted (the cases above were refused for their signature).
        assert_eq!(deliver(&t, &store.slug, &body, Some(&good)).await.0, 200);
        let (status, r) = deliver(&t, "no-such-store", &body, Some(&good)).await;
        assert_eq!((status, r["code"].clone()), (404, json!("unknown_store")));
        t.stop().await;
    }
);

both_dbs!(
    unmapped_item_is_kept_and_replayed_after_mapping,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        let secret = format!("shpss_{}", store.slug);
        let body = payload(271878346596884015, 3, "2026-03-01T07:00:00-05:00");
        let (status, r) = deliver(
            &t,
            &store.slug,
            &body,
            Some(&common::python_signature(&secret, &body)),
        )
        .await;
        assert_eq!(
            (status, r["code"].clone()),
            (422, json!("unknown_inventory_item")),
            "{r}"
        );

        let (_, rejections) = t.get("/v1/rejections", &store.api_key).await;
        let rejections = rejections["items"].clone();
        assert_eq!(rejections.as_array().map(Vec::len), Some(1), "{rejections}");
        assert_eq!(rejections[0]["source"], "shopify");
        assert_eq!(rejections[0]["payload"], body, "kept whole");
        let id = rejections[0]["id"].as_i64().expect("id");

        // Replaying before the mapping exists keeps it rejected, without duplicating it.
        let (status, r) = t
            .post(
                &format!("/v1/rejections/{id}/replay"),
                &store.api_key,
                &json!({}),
            )
            .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("rejected")),
            "{r}"
        );
        assert_eq!(
            t.get("/v1/rejections", &store.api_key).await.1["items"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );

        let mut product = common::shoe_product();
        product["variants"][1]["inventory_item_id"] = json!("271878346596884015");
        assert_eq!(
            t.put("/v1/products/shoe", &store.api_key, &product).await.0,
            200
        );
        let (status, r) = t
            .post(
                &format!("/v1/rejections/{id}/replay"),
                &store.api_key,
                &json!({}),
            )
            .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("applied")),
            "{r}"
        );
        let (_, v) = t.get("/v1/variants/S-43", &store.api_key).await;
        assert_eq!(v["available"], 3, "{v}");
        let (_, rejections) = t.get("/v1/rejections", &store.api_key).await;
        let rejections = rejections["items"].clone();
        assert!(rejections[0]["replayed_at"].is_number(), "{rejections}");
        t.stop().await;
    }
);
