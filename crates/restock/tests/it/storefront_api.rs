//! The public storefront sign-up API: validation with stable codes, merging, CORS.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

async fn subscriptions(t: &TestApp, store: &StoreKeys) -> Vec<Value> {
    let (status, body) = t.get("/v1/subscriptions", &store.api_key).await;
    assert_eq!(status, 200);
    body["items"].as_array().expect("items").clone()
}

async fn sold_out_store(t: &TestApp) -> StoreKeys {
    let store = t.create_store("front").await;
    t.seed_catalog(&store).await;
    t.stock(
        &store,
        json!([{"sku": "S-42", "available": 0}, {"sku": "S-43", "available": 0}]),
    )
    .await;
    store
}

both_dbs!(
    signups_are_created_then_merged,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = sold_out_store(&t).await;
        let (status, body) = t
            .subscribe(&store, json!({"email": "Ann@Example.com", "sku": "S-42"}))
            .await;
        assert_eq!((status, body["status"].clone()), (201, json!("created")));
        let (status, body) = t
            .subscribe(&store, json!({"email": " Ann@example.COM ", "sku": "S-42"}))
            .await;
        assert_eq!(
            (status, body["status"].clone()),
            (200, json!("merged")),
            "the domain's case does not make a new shopper"
        );
        let (status, _) = t
            .subscribe(
                &store,
                json!({"email": "Ann@example.com", "product": "shoe"}),
            )
            .await;
        assert_eq!(
            status, 201,
            "a product-level alert is a different subscription"
        );
        let subs = subscriptions(&t, &store).await;
        assert_eq!(subs.len(), 2, "{subs:?}");
        assert!(
            subs.iter()
                .all(|s| s["email"] == "Ann@example.com" && s["status"] == "waiting")
        );
        assert_eq!(subs[1]["sku"], Value::Null, "product-level: no SKU");

        // After unsubscribing, signing up again is a new sign-up at the back of the
        // list; the ended one stays as history.
        let id = subs[0]["id"].as_i64().expect("id");
        let now = t.now();
        t.app
            .db
            .unsubscribe(restock_core::ids::SubscriptionId(id), false, now)
            .await
            .expect("unsubscribe");
        assert_eq!(subscriptions(&t, &store).await[0]["status"], "unsubscribed");
        let (status, _) = t
            .subscribe(&store, json!({"email": "Ann@example.com", "sku": "S-42"}))
            .await;
        assert_eq!(status, 201);
        let subs = subscriptions(&t, &store).await;
        let statuses: Vec<Value> = subs.iter().map(|s| s["status"].clone()).collect();
        assert_eq!(
            statuses,
            vec![json!("unsubscribed"), json!("waiting"), json!("waiting")]
        );
        t.stop().await;
    }
);

both_dbs!(
    bad_input_gets_a_clear_error_and_creates_nothing,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = sold_out_store(&t).await;
        t.stock(&store, json!([{"sku": "S-43", "available": 4}]))
            .await;
        let cases = [
            (
                json!({"email": "not-an-email", "sku": "S-42"}),
                422,
                "invalid_email",
            ),
            (
                json!({"email": "ann@localhost", "sku": "S-42"}),
                422,
                "invalid_email",
            ),
            (
                json!({"email": "ann@example.com", "sku": "NOPE"}),
                422,
                "unknown_sku",
            ),
            (
                json!({"email": "ann@example.com", "product": "nope"}),
                422,
                "unknown_product",
            ),
            (
                json!({"email": "ann@example.com", "sku": "S-43"}),
                409,
                "in_stock",
            ),
            (
                json!({"email": "ann@example.com", "product": "shoe"}),
                409,
                "in_stock",
            ),
            (
                json!({"email": "ann@example.com", "sku": "S-42", "product": "shoe"}),
                400,
                "invalid_request",
            ),
            (json!({"email": "ann@example.com"}), 400, "invalid_request"),
            (
                json!({"email": "ann@example.com", "sku": "S-42", "extra": 1}),
                400,
                "invalid_json",
            ),
        ];
        for (body, status, code) in cases {
            let (got, resp) = t.subscribe(&store, body.clone()).await;
            assert_eq!(
                (got, resp["code"].clone()),
                (status, json!(code)),
                "{body} → {resp}"
            );
            assert!(
                resp["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{resp}"
            );
        }
        let raw = t
            .http
            .post(t.url(&format!(
                "/storefront/v1/{}/subscriptions",
                store.publishable_key
            )))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("request");
        assert_eq!(raw.status(), 400);
        let unknown = t
            .http
            .post(t.url("/storefront/v1/pk_nope/subscriptions"))
            .json(&json!({"email": "ann@example.com", "sku": "S-42"}))
            .send()
            .await
            .expect("request");
        assert_eq!(unknown.status(), 404);
        assert_eq!(
            unknown.json::<Value>().await.expect("json")["code"],
            "unknown_store"
        );
        assert!(subscriptions(&t, &store).await.is_empty());
        t.stop().await;
    }
);

both_dbs!(
    browsers_may_call_only_from_the_merchants_origins,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = sold_out_store(&t).await;
        let url = t.url(&format!(
            "/storefront/v1/{}/subscriptions",
            store.publishable_key
        ));
        let preflight = |origin: &'static str| {
            t.http
                .request(reqwest::Method::OPTIONS, &url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
        };
        let ok = preflight("https://shop.example").await.expect("preflight");
        assert_eq!(ok.status(), 204);
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://shop.example"
        );
        assert!(
            ok.headers()["access-control-allow-methods"]
                .to_str()
                .expect("methods")
                .contains("POST")
        );
        let denied = preflight("https://evil.example").await.expect("preflight");
        assert_eq!(denied.status(), 403);
        assert!(
            denied
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );

        let post = |origin: &'static str, body: Value| {
            t.http
                .post(&url)
                .header("origin", origin)
                .json(&body)
                .send()
        };
        let resp = post(
            "https://evil.example",
            json!({"email": "eve@example.com", "sku": "S-42"}),
        )
        .await
        .expect("post");
        assert_eq!(resp.status(), 403);
        assert_eq!(
            resp.json::<Value>().await.expect("json")["code"],
            "origin_not_allowed"
        );
        assert!(
            subscriptions(&t, &store).await.is_empty(),
            "nothing created from a foreign origin"
        );

        let resp = post(
            "https://shop.example",
            json!({"email": "ann@example.com", "sku": "S-42"}),
        )
        .await
        .expect("post");
        assert_eq!(resp.status(), 201);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://shop.example"
        );
        // Errors carry the CORS headers too, so the widget can show the reason.
        let resp = post(
            "https://shop.example",
            json!({"email": "bad", "sku": "S-42"}),
        )
        .await
        .expect("post");
        assert_eq!(resp.status(), 422);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://shop.example"
        );

        // The merchant can change the allowed origins.
        let (status, body) = t
            .call(
                reqwest::Method::PATCH,
                "/v1/store",
                &store.api_key,
                Some(&json!({"allowed_origins": ["https://new.example"]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            preflight("https://shop.example")
                .await
                .expect("preflight")
                .status(),
            403
        );
        assert_eq!(
            preflight("https://new.example")
                .await
                .expect("preflight")
                .status(),
            204
        );
        let (status, body) = t
            .call(
                reqwest::Method::PATCH,
                "/v1/store",
                &store.api_key,
                Some(&json!({"allowed_origins": ["not an origin"]})),
            )
            .await;
        assert_eq!(
            (status, body["code"].clone()),
            (422, json!("invalid_value"))
        );
        t.stop().await;
    }
);
