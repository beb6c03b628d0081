//! Operations: health, readiness, metrics, and the OpenAPI document.

use crate::common;

use common::{Backend, TestApp};
use serde_json::{Value, json};

both_dbs!(
    health_readiness_and_metrics,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let health = t.http.get(t.url("/healthz")).send().await.expect("healthz");
        assert_eq!(health.status(), 200);
        let ready = t.http.get(t.url("/readyz")).send().await.expect("readyz");
        assert_eq!(ready.status(), 200);

        let store = t.create_store("ops").await;
        t.seed_catalog(&store).await;
        t.stock(
            &store,
            json!([{"sku": "S-42", "available": 0}, {"sku": "NOPE", "available": 1}]),
        )
        .await;
        for email in ["a@example.com", "b@example.com"] {
            assert_eq!(
                t.subscribe(&store, json!({"email": email, "sku": "S-42"}))
                    .await
                    .0,
                201
            );
        }
        t.advance(1_000);
        t.stock(&store, json!([{"sku": "S-42", "available": 9}]))
            .await;
        t.advance(250);
        assert_eq!(t.run_pending().await, 2);

        let metrics = t
            .http
            .get(t.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        // The depth gauges count the live queue only (a scrape must not count the
        // whole history); what finished is counted by sends_total below.
        assert!(!metrics.contains("restock_outbox_depth{state=\"done\"}"));
        for line in [
            "restock_outbox_depth{state=\"running\"} 0",
            "restock_outbox_depth{state=\"pending\"} 0",
            "restock_outbox_depth{state=\"dead\"} 0",
            "restock_sends_total{channel=\"file\",outcome=\"sent\"} 2",
            "restock_intake_rejects_total{reason=\"unknown_sku\",source=\"api\"} 1",
            "restock_restock_events_total{source=\"api\"} 1",
            "restock_restock_to_send_seconds_count{channel=\"file\"} 2",
            // Both sends happened 250 ms (manual clock) after the restock was planned.
            "restock_restock_to_send_seconds_bucket{channel=\"file\",le=\"0.25\"} 2",
            "restock_restock_to_send_seconds_bucket{channel=\"file\",le=\"0.1\"} 0",
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "missing {line:?} in\n{metrics}"
            );
        }
        t.stop().await;
    }
);

both_dbs!(
    readiness_fails_when_the_database_is_gone,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        t.app.db.close().await;
        let ready = t.http.get(t.url("/readyz")).send().await.expect("readyz");
        assert_eq!(ready.status(), 503);
        let body: Value = ready.json().await.expect("json");
        assert_eq!(body["code"], "not_ready");
        // Liveness does not depend on the database.
        assert_eq!(
            t.http
                .get(t.url("/healthz"))
                .send()
                .await
                .expect("healthz")
                .status(),
            200
        );
        t.stop().await;
    }
);

/// Every operation the OpenAPI document describes is answered by the router (a
/// route the router lacks would answer a bare 404 or 405), and the document covers
/// the API's resources.
#[tokio::test]
async fn openapi_describes_every_route() {
    let t = TestApp::spawn(Backend::Sqlite).await;
    let doc: Value = t
        .http
        .get(t.url("/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{publishable_key}", "pk_unknown")
            .replace("{id}", "999999")
            .replace("{token}", "1.invalid")
            .replace("{sku}", "NOPE")
            .replace("{handle}", "misc")
            .replace("{store}", "nostore")
            .replace("{market}", "eu")
            .replace("{name}", "nosource")
            .replace("{kind}", "stock");
        assert!(!concrete.contains('{'), "unfilled parameter in {path}");
        for (method, op) in item.as_object().expect("path item") {
            let Ok(m) = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            operations += 1;
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no responses"
            );
            let resp = t
                .http
                .request(m, t.url(&concrete))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let body = resp.text().await.expect("body");
            let bare_router_miss = (status == 404 || status == 405) && body.is_empty();
            assert!(
                !bare_router_miss,
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
    assert!(operations >= 25, "only {operations} operations documented");
    for expected in [
        "/v1/stock",
        "/v1/products/{id}",
        "/v1/variants/{sku}",
        "/webhooks/shopify/{store}",
        "/storefront/v1/{publishable_key}/subscriptions",
        "/v1/notifications/{id}/replay",
        "/v1/rejections/{id}/replay",
        "/v1/imports/{kind}",
        "/t/c/{token}",
        "/t/u/{token}",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the OpenAPI document"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    t.stop().await;
}
