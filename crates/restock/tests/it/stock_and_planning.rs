//! Stock rules through the merchant API: thresholds and their fallback, the no-flap
//! band, ordering and replays, locations, temporary stock, re-checks before sending,
//! product-level alerts, and rejected items.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

async fn variant(t: &TestApp, store: &StoreKeys, sku: &str) -> Value {
    let (status, body) = t.get(&format!("/v1/variants/{sku}"), &store.api_key).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn at(second: u32) -> String {
    format!("2026-03-01T12:{:02}:{:02}Z", second / 60, second % 60)
}

async fn set(t: &TestApp, store: &StoreKeys, sku: &str, available: i64, second: u32) -> Value {
    t.stock(
        store,
        json!([{"sku": sku, "available": available, "observed_at": at(second)}]),
    )
    .await
}

both_dbs!(
    thresholds_fall_back_variant_product_category_store,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("thr").await;
        t.seed_catalog(&store).await;
        let (status, _) = t
            .call(
                Method::PATCH,
                "/v1/store",
                &store.api_key,
                Some(&json!({"min_stock": 4})),
            )
            .await;
        assert_eq!(status, 200);
        // Store minimum 4: 4 units is out of stock, 5 is in.
        set(&t, &store, "S-42", 4, 1).await;
        assert_eq!(variant(&t, &store, "S-42").await["state"], "out_of_stock");
        set(&t, &store, "S-42", 5, 2).await;
        assert_eq!(variant(&t, &store, "S-42").await["state"], "in_stock");
        set(&t, &store, "S-42", 0, 3).await;

        // The category (3) overrides the store.
        assert_eq!(
            t.put(
                "/v1/categories/shoes",
                &store.api_key,
                &json!({"name": "Shoes", "min_stock": 3})
            )
            .await
            .0,
            204
        );
        set(&t, &store, "S-42", 4, 4).await;
        assert_eq!(variant(&t, &store, "S-42").await["state"], "in_stock");
        set(&t, &store, "S-42", 3, 5).await;
        assert_eq!(variant(&t, &store, "S-42").await["state"], "out_of_stock");

        // The product (2) overrides the category; the variant (1) overrides the product.
        let mut product = common::shoe_product();
        product["min_stock"] = json!(2);
        product["variants"][0]["min_stock"] = json!(1);
        assert_eq!(
            t.put("/v1/products/shoe", &store.api_key, &product).await.0,
            200
        );
        set(&t, &store, "S-42", 2, 6).await;
        assert_eq!(
            variant(&t, &store, "S-42").await["state"],
            "in_stock",
            "variant minimum 1"
        );
        set(&t, &store, "S-43", 2, 7).await;
        assert_eq!(
            variant(&t, &store, "S-43").await["state"],
            "out_of_stock",
            "product minimum 2"
        );
        set(&t, &store, "S-43", 3, 8).await;
        assert_eq!(variant(&t, &store, "S-43").await["state"], "in_stock");
        t.stop().await;
    }
);

both_dbs!(
    notify_threshold_band_stops_flapping,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("flap").await;
        let mut product = common::shoe_product();
        product["variants"][0]["notify_threshold"] = json!(3);
        assert_eq!(
            t.put("/v1/products/shoe", &store.api_key, &product).await.0,
            200
        );
        set(&t, &store, "S-42", 0, 1).await;
        assert_eq!(
            t.subscribe(&store, json!({"email": "ann@example.com", "sku": "S-42"}))
                .await
                .0,
            201
        );

        // One returned unit does not wake the list.
        let body = set(&t, &store, "S-42", 2, 2).await;
        assert_eq!(body["restocks"], json!([]));
        assert_eq!(variant(&t, &store, "S-42").await["state"], "out_of_stock");
        assert_eq!(
            t.subscribe(&store, json!({"email": "bob@example.com", "sku": "S-42"}))
                .await
                .0,
            201
        );
        // Above the threshold: one restock; then wobbling 1..3 fires nothing more.
        let mut restocks = 0;
        for (i, qty) in [4, 1, 2, 3, 1, 4, 2].into_iter().enumerate() {
            let body = set(&t, &store, "S-42", qty, 3 + i as u32).await;
            restocks += body["restocks"].as_array().map_or(0, Vec::len);
        }
        assert_eq!(restocks, 1);
        let v = variant(&t, &store, "S-42").await;
        let transitions: Vec<(Value, Value)> = v["transitions"]
            .as_array()
            .expect("transitions")
            .iter()
            .map(|t| (t["to_state"].clone(), t["quantity"].clone()))
            .collect();
        assert_eq!(transitions, vec![(json!("in_stock"), json!(4))], "{v}");
        assert_eq!(v["transitions"][0]["cause"], "api");
        assert_eq!(t.run_pending().await, 2);

        // A real sell-out (to the minimum) re-arms it.
        set(&t, &store, "S-42", 0, 20).await;
        let body = set(&t, &store, "S-42", 5, 21).await;
        assert_eq!(body["restocks"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            t.planned(&store, &body).await,
            0,
            "both were notified already"
        );
        t.stop().await;
    }
);

both_dbs!(
    late_and_replayed_updates_never_win,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("order").await;
        t.seed_catalog(&store).await;
        set(&t, &store, "S-42", 7, 10).await;
        let body = set(&t, &store, "S-42", 0, 5).await;
        assert_eq!(
            (body["applied"].clone(), body["stale"].clone()),
            (json!(0), json!(1))
        );
        assert_eq!(variant(&t, &store, "S-42").await["available"], 7);

        // Replaying a whole batch changes nothing and fires nothing.
        let batch = json!([{"sku": "S-43", "available": 0, "observed_at": at(11)}, {"sku": "S-43", "available": 6, "location": "b", "observed_at": at(12)}]);
        let first = t.stock(&store, batch.clone()).await;
        assert_eq!(first["applied"], 2);
        let again = t.stock(&store, batch).await;
        assert_eq!(
            (
                again["applied"].clone(),
                again["stale"].clone(),
                again["restocks"].clone()
            ),
            (json!(0), json!(2), json!([]))
        );

        // Sequence numbers beat timestamps when both sides have one.
        let seq = |available: i64, sequence: i64, second: u32| json!([{"sku": "S-42", "location": "pos", "available": available, "sequence": sequence, "observed_at": at(second)}]);
        t.stock(&store, seq(3, 10, 50)).await;
        let body = t.stock(&store, seq(9, 9, 59)).await;
        assert_eq!(
            body["stale"], 1,
            "an older sequence with a newer clock is still older"
        );
        let body = t.stock(&store, seq(4, 11, 40)).await;
        assert_eq!(body["applied"], 1);

        // Availability is the sum over locations: 7 (default) + 4 (pos).
        let v = variant(&t, &store, "S-42").await;
        assert_eq!(v["available"], 11, "{v}");
        assert_eq!(v["levels"].as_array().map(Vec::len), Some(2));
        t.stop().await;
    }
);

both_dbs!(
    a_variant_sold_out_again_before_sending_waits_for_the_next_restock,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("resold").await;
        t.seed_catalog(&store).await;
        set(&t, &store, "S-42", 0, 1).await;
        assert_eq!(
            t.subscribe(&store, json!({"email": "ann@example.com", "sku": "S-42"}))
                .await
                .0,
            201
        );
        assert_eq!(
            t.planned(&store, &set(&t, &store, "S-42", 2, 2).await)
                .await,
            1
        );
        set(&t, &store, "S-42", 0, 3).await;
        assert_eq!(t.run_pending().await, 1);
        assert!(
            t.sent_files().is_empty(),
            "nothing sent for stock that is gone"
        );
        let (_, skipped) = t
            .get("/v1/notifications?state=skipped", &store.api_key)
            .await;
        assert!(
            skipped["items"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("sold out again")),
            "{skipped}"
        );
        let (_, subs) = t.get("/v1/subscriptions", &store.api_key).await;
        assert_eq!(subs["items"][0]["status"], "waiting");

        assert_eq!(
            t.planned(&store, &set(&t, &store, "S-42", 3, 4).await)
                .await,
            1
        );
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), vec!["ann@example.com"]);
        t.stop().await;
    }
);

both_dbs!(
    temporary_stock_shows_its_end_and_expires_before_sending,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("temp").await;
        t.seed_catalog(&store).await;
        set(&t, &store, "S-42", 0, 1).await;
        set(&t, &store, "S-43", 0, 1).await;
        for sku in ["S-42", "S-43"] {
            assert_eq!(
                t.subscribe(&store, json!({"email": "ann@example.com", "sku": sku}))
                    .await
                    .0,
                201
            );
        }
        // S-42: seasonal stock until tomorrow noon. S-43: only for the next minute.
        t.stock(&store, json!([
        {"sku": "S-42", "available": 5, "observed_at": at(2), "available_until": "2026-03-02T12:00:00Z"},
        {"sku": "S-43", "available": 5, "observed_at": at(2), "available_until": "2026-03-01T12:01:00Z"}
    ]))
    .await;
        assert_eq!(
            variant(&t, &store, "S-42").await["available_until"],
            "2026-03-02T12:00:00.000Z"
        );
        t.advance(120_000);
        // S-43's stock expired before its restock was planned: nothing is planned for it.
        assert_eq!(t.run_pending().await, 1);
        let files = t.sent_files();
        assert_eq!(files.len(), 1, "the expired stock was not announced");
        let (_, restocks) = t.get("/v1/restocks", &store.api_key).await;
        let s43 = restocks
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["sku"] == "S-43")
            .expect("S-43 restock")
            .clone();
        assert_eq!(
            (s43["plan_state"].clone(), s43["planned"].clone()),
            (json!("sold_out"), json!(0)),
            "{s43}"
        );
        let msg = mail_parser::MessageParser::default()
            .parse(&files[0])
            .expect("MIME");
        assert!(msg.subject().is_some_and(|s| s.contains("(42)")));
        assert!(
            msg.body_text(0)
                .is_some_and(|b| b.contains("Available until 2 March 2026, 12:00 UTC"))
        );
        t.stop().await;
    }
);

both_dbs!(
    product_level_alert_fires_once_across_variants,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("prod").await;
        t.seed_catalog(&store).await;
        t.stock(&store, json!([{"sku": "S-42", "available": 0, "observed_at": at(1)}, {"sku": "S-43", "available": 0, "observed_at": at(1)}])).await;
        assert_eq!(
            t.subscribe(
                &store,
                json!({"email": "ann@example.com", "product": "shoe"})
            )
            .await
            .0,
            201
        );
        assert_eq!(
            t.planned(&store, &set(&t, &store, "S-43", 4, 2).await)
                .await,
            1
        );
        assert_eq!(
            t.planned(&store, &set(&t, &store, "S-42", 4, 3).await)
                .await,
            0,
            "already on its way"
        );
        assert_eq!(t.run_pending().await, 1);
        let msg = mail_parser::MessageParser::default()
            .parse(&t.sent_files()[0])
            .expect("MIME")
            .subject()
            .map(str::to_string);
        assert_eq!(
            msg.as_deref(),
            Some("Trail Shoe (43) is back in stock"),
            "names the variant that came back"
        );
        t.stop().await;
    }
);

both_dbs!(
    bad_items_are_rejected_one_by_one_and_kept_for_replay,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("rej").await;
        t.seed_catalog(&store).await;
        let body = t
            .stock(
                &store,
                json!([
                    {"sku": "S-42", "available": 3},
                    {"sku": "S-99", "available": 8},
                    {"sku": "S-43", "available": 1, "observed_at": "yesterday"},
                    {"sku": "S-43", "available": 1, "incoming": -2},
                    {"sku": "S-43", "available": 1, "colour": "red"},
                    "not an object"
                ]),
            )
            .await;
        assert_eq!(body["applied"], 1);
        let rejected: Vec<(Value, Value)> = body["rejected"]
            .as_array()
            .expect("rejected")
            .iter()
            .map(|r| (r["index"].clone(), r["code"].clone()))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (json!(1), json!("unknown_sku")),
                (json!(2), json!("invalid_time")),
                (json!(3), json!("invalid_quantity")),
                (json!(4), json!("invalid_item")),
                (json!(5), json!("invalid_item")),
            ]
        );
        let (_, kept) = t.get("/v1/rejections", &store.api_key).await;
        let kept = kept["items"].clone();
        assert_eq!(kept.as_array().map(Vec::len), Some(5), "{kept}");
        let unknown = body["rejected"][0]["rejection_id"].as_i64().expect("id");

        // Add the variant: the parked update applies by itself (the default
        // profile), and replaying it by hand then finds nothing newer to apply.
        let mut product = common::shoe_product();
        product["variants"]
            .as_array_mut()
            .expect("variants")
            .push(json!({"sku": "S-99", "title": "99"}));
        assert_eq!(
            t.put("/v1/products/shoe", &store.api_key, &product).await.0,
            200
        );
        assert_eq!(variant(&t, &store, "S-99").await["available"], 8);
        let (_, kept) = t.get("/v1/rejections?sort=newest", &store.api_key).await;
        let parked = kept["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|r| r["id"].as_i64() == Some(unknown))
            .cloned()
            .expect("kept");
        assert_eq!(
            parked["replay_result"]
                .as_str()
                .map(|r| r.starts_with("applied")),
            Some(true),
            "{parked}"
        );
        let (status, r) = t
            .post(
                &format!("/v1/rejections/{unknown}/replay"),
                &store.api_key,
                &json!({}),
            )
            .await;
        assert_eq!((status, r["result"].clone()), (200, json!("stale")), "{r}");
        assert_eq!(variant(&t, &store, "S-99").await["available"], 8);

        // Too large a batch is refused whole.
        let items: Vec<Value> = (0..10_001)
            .map(|i| json!({"sku": format!("X-{i}"), "available": 1}))
            .collect();
        let (status, body) = t
            .post("/v1/stock", &store.api_key, &json!({"items": items}))
            .await;
        assert_eq!(
            (status, body["code"].clone()),
            (413, json!("batch_too_large"))
        );
        t.stop().await;
    }
);

both_dbs!(
    lowering_a_threshold_in_the_catalog_can_restock,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("cat").await;
        let mut product = common::shoe_product();
        product["min_stock"] = json!(5);
        assert_eq!(
            t.put("/v1/products/shoe", &store.api_key, &product).await.0,
            200
        );
        set(&t, &store, "S-42", 3, 1).await;
        assert_eq!(
            t.subscribe(&store, json!({"email": "ann@example.com", "sku": "S-42"}))
                .await
                .0,
            201
        );
        product["min_stock"] = json!(1);
        assert_eq!(
            t.put("/v1/products/shoe", &store.api_key, &product).await.0,
            200
        );
        let v = variant(&t, &store, "S-42").await;
        assert_eq!(v["state"], "in_stock");
        assert_eq!(v["transitions"][0]["cause"], "catalog");
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), vec!["ann@example.com"]);
        t.stop().await;
    }
);
