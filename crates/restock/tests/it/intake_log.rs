//! The intake log: every delivery as it arrived, with its cursor and what became of
//! it, per source and store; forged deliveries never reach it; old entries go.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

async fn log(t: &TestApp, store: &StoreKeys, source: &str, query: &str) -> Vec<Value> {
    let (status, body) = t
        .get(&format!("/v1/sources/{source}/log{query}"), &store.api_key)
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().expect("items").clone()
}

fn outcome(entry: &Value) -> Value {
    serde_json::from_str(entry["outcome"].as_str().expect("outcome")).expect("outcome JSON")
}

async fn shopify(t: &TestApp, slug: &str, body: &str, signature: &str, id: &str) -> u16 {
    t.http
        .post(t.url(&format!("/webhooks/shopify/{slug}")))
        .header("content-type", "application/json")
        .header("x-shopify-topic", "inventory_levels/update")
        .header("x-shopify-webhook-id", id)
        .header("x-shopify-hmac-sha256", signature)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

both_dbs!(
    every_delivery_is_logged_as_it_arrived,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        let other = t.create_store("other").await;

        // The stock API: the batch as sent, and what became of it.
        let items = json!([{"sku": "S-42", "available": 3}, {"sku": "NOPE", "available": 1}]);
        t.stock(&store, items.clone()).await;
        let entries = log(&t, &store, "api", "").await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        let e = &entries[0];
        assert_eq!(e["format"], "json");
        let payload: Value =
            serde_json::from_str(e["payload"].as_str().expect("payload")).expect("payload JSON");
        assert_eq!(payload, json!({ "items": items }));
        // S-42's first level is in stock: a restock (with nobody waiting yet).
        assert_eq!(
            outcome(e),
            json!({"applied": 1, "stale": 0, "rejected": 1, "restocks": 1})
        );
        assert_eq!(e["truncated"], false);
        assert_eq!(
            e["bytes"].as_u64(),
            Some(e["payload"].as_str().expect("payload").len() as u64)
        );

        // A signed Shopify delivery: its body byte for byte, its id as the cursor.
        let secret = format!("shpss_{}", store.slug);
        let body = r#"{"inventory_item_id":4242,"location_id":7,"available":8,"updated_at":"2030-03-01T07:05:00-05:00"}"#;
        let sig = common::python_signature(&secret, body);
        assert_eq!(shopify(&t, &store.slug, body, &sig, "wh-1").await, 200);
        // The same delivery again is a duplicate: answered, not logged twice.
        assert_eq!(shopify(&t, &store.slug, body, &sig, "wh-1").await, 200);
        // A forged one is refused and never logged.
        assert_eq!(
            shopify(&t, &store.slug, body, "Zm9yZ2Vk", "wh-2").await,
            401
        );
        let entries = log(&t, &store, "shopify", "").await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0]["payload"], body);
        assert_eq!(entries[0]["cursor"], "wh-1");
        assert_eq!(
            outcome(&entries[0]),
            json!({"result": "applied", "topic": "inventory_levels/update"})
        );

        // Another store sees nothing of it; an unknown source is a 404 with its code.
        let (status, r) = t.get("/v1/sources/api/log", &other.api_key).await;
        assert_eq!(status, 404, "{r}");
        assert_eq!(r["code"], "not_found", "{r}");
        let (status, r) = t
            .get("/v1/sources/%C2%84/log?before=1", &store.api_key)
            .await;
        assert_eq!(
            (status, r["code"].clone()),
            (404, json!("not_found")),
            "{r}"
        );
        let (status, r) = t.get("/v1/sources/api/log?limit=0", &store.api_key).await;
        assert_eq!(status, 400, "{r}");
        assert!(r["code"].is_string(), "{r}");

        // Newest first, paged with `before`.
        for n in 4..=6 {
            t.stock(&store, json!([{"sku": "S-42", "available": n}]))
                .await;
        }
        let page = |q: String| {
            let t = &t;
            let store = &store;
            async move {
                let (status, body) = t
                    .get(&format!("/v1/sources/api/log{q}"), &store.api_key)
                    .await;
                assert_eq!(status, 200, "{body}");
                body
            }
        };
        let first = page("?limit=2".into()).await;
        let quantities = |p: &Value| -> Vec<i64> {
            p["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| {
                    let v: Value =
                        serde_json::from_str(e["payload"].as_str().expect("p")).expect("json");
                    v["items"][0]["available"].as_i64().expect("available")
                })
                .collect()
        };
        assert_eq!(quantities(&first), [6, 5]);
        let next = first["next"].as_i64().expect("next");
        let second = page(format!("?limit=2&before={next}")).await;
        assert_eq!(quantities(&second), [4, 3]);
        let last = page(format!(
            "?limit=2&before={}",
            second["next"].as_i64().expect("next")
        ))
        .await;
        assert_eq!(last["items"], json!([]));
        assert!(last["next"].is_null(), "{last}");

        // Kept for retention.intake_log_hours (72): three days and an hour later the
        // purge removes them.
        t.advance(73 * 3_600_000);
        restock::dispatch::record::purge_if_due(&t.app, t.now()).await;
        assert_eq!(log(&t, &store, "api", "").await, Vec::<Value>::new());
        assert_eq!(log(&t, &store, "shopify", "").await, Vec::<Value>::new());
        t.stop().await;
    }
);

both_dbs!(
    a_payload_over_the_limit_is_kept_cut_and_marked,
    |backend: Backend| async move {
        let t = TestApp::spawn_with(backend, "[intake]\nlog_max_bytes = 40\n").await;
        let store = t.create_store("shop").await;
        t.seed_catalog(&store).await;
        t.stock(
            &store,
            json!([{"sku": "S-42", "available": 2, "location": "é-warehouse-with-a-long-name"}]),
        )
        .await;
        let entries = log(&t, &store, "api", "").await;
        assert_eq!(entries.len(), 1);
        let kept = entries[0]["payload"].as_str().expect("payload");
        assert!(kept.len() <= 40 && !kept.is_empty(), "{kept:?}");
        assert_eq!(entries[0]["truncated"], true);
        assert!(entries[0]["bytes"].as_u64().expect("bytes") > 40);
        t.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_can_be_switched_off() {
    let t = TestApp::spawn_with(Backend::Sqlite, "[intake]\nlog_max_bytes = 0\n").await;
    let store = t.create_store("shop").await;
    t.seed_catalog(&store).await;
    t.stock(&store, json!([{"sku": "S-42", "available": 2}]))
        .await;
    assert_eq!(log(&t, &store, "api", "").await, Vec::<Value>::new());
    t.stop().await;
}
