//! A store's data is visible only with that store's credentials, on every endpoint.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

/// Store A with everything: catalog, stock, a subscription, a restock, a sent
/// notification, a dead-lettered stock item. Returns (notification id, rejection id).
async fn populate(t: &TestApp, a: &StoreKeys) -> (i64, i64) {
    t.seed_catalog(a).await;
    t.stock(a, json!([{"sku": "S-42", "available": 0}])).await;
    assert_eq!(
        t.subscribe(a, json!({"email": "ann@example.com", "sku": "S-42"}))
            .await
            .0,
        201
    );
    t.advance(1_000);
    let body = t
        .stock(
            a,
            json!([{"sku": "S-42", "available": 5}, {"sku": "GHOST", "available": 1}]),
        )
        .await;
    let rejection = body["rejected"][0]["rejection_id"]
        .as_i64()
        .expect("rejection id");
    assert_eq!(t.run_pending().await, 1);
    let (_, n) = t.get("/v1/notifications", &a.api_key).await;
    (
        n["items"][0]["id"].as_i64().expect("notification id"),
        rejection,
    )
}

/// What A's key sees on every read endpoint: compared before and after B acts.
async fn snapshot(t: &TestApp, a: &StoreKeys) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in [
        "/v1/store",
        "/v1/products",
        "/v1/products/shoe",
        "/v1/variants/S-42",
        "/v1/restocks",
        "/v1/subscriptions",
        "/v1/notifications",
        "/v1/outbox",
        "/v1/rejections",
    ] {
        let (status, body) = t.get(path, &a.api_key).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.push((path.to_string(), body));
    }
    out
}

both_dbs!(
    another_stores_key_sees_and_changes_nothing,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let a = t.create_store("alpha").await;
        let b = t.create_store("beta").await;
        let (notification, rejection) = populate(&t, &a).await;
        let before = snapshot(&t, &a).await;

        // Every merchant endpoint, called with B's key against A's data.
        let cases: Vec<(Method, String, Option<Value>, u16)> = vec![
            (Method::GET, "/v1/products/shoe".into(), None, 404),
            (Method::GET, "/v1/variants/S-42".into(), None, 404),
            (
                Method::POST,
                format!("/v1/notifications/{notification}/replay"),
                Some(json!({})),
                404,
            ),
            (
                Method::POST,
                format!("/v1/rejections/{rejection}/replay"),
                Some(json!({})),
                404,
            ),
            // B's own writes with A's identifiers land in B's store only.
            (
                Method::PUT,
                "/v1/categories/shoes".into(),
                Some(json!({"name": "B shoes", "min_stock": 9})),
                204,
            ),
            (
                Method::PUT,
                "/v1/products/shoe".into(),
                Some(
                    json!({"title": "B's shoe", "url": "https://b.example/shoe", "price": 1, "currency": "USD", "category": "shoes", "variants": [{"sku": "S-42"}]}),
                ),
                200,
            ),
            (
                Method::POST,
                "/v1/stock".into(),
                Some(
                    json!({"items": [{"sku": "S-42", "available": 99}, {"sku": "S-43", "available": 99}]}),
                ),
                200,
            ),
            (
                Method::PATCH,
                "/v1/store".into(),
                Some(json!({"min_stock": 50, "allowed_origins": ["https://b.example"]})),
                200,
            ),
        ];
        for (method, path, body, expected) in &cases {
            let (status, resp) = t
                .call(method.clone(), path, &b.api_key, body.as_ref())
                .await;
            assert_eq!(status, *expected, "{method} {path} with B's key: {resp}");
        }

        // B's lists hold only B's own rows.
        let (_, products) = t.get("/v1/products", &b.api_key).await;
        assert_eq!(products["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(products["items"][0]["title"], "B's shoe");
        // B's only restock is its own S-42 at 99 (A's was at 5).
        let (_, restocks) = t.get("/v1/restocks", &b.api_key).await;
        let restocks = restocks.as_array().expect("restocks").clone();
        assert_eq!(restocks.len(), 1, "{restocks:?}");
        assert_eq!(
            (restocks[0]["sku"].clone(), restocks[0]["quantity"].clone()),
            (json!("S-42"), json!(99))
        );
        for path in ["/v1/subscriptions", "/v1/notifications"] {
            let (_, body) = t.get(path, &b.api_key).await;
            assert_eq!(body["items"], json!([]), "{path} with B's key");
        }
        let (_, outbox) = t.get("/v1/outbox", &b.api_key).await;
        assert_eq!(outbox["done"], 0);
        let (_, store) = t.get("/v1/store", &b.api_key).await;
        assert_eq!(store["slug"], "beta");
        // B's S-43 is unknown in B's store: rejected there, not applied to A's S-43, and
        // A's rejected GHOST item is not among B's.
        let (_, b_rejections) = t.get("/v1/rejections", &b.api_key).await;
        let b_rejections = b_rejections["items"].clone();
        let b_rejections = b_rejections.as_array().expect("rejections").clone();
        assert_eq!(b_rejections.len(), 1, "{b_rejections:?}");
        assert!(
            b_rejections[0]["payload"]
                .as_str()
                .is_some_and(|p| p.contains("S-43")),
            "{b_rejections:?}"
        );

        // A sees exactly what it saw before.
        assert_eq!(snapshot(&t, &a).await, before);

        // The storefront: B's publishable key cannot reach A's SKUs (S-43 exists only in A).
        let (status, resp) = t
            .subscribe(&b, json!({"email": "eve@example.com", "sku": "S-43"}))
            .await;
        assert_eq!((status, resp["code"].clone()), (422, json!("unknown_sku")));
        // Webhooks: A's Shopify secret does not sign for B.
        let body = r#"{"inventory_item_id":4242,"location_id":1,"available":1,"updated_at":"2026-03-01T12:00:00Z"}"#;
        let sig = restock::intake::shopify::sign(&format!("shpss_{}", a.slug), body.as_bytes());
        let resp = t
            .http
            .post(t.url(&format!("/webhooks/shopify/{}", b.slug)))
            .header("x-shopify-hmac-sha256", sig)
            .body(body)
            .send()
            .await
            .expect("webhook");
        assert_eq!(resp.status(), 401);
        t.stop().await;
    }
);

both_dbs!(
    every_merchant_endpoint_requires_a_valid_key,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let a = t.create_store("alpha").await;
        t.seed_catalog(&a).await;
        let endpoints: Vec<(Method, &str)> = vec![
            (Method::GET, "/v1/store"),
            (Method::PATCH, "/v1/store"),
            (Method::PUT, "/v1/categories/shoes"),
            (Method::PUT, "/v1/products/shoe"),
            (Method::GET, "/v1/products/shoe"),
            (Method::GET, "/v1/products"),
            (Method::GET, "/v1/variants/S-42"),
            (Method::POST, "/v1/stock"),
            (Method::GET, "/v1/restocks"),
            (Method::GET, "/v1/restocks/1"),
            (Method::GET, "/v1/store/policy"),
            (Method::PUT, "/v1/store/policy"),
            (Method::GET, "/v1/markets"),
            (Method::PUT, "/v1/markets/eu"),
            (Method::POST, "/v1/orders"),
            (Method::GET, "/v1/subscriptions"),
            (Method::POST, "/v1/subscriptions"),
            (Method::GET, "/v1/subscriptions/1"),
            (Method::DELETE, "/v1/subscriptions/1"),
            (Method::GET, "/v1/shoppers"),
            (Method::GET, "/v1/shoppers/1"),
            (Method::PATCH, "/v1/shoppers/1"),
            (Method::PUT, "/v1/shoppers/1/preferences"),
            (Method::GET, "/v1/shoppers/1/consents"),
            (Method::POST, "/v1/shoppers/1/consents"),
            (Method::GET, "/v1/shoppers/1/subscriptions"),
            (Method::GET, "/v1/shoppers/1/messages"),
            (Method::GET, "/v1/notifications"),
            (Method::GET, "/v1/outbox"),
            (Method::POST, "/v1/notifications/1/replay"),
            (Method::GET, "/v1/rejections"),
            (Method::POST, "/v1/rejections/1/replay"),
            (Method::POST, "/v1/rejections/replay"),
            (Method::GET, "/v1/sources"),
            (Method::GET, "/v1/sources/warehouse"),
            (Method::PUT, "/v1/sources/warehouse"),
            (Method::DELETE, "/v1/sources/warehouse"),
            (Method::GET, "/v1/sources/warehouse/log"),
            (Method::POST, "/v1/imports/stock"),
        ];
        // The OpenAPI document lists every operation secured by the API key: make sure
        // this table covers them all.
        let doc: Value = t
            .http
            .get(t.url("/openapi.json"))
            .send()
            .await
            .expect("doc")
            .json()
            .await
            .expect("json");
        let mut secured = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                if op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()))
                {
                    secured += 1;
                    let concrete = path
                        .replace("{id}", "1")
                        .replace("{handle}", "shoes")
                        .replace("{sku}", "S-42")
                        .replace("{market}", "eu")
                        .replace("{name}", "warehouse")
                        .replace("{kind}", "stock");
                    let concrete = if concrete == "/v1/products/1" {
                        "/v1/products/shoe".to_string()
                    } else {
                        concrete
                    };
                    assert!(
                    endpoints.iter().any(|(m, p)| m.as_str().eq_ignore_ascii_case(method) && *p == concrete),
                    "{method} {path} is not covered by this test"
                );
                }
            }
        }
        assert_eq!(secured, endpoints.len());
        for (method, path) in &endpoints {
            for auth in [
                None,
                Some("Bearer rk_made_up"),
                Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
                Some(a.publishable_key.as_str()),
            ] {
                let mut req = t.http.request(method.clone(), t.url(path)).json(&json!({}));
                if let Some(h) = auth {
                    req = req.header("authorization", h);
                }
                let resp = req.send().await.expect("request");
                assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
                let body: Value = resp.json().await.expect("json");
                assert_eq!(body["code"], "unauthorized");
            }
        }
        t.stop().await;
    }
);
