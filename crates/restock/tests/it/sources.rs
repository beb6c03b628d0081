//! The source interface's shared parts: sources and their health in the API, the CLI
//! and /readyz; validation profiles per source; dead letters that count repeats,
//! rank by impact and replay by filter; parked updates applied once the catalog
//! names their SKU; placeholders adopted by the catalog.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

async fn rejections(t: &TestApp, store: &StoreKeys, query: &str) -> Vec<Value> {
    let (status, r) = t
        .get(&format!("/v1/rejections?{query}"), &store.api_key)
        .await;
    assert_eq!(status, 200, "{r}");
    r["items"].as_array().expect("items").clone()
}

async fn put_source(t: &TestApp, store: &StoreKeys, name: &str, body: Value) -> (u16, Value) {
    t.put(&format!("/v1/sources/{name}"), &store.api_key, &body)
        .await
}

/// The variant's level at the default location (none recorded: 0).
async fn level(t: &TestApp, store: &StoreKeys, sku: &str) -> Value {
    let (status, v) = t.get(&format!("/v1/variants/{sku}"), &store.api_key).await;
    assert_eq!(status, 200, "{v}");
    let at_default = v["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .find(|l| l["location"] == "default")
        .map(|l| l["available"].clone());
    json!({ "available": at_default.unwrap_or(json!(0)) })
}

both_dbs!(
    built_in_sources_take_only_a_profile_under_their_own_name,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("alpha").await;
        // A built-in source must be named after its kind, and takes no settings.
        let (status, r) = put_source(&t, &s, "mine", json!({"kind": "api"})).await;
        assert_eq!(status, 422, "{r}");
        assert_eq!(r["code"], "invalid_value", "{r}");
        let (status, r) = put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "config": {"url": "x"}}),
        )
        .await;
        assert_eq!(status, 422, "{r}");
        // A configured source cannot take a built-in name.
        let (status, r) =
            put_source(&t, &s, "shopify", json!({"kind": "http", "config": {}})).await;
        assert_eq!(status, 422, "{r}");
        // An unknown profile field is refused, not ignored.
        let (status, r) = put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "profile": {"unknown_skus": "reject"}}),
        )
        .await;
        assert_eq!(status, 400, "{r}");
        assert_eq!(r["code"], "invalid_json", "{r}");
        let (status, r) = put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "profile": {"negative_quantity": "zero"}}),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["profile"]["negative_quantity"], "zero", "{r}");
        assert_eq!(r["profile"]["unknown_sku"], "park", "defaults fill in: {r}");
        assert_eq!(r["health"]["status"], "idle", "{r}");
        let (status, r) = t.get("/v1/sources/nope", &s.api_key).await;
        assert_eq!(status, 404, "{r}");
        assert_eq!(r["code"], "not_found");
        t.stop().await;
    }
);

both_dbs!(
    profiles_decide_negative_quantities_and_duplicate_lines,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        // Default profile: negative stock is applied (oversold), duplicates: newest wins.
        let r = t
            .stock(
                &s,
                json!([
                    {"sku": "S-42", "available": -2, "observed_at": "2026-03-01T10:00:00Z"},
                    {"sku": "S-43", "available": 1, "observed_at": "2026-03-01T10:00:00Z"},
                    {"sku": "S-43", "available": 4, "observed_at": "2026-03-01T10:00:01Z"}
                ]),
            )
            .await;
        assert_eq!(r["rejected"].as_array().map(Vec::len), Some(0), "{r}");
        assert_eq!(level(&t, &s, "S-42").await["available"], -2);
        assert_eq!(level(&t, &s, "S-43").await["available"], 4);

        // A strict profile on the API source.
        let (status, r) = put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "profile": {"negative_quantity": "reject", "duplicate_lines": "reject"}}),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        t.stock(
            &s,
            json!([
                {"sku": "S-42", "available": -5, "observed_at": "2026-03-01T11:00:00Z"},
                {"sku": "S-43", "available": 7, "observed_at": "2026-03-01T11:00:00Z"},
                {"sku": "S-43", "available": 8, "observed_at": "2026-03-01T11:00:01Z"}
            ]),
        )
        .await;
        assert_eq!(level(&t, &s, "S-42").await["available"], -2, "refused");
        assert_eq!(
            level(&t, &s, "S-43").await["available"],
            4,
            "both lines refused"
        );
        let dead = rejections(&t, &s, "sort=newest").await;
        let codes: Vec<&str> = dead
            .iter()
            .filter_map(|r| r["reason_code"].as_str())
            .collect();
        assert_eq!(
            codes.iter().filter(|c| **c == "duplicate_line").count(),
            2,
            "{dead:?}"
        );
        assert_eq!(
            codes.iter().filter(|c| **c == "negative_quantity").count(),
            1,
            "{dead:?}"
        );

        // Lenient: negative quantities are taken as zero.
        put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "profile": {"negative_quantity": "zero"}}),
        )
        .await;
        t.stock(
            &s,
            json!([{"sku": "S-42", "available": -9, "observed_at": "2026-03-01T12:00:00Z"}]),
        )
        .await;
        assert_eq!(level(&t, &s, "S-42").await["available"], 0);

        // The API source's health counts its deliveries.
        let (status, r) = t.get("/v1/sources/api", &s.api_key).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["health"]["status"], "ok", "{r}");
        assert_eq!(r["health"]["runs"], 3, "{r}");
        assert_eq!(r["health"]["rejected"], 3, "{r}");
        assert_eq!(r["health"]["error_rate"], 0.0, "{r}");
        let ready = t
            .http
            .get(t.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .text()
            .await
            .expect("body");
        assert!(ready.starts_with("ready\nsources: "), "{ready}");
        assert!(ready.contains(" ok"), "{ready}");
        t.stop().await;
    }
);

both_dbs!(
    parked_updates_apply_when_the_catalog_names_the_sku,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        // Stock for a SKU the catalog does not know yet: parked (the default).
        t.stock(
            &s,
            json!([{"sku": "NEW-1", "available": 6, "observed_at": "2026-03-01T10:00:00Z"}]),
        )
        .await;
        let dead = rejections(&t, &s, "reason_code=unknown_sku").await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        // The catalog gains the SKU: the parked level applies by itself.
        let (status, r) = t
            .put(
                "/v1/products/jacket",
                &s.api_key,
                &json!({"title": "Jacket", "url": "https://shop.example/jacket", "price": 5000, "currency": "EUR",
                        "variants": [{"sku": "NEW-1"}]}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(level(&t, &s, "NEW-1").await["available"], 6);
        let dead = rejections(&t, &s, "reason_code=unknown_sku&open=true").await;
        assert!(dead.is_empty(), "applied, no longer open: {dead:?}");

        // Under a "reject" profile it stays a dead letter until replayed by hand.
        put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "profile": {"unknown_sku": "reject"}}),
        )
        .await;
        t.stock(
            &s,
            json!([{"sku": "NEW-2", "available": 3, "observed_at": "2026-03-01T10:00:00Z"}]),
        )
        .await;
        t.put(
            "/v1/products/hat",
            &s.api_key,
            &json!({"title": "Hat", "url": "https://shop.example/hat", "price": 2000, "currency": "EUR",
                    "variants": [{"sku": "NEW-2"}]}),
        )
        .await;
        assert_eq!(
            level(&t, &s, "NEW-2").await["available"],
            0,
            "not applied by itself"
        );
        let (status, r) = t
            .post(
                "/v1/rejections/replay",
                &s.api_key,
                &json!({"reason_code": "unknown_sku", "sku": "NEW-2"}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["matched"], 1, "{r}");
        assert_eq!(r["applied"], 1, "{r}");
        assert_eq!(level(&t, &s, "NEW-2").await["available"], 3);
        t.stop().await;
    }
);

both_dbs!(
    placeholders_keep_stock_until_the_catalog_adopts_them,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("alpha").await;
        put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "profile": {"unknown_sku": "placeholder"}}),
        )
        .await;
        let r = t
            .stock(
                &s,
                json!([{"sku": "EARLY-1", "available": 9, "observed_at": "2026-03-01T10:00:00Z"}]),
            )
            .await;
        assert_eq!(r["rejected"].as_array().map(Vec::len), Some(0), "{r}");
        assert_eq!(level(&t, &s, "EARLY-1").await["available"], 9);
        // A sold-out placeholder takes no sign-ups: it has no price, page or title to
        // send a shopper, by SKU or by its placeholder product.
        t.stock(
            &s,
            json!([{"sku": "EARLY-0", "available": 0, "observed_at": "2026-03-01T10:00:00Z"}]),
        )
        .await;
        let (status, r) = t
            .subscribe(&s, json!({"email": "early@example.com", "sku": "EARLY-0"}))
            .await;
        assert_eq!(r["code"], "unknown_sku", "{status} {r}");
        let (status, r) = t
            .subscribe(
                &s,
                json!({"email": "early@example.com", "product": "restock-placeholder:EARLY-0"}),
            )
            .await;
        assert_eq!(r["code"], "unknown_product", "{status} {r}");
        // The real product names the SKU and adopts the variant with its stock.
        let (status, r) = t
            .put(
                "/v1/products/boot",
                &s.api_key,
                &json!({"title": "Boot", "url": "https://shop.example/boot", "price": 9000, "currency": "EUR",
                        "variants": [{"sku": "EARLY-1", "title": "41"}, {"sku": "EARLY-0", "title": "40"}]}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let skus: Vec<&str> = r["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .filter_map(|v| v["sku"].as_str())
            .collect();
        assert_eq!(skus, ["EARLY-1", "EARLY-0"], "{r}");
        assert_eq!(level(&t, &s, "EARLY-1").await["available"], 9);
        // Adopted, the sold-out variant takes sign-ups.
        let (status, r) = t
            .subscribe(&s, json!({"email": "early@example.com", "sku": "EARLY-0"}))
            .await;
        assert_eq!(status, 201, "{r}");
        // A second real product cannot take it from the first.
        let (status, r) = t
            .put(
                "/v1/products/other",
                &s.api_key,
                &json!({"title": "Other", "url": "https://shop.example/o", "price": 1, "currency": "EUR",
                        "variants": [{"sku": "EARLY-1"}]}),
            )
            .await;
        assert_eq!(status, 409, "{r}");
        t.stop().await;
    }
);

both_dbs!(
    dead_letters_count_repeats_and_rank_by_impact,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        put_source(
            &t,
            &s,
            "api",
            json!({"kind": "api", "profile": {"negative_quantity": "reject"}}),
        )
        .await;
        // Two shoppers wait for S-43 (119.00 each), none for S-42.
        for email in ["a@example.com", "b@example.com"] {
            let (status, r) = t
                .subscribe(&s, json!({"email": email, "sku": "S-43"}))
                .await;
            assert!(status == 201 || status == 200, "{r}");
        }
        let low = json!([{"sku": "S-42", "available": -1, "observed_at": "2026-03-01T10:00:00Z"}]);
        let high = json!([{"sku": "S-43", "available": -1, "observed_at": "2026-03-01T10:00:00Z"}]);
        t.stock(&s, low.clone()).await;
        t.stock(&s, high).await;
        t.advance(60_000);
        // The same bad line again counts on its first row.
        t.stock(&s, low).await;
        let ranked = rejections(&t, &s, "").await;
        assert_eq!(ranked.len(), 2, "{ranked:?}");
        assert_eq!(
            ranked[0]["payload"].as_str().map(|p| p.contains("S-43")),
            Some(true),
            "{ranked:?}"
        );
        assert_eq!(ranked[0]["waiting"], 2, "{ranked:?}");
        assert_eq!(ranked[0]["value_minor"], 2 * 11900, "{ranked:?}");
        assert_eq!(ranked[1]["waiting"], 0, "{ranked:?}");
        assert_eq!(ranked[1]["seen_count"], 2, "{ranked:?}");
        assert_eq!(
            ranked[1]["last_seen_at"].as_i64(),
            Some(ranked[1]["received_at"].as_i64().expect("received") + 60_000),
            "{ranked:?}"
        );
        // Filters.
        assert_eq!(rejections(&t, &s, "sku=S-42").await.len(), 1);
        assert_eq!(rejections(&t, &s, "source=shopify").await.len(), 0);
        let (status, r) = t.get("/v1/rejections?sku=", &s.api_key).await;
        assert_eq!(status, 400, "{r}");
        assert_eq!(r["code"], "invalid_query", "{r}");
        // After the fix (the profile now accepts them), replay all that match.
        put_source(&t, &s, "api", json!({"kind": "api"})).await;
        let (status, r) = t
            .post(
                "/v1/rejections/replay",
                &s.api_key,
                &json!({"reason_code": "negative_quantity"}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["matched"], 2, "{r}");
        assert_eq!(r["applied"], 2, "{r}");
        assert_eq!(level(&t, &s, "S-43").await["available"], -1);
        assert!(rejections(&t, &s, "open=true").await.is_empty());
        let (status, r) = t
            .post("/v1/rejections/replay", &s.api_key, &json!({"limit": 0}))
            .await;
        assert_eq!(status, 422, "{r}");
        t.stop().await;
    }
);

both_dbs!(
    the_operator_sees_sources_and_their_health_from_the_command_line,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("alpha").await;
        let other = t.create_store("beta").await;
        t.seed_catalog(&s).await;
        t.seed_catalog(&other).await;
        t.stock(
            &s,
            json!([{"sku": "S-42", "available": 3}, {"sku": "GONE", "available": 1}]),
        )
        .await;
        t.stock(&other, json!([{"sku": "S-43", "available": 2}]))
            .await;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_restock"))
            .args(["sources", "--store", "alpha"])
            .current_dir(t.db.dir.path())
            .env("RESTOCK_DATABASE__URL", &t.db.url)
            .output()
            .expect("run restock");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Vec<&str>> = stdout
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect())
            .collect();
        assert_eq!(rows.len(), 1, "only alpha's sources: {stdout}");
        let row = &rows[0];
        assert_eq!(&row[1..4], ["api", "api", "ok"], "{stdout}");
        // Applied 1, rejected 1 (the unknown SKU, parked).
        assert_eq!(&row[8..10], ["1", "1"], "{stdout}");
        t.stop().await;
    }
);

both_dbs!(
    a_source_that_goes_quiet_is_marked_stale_once_and_raises_an_event,
    |backend: Backend| async move {
        let t =
            TestApp::spawn_with(backend, "[intake]\nstale_after_secs = 60\ntick_ms = 50\n").await;
        let (tx, mut events) = tokio::sync::mpsc::channel(16);
        assert!(t.app.events.connect(tx));
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        t.stock(&s, json!([{"sku": "S-42", "available": 3}])).await;
        let status = |t: &TestApp| {
            let key = s.api_key.clone();
            let url = t.url("/v1/sources/api");
            let http = t.http.clone();
            async move {
                let r: Value = http
                    .get(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                r
            }
        };
        // Fresh within the limit, whatever the workers check.
        t.advance(59_000);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(status(&t).await["health"]["status"], "ok");
        // (The stock update raised restock.detected; only source.stale matters here.)
        let stale_events =
            |events: &mut tokio::sync::mpsc::Receiver<restock::events::OutboundEvent>| {
                std::iter::from_fn(|| events.try_recv().ok())
                    .filter(|e| e.event == "source.stale")
                    .count()
            };
        assert_eq!(stale_events(&mut events), 0, "no stale event while fresh");
        // Past it: stale, once.
        t.advance(2_000);
        let mut seen = Value::Null;
        for _ in 0..100 {
            seen = status(&t).await;
            if seen["health"]["status"] == "stale" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(seen["health"]["status"], "stale", "{seen}");
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("open");
        assert_eq!(e.event, "source.stale");
        assert_eq!(e.store_id, Some(s.id));
        assert_eq!(e.data["source"], "api");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(stale_events(&mut events), 0, "raised once per episode");
        let metrics = t
            .http
            .get(t.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("restock_source_stale_total{kind=\"api\"} 1"),
            "{metrics}"
        );
        // A delivery makes it fresh again.
        t.stock(&s, json!([{"sku": "S-42", "available": 4}])).await;
        assert_eq!(status(&t).await["health"]["status"], "ok");
        t.stop().await;
    }
);
