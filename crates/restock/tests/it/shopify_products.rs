//! Shopify's product webhooks (`products/create`, `products/update`,
//! `products/delete`) keep the catalog and the inventory item → variant mapping in
//! step with the shop. The payload is the REST Admin Product resource
//! (`tests/fixtures/shopify/product.json`); signatures come from Python's hmac.

use crate::common;

use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

const FIXTURE: &str = include_str!("../fixtures/shopify/product.json");
const DOMAIN: &str = "jadepuma.myshopify.com";

/// The fixture product, changed by `edit`, as the compact JSON Shopify sends.
fn product(edit: impl FnOnce(&mut Value)) -> String {
    let mut p: Value = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    edit(&mut p);
    p.to_string()
}

/// The fixture as of `updated_at`.
fn product_at(updated_at: &str, edit: impl FnOnce(&mut Value)) -> String {
    product(|p| {
        p["updated_at"] = json!(updated_at);
        edit(p);
    })
}

/// Drops the variant with this SKU from the product (details and `variant_gids`).
fn without_variant(p: &mut Value, sku: &str) {
    let variants = p["variants"].as_array_mut().expect("variants");
    let pos = variants
        .iter()
        .position(|v| v["sku"] == sku)
        .expect("variant");
    let gone = variants.remove(pos);
    let gid = gone["admin_graphql_api_id"].clone();
    p["variant_gids"]
        .as_array_mut()
        .expect("variant_gids")
        .retain(|g| g["admin_graphql_api_id"] != gid);
}

fn inventory(item: u64, available: i64, updated_at: &str) -> String {
    json!({"inventory_item_id": item, "location_id": 24826418, "available": available,
           "updated_at": updated_at,
           "admin_graphql_api_id": format!("gid://shopify/InventoryLevel/24826418?inventory_item_id={item}")})
    .to_string()
}

fn secret(store: &StoreKeys) -> String {
    format!("shpss_{}", store.slug)
}

/// Posts a delivery with Shopify's headers; `signature` None sends none.
async fn deliver(
    t: &TestApp,
    slug: &str,
    topic: &str,
    delivery: Option<&str>,
    body: &str,
    signature: Option<&str>,
) -> (u16, Value) {
    let mut req = t
        .http
        .post(t.url(&format!("/webhooks/shopify/{slug}")))
        .header("content-type", "application/json")
        .header("x-shopify-topic", topic)
        .header("x-shopify-shop-domain", DOMAIN)
        .header("x-shopify-api-version", "2024-07")
        .body(body.to_string());
    if let Some(id) = delivery {
        req = req.header("x-shopify-webhook-id", id);
    }
    if let Some(sig) = signature {
        req = req.header("x-shopify-hmac-sha256", sig);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Delivers `body` signed with the store's secret by Python's hmac.
async fn signed(t: &TestApp, store: &StoreKeys, topic: &str, body: &str) -> (u16, Value) {
    let sig = common::python_signature(&secret(store), body);
    deliver(t, &store.slug, topic, None, body, Some(&sig)).await
}

async fn set_currency(t: &TestApp, store: &StoreKeys, currency: &str) {
    let (status, r) = t
        .call(
            reqwest::Method::PATCH,
            "/v1/store",
            &store.api_key,
            Some(&json!({ "currency": currency })),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["currency"], currency, "{r}");
}

async fn catalog_product(t: &TestApp, store: &StoreKeys, id: &str) -> Value {
    let (status, p) = t.get(&format!("/v1/products/{id}"), &store.api_key).await;
    assert_eq!(status, 200, "{p}");
    p
}

fn variant<'p>(product: &'p Value, sku: &str) -> &'p Value {
    product["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["sku"] == sku))
        .unwrap_or_else(|| panic!("no variant {sku} in {product}"))
}

async fn rejections(t: &TestApp, store: &StoreKeys) -> Vec<Value> {
    let (status, r) = t.get("/v1/rejections", &store.api_key).await;
    assert_eq!(status, 200, "{r}");
    r["items"].as_array().cloned().unwrap_or_default()
}

async fn replay(t: &TestApp, store: &StoreKeys, id: i64) -> Value {
    let (status, r) = t
        .post(
            &format!("/v1/rejections/{id}/replay"),
            &store.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    r
}

async fn shop(t: &TestApp) -> StoreKeys {
    let store = t.create_store("shop").await;
    set_currency(t, &store, "USD").await;
    store
}

both_dbs!(
    a_created_product_fills_the_catalog_and_maps_inventory_items,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = shop(&t).await;
        let (status, r) = signed(&t, &store, "products/create", FIXTURE).await;
        assert_eq!(
            (status, r["result"].clone(), r["product"].clone()),
            (200, json!("applied"), json!("632910392")),
            "{r}"
        );

        let p = catalog_product(&t, &store, "632910392").await;
        assert_eq!(p["title"], "IPod Nano - 8GB");
        let description = p["description"].as_str().unwrap_or_default();
        assert!(
            description.starts_with("It's the small iPod with one very big idea: Video.")
                && !description.contains("<p>"),
            "{description}"
        );
        assert_eq!(
            p["image_url"],
            "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/ipod-nano.png?v=1706740930"
        );
        assert_eq!(p["url"], format!("https://{DOMAIN}/products/ipod-nano"));
        assert_eq!(
            (p["price"].clone(), p["currency"].clone()),
            (json!(19900), json!("USD"))
        );
        assert_eq!(p["category"], "Cult Products");
        assert_eq!(p["status"], "active");
        let skus: Vec<&str> = p["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .filter_map(|v| v["sku"].as_str())
            .collect();
        assert_eq!(
            skus,
            [
                "IPOD2008PINK",
                "IPOD2008RED",
                "IPOD2008GREEN",
                "shopify-457924702"
            ],
            "a variant without a SKU is keyed by its Shopify id"
        );
        let pink = variant(&p, "IPOD2008PINK");
        assert_eq!(pink["inventory_item_id"], "808950810");
        assert_eq!(pink["price"], 19900);
        assert_eq!(pink["options"], json!({"Color": "Pink"}));
        assert_eq!(pink["title"], "Pink");
        assert_eq!(
            pink["url"],
            format!("https://{DOMAIN}/products/ipod-nano?variant=808950810")
        );
        assert_eq!(
            pink["image_url"],
            "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/ipod-nano-pink.png?v=1706740930"
        );
        assert_eq!(variant(&p, "IPOD2008RED")["price"], 20950, "209.50 exactly");
        assert_eq!(
            variant(&p, "shopify-457924702")["inventory_policy"],
            "backorder",
            "Shopify's inventory_policy continue sells while out of stock"
        );

        // A shopper waits for the pink one; Shopify then reports its stock by
        // inventory item, which nobody mapped by hand.
        assert_eq!(
            t.subscribe(
                &store,
                json!({"email": "ann@example.com", "sku": "IPOD2008PINK"})
            )
            .await
            .0,
            201
        );
        let (status, r) = signed(
            &t,
            &store,
            "inventory_levels/update",
            &inventory(808950810, 5, "2024-01-02T10:00:00+00:00"),
        )
        .await;
        assert_eq!(
            (status, r["result"].clone(), r["sku"].clone()),
            (200, json!("restocked"), json!("IPOD2008PINK")),
            "{r}"
        );
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), vec!["ann@example.com"]);
        assert!(rejections(&t, &store).await.is_empty());
        t.stop().await;
    }
);

both_dbs!(
    updates_apply_in_shopify_order_and_removed_variants_are_kept,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = shop(&t).await;
        assert_eq!(signed(&t, &store, "products/create", FIXTURE).await.0, 200);
        // Green is in stock before it is removed.
        let (_, r) = signed(
            &t,
            &store,
            "inventory_levels/update",
            &inventory(39072856, 3, "2024-01-01T01:00:00+00:00"),
        )
        .await;
        assert_eq!(r["result"], "restocked", "{r}");

        let newer = product_at("2024-01-02T00:00:00+00:00", |p| {
            p["title"] = json!("IPod Nano - 16GB");
            p["variants"][0]["price"] = json!("189.00");
        });
        let (status, r) = signed(&t, &store, "products/update", &newer).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("applied")),
            "{r}"
        );
        let p = catalog_product(&t, &store, "632910392").await;
        assert_eq!(p["title"], "IPod Nano - 16GB");
        assert_eq!(variant(&p, "IPOD2008PINK")["price"], 18900);
        assert_eq!(p["price"], 18900, "the lowest variant price");

        // An older update delivered late changes nothing.
        let older = product_at("2024-01-01T12:00:00+00:00", |p| {
            p["title"] = json!("IPod Nano - old");
            p["variants"][0]["price"] = json!("99.00");
        });
        let (status, r) = signed(&t, &store, "products/update", &older).await;
        assert_eq!((status, r["result"].clone()), (200, json!("stale")), "{r}");
        let p = catalog_product(&t, &store, "632910392").await;
        assert_eq!(p["title"], "IPod Nano - 16GB");
        assert_eq!(variant(&p, "IPOD2008PINK")["price"], 18900);

        // A delivery id seen before is answered as a duplicate and not applied again.
        let once = product_at("2024-01-03T00:00:00+00:00", |p| p["title"] = json!("Once"));
        let sig = common::python_signature(&secret(&store), &once);
        let (_, r) = deliver(
            &t,
            &store.slug,
            "products/update",
            Some("b54557e4-1"),
            &once,
            Some(&sig),
        )
        .await;
        assert_eq!(r["result"], "applied", "{r}");
        let again = product_at("2024-01-04T00:00:00+00:00", |p| p["title"] = json!("Twice"));
        let sig = common::python_signature(&secret(&store), &again);
        let (status, r) = deliver(
            &t,
            &store.slug,
            "products/update",
            Some("b54557e4-1"),
            &again,
            Some(&sig),
        )
        .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("duplicate")),
            "{r}"
        );
        assert_eq!(
            catalog_product(&t, &store, "632910392").await["title"],
            "Once"
        );

        // The shop drops the green variant: it is kept, removed, out of stock, and
        // takes no new sign-ups; the product still does.
        let (status, r) = signed(
            &t,
            &store,
            "products/update",
            &product_at("2024-01-05T00:00:00+00:00", |p| {
                without_variant(p, "IPOD2008GREEN")
            }),
        )
        .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("applied")),
            "{r}"
        );
        assert!(
            r["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("IPOD2008GREEN"),
            "{r}"
        );
        let (status, green) = t.get("/v1/variants/IPOD2008GREEN", &store.api_key).await;
        assert_eq!(status, 200, "{green}");
        assert!(green["removed_at"].is_string(), "{green}");
        assert_eq!(green["state"], "out_of_stock", "{green}");
        assert_eq!(
            green["levels"][0]["available"], 3,
            "its levels are kept: {green}"
        );
        let (status, r) = t
            .subscribe(
                &store,
                json!({"email": "bo@example.com", "sku": "IPOD2008GREEN"}),
            )
            .await;
        assert_eq!(
            (status, r["code"].clone()),
            (409, json!("discontinued")),
            "{r}"
        );
        let (status, r) = t
            .subscribe(
                &store,
                json!({"email": "bo@example.com", "product": "632910392"}),
            )
            .await;
        assert_eq!(status, 201, "{r}");
        let p = catalog_product(&t, &store, "632910392").await;
        assert!(variant(&p, "IPOD2008PINK")["removed_at"].is_null(), "{p}");
        t.stop().await;
    }
);

both_dbs!(
    a_draft_product_announces_nothing_until_it_is_active,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = shop(&t).await;
        let draft = product(|p| p["status"] = json!("draft"));
        let (_, r) = signed(&t, &store, "products/create", &draft).await;
        assert_eq!(r["result"], "applied", "{r}");
        assert_eq!(
            catalog_product(&t, &store, "632910392").await["status"],
            "draft"
        );
        assert_eq!(
            t.subscribe(
                &store,
                json!({"email": "cy@example.com", "sku": "IPOD2008RED"})
            )
            .await
            .0,
            201
        );
        let (_, r) = signed(
            &t,
            &store,
            "inventory_levels/update",
            &inventory(49148385, 7, "2024-01-01T02:00:00+00:00"),
        )
        .await;
        assert_eq!(r["result"], "applied", "stock recorded, no restock: {r}");
        let (_, red) = t.get("/v1/variants/IPOD2008RED", &store.api_key).await;
        assert_eq!(red["state"], "out_of_stock", "{red}");
        assert_eq!(red["levels"][0]["available"], 7, "{red}");
        assert_eq!(t.run_pending().await, 0);

        let active = product_at("2024-01-02T00:00:00+00:00", |_| {});
        let (_, r) = signed(&t, &store, "products/update", &active).await;
        assert_eq!(r["result"], "applied", "{r}");
        let (_, red) = t.get("/v1/variants/IPOD2008RED", &store.api_key).await;
        assert_eq!(red["state"], "in_stock", "{red}");
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), vec!["cy@example.com"]);
        t.stop().await;
    }
);

both_dbs!(
    a_deleted_product_keeps_its_history_and_takes_no_sign_ups,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = shop(&t).await;
        assert_eq!(signed(&t, &store, "products/create", FIXTURE).await.0, 200);
        assert_eq!(
            t.subscribe(
                &store,
                json!({"email": "di@example.com", "sku": "IPOD2008PINK"})
            )
            .await
            .0,
            201
        );
        let (status, r) = signed(&t, &store, "products/delete", r#"{"id":632910392}"#).await;
        assert_eq!(
            (status, r["result"].clone(), r["product"].clone()),
            (200, json!("deleted"), json!("632910392")),
            "{r}"
        );
        let p = catalog_product(&t, &store, "632910392").await;
        assert_eq!(p["status"], "deleted");
        assert!(
            p["variants"]
                .as_array()
                .expect("variants")
                .iter()
                .all(|v| v["removed_at"].is_string()),
            "{p}"
        );
        for body in [
            json!({"email": "ed@example.com", "sku": "IPOD2008PINK"}),
            json!({"email": "ed@example.com", "product": "632910392"}),
        ] {
            let (status, r) = t.subscribe(&store, body).await;
            assert_eq!(
                (status, r["code"].clone()),
                (409, json!("discontinued")),
                "{r}"
            );
        }
        // An update delivered after the delete does not bring it back.
        let late = product_at("2024-02-01T00:00:00+00:00", |_| {});
        let (status, r) = signed(&t, &store, "products/update", &late).await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("ignored")),
            "{r}"
        );
        assert_eq!(
            catalog_product(&t, &store, "632910392").await["status"],
            "deleted"
        );
        // Stock that still arrives is recorded but announces nothing.
        let (_, r) = signed(
            &t,
            &store,
            "inventory_levels/update",
            &inventory(808950810, 4, "2024-02-01T00:00:00+00:00"),
        )
        .await;
        assert_eq!(r["result"], "applied", "{r}");
        assert_eq!(t.run_pending().await, 0);
        assert!(t.sent_recipients().is_empty());
        // A product the catalog never held: its deletion is recorded all the same.
        let (status, r) = signed(
            &t,
            &store,
            "products/delete",
            r#"{"id":788032119674292922}"#,
        )
        .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("deleted")),
            "{r}"
        );
        let (status, r) = signed(
            &t,
            &store,
            "products/create",
            &product(|p| p["id"] = json!(788032119674292922_u64)),
        )
        .await;
        assert_eq!(
            (status, r["result"].clone()),
            (200, json!("ignored")),
            "{r}"
        );
        t.stop().await;
    }
);

both_dbs!(
    a_product_made_by_hand_is_taken_over_with_its_sign_ups,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = shop(&t).await;
        let by_hand = json!({
            "title": "iPod nano", "url": "https://shop.example/ipod", "price": 19900,
            "currency": "USD", "min_stock": 2,
            "variants": [{"sku": "IPOD2008PINK", "title": "pink"}]
        });
        assert_eq!(
            t.put("/v1/products/ipod", &store.api_key, &by_hand).await.0,
            200
        );
        assert_eq!(
            t.subscribe(
                &store,
                json!({"email": "fay@example.com", "product": "ipod"})
            )
            .await
            .0,
            201
        );
        let (_, r) = signed(&t, &store, "products/create", FIXTURE).await;
        assert_eq!(
            (r["result"].clone(), r["product"].clone()),
            (json!("applied"), json!("ipod")),
            "{r}"
        );
        let p = catalog_product(&t, &store, "ipod").await;
        assert_eq!(p["title"], "IPod Nano - 8GB");
        assert_eq!(p["min_stock"], 2, "settings only Restock has are kept");
        assert_eq!(p["variants"].as_array().map(Vec::len), Some(4));
        assert_eq!(
            variant(&p, "IPOD2008PINK")["inventory_item_id"],
            "808950810"
        );
        assert_eq!(t.get("/v1/products/632910392", &store.api_key).await.0, 404);
        let (_, r) = signed(
            &t,
            &store,
            "inventory_levels/update",
            &inventory(808950810, 5, "2024-01-02T10:00:00+00:00"),
        )
        .await;
        assert_eq!(r["result"], "restocked", "{r}");
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), vec!["fay@example.com"]);
        t.stop().await;
    }
);

both_dbs!(
    forged_product_deliveries_change_nothing,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = shop(&t).await;
        let other = t.create_store("other").await;
        let altered = product(|p| p["title"] = json!("Forged"));
        let cases = [
            ("missing signature", FIXTURE.to_string(), None),
            (
                "another store's secret",
                FIXTURE.to_string(),
                Some(common::python_signature(&secret(&other), FIXTURE)),
            ),
            (
                "body altered after signing",
                altered,
                Some(common::python_signature(&secret(&store), FIXTURE)),
            ),
        ];
        for (what, body, sig) in cases {
            for topic in ["products/create", "products/delete"] {
                let (status, r) =
                    deliver(&t, &store.slug, topic, None, &body, sig.as_deref()).await;
                assert_eq!(
                    (status, r["code"].clone()),
                    (401, json!("invalid_signature")),
                    "{what} {topic}: {r}"
                );
            }
        }
        assert_eq!(t.get("/v1/products/632910392", &store.api_key).await.0, 404);
        assert!(
            rejections(&t, &store).await.is_empty(),
            "unauthenticated input is not kept"
        );
        t.stop().await;
    }
);

both_dbs!(
    unreadable_product_deliveries_are_kept_and_replayable,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("shop").await;
        // No currency yet: Shopify's prices name none, so the delivery is kept.
        let (status, r) = signed(&t, &store, "products/create", FIXTURE).await;
        assert_eq!(
            (status, r["code"].clone()),
            (422, json!("store_setting_missing")),
            "{r}"
        );
        let kept = rejections(&t, &store).await;
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0]["source"], "shopify_products");
        assert_eq!(kept[0]["reason_code"], "store_setting_missing");
        assert_eq!(kept[0]["payload"], FIXTURE, "kept whole");
        let id = kept[0]["id"].as_i64().expect("id");
        let r = replay(&t, &store, id).await;
        assert_eq!(r["result"], "rejected", "{r}");
        assert_eq!(
            rejections(&t, &store).await.len(),
            1,
            "a replay never multiplies"
        );
        set_currency(&t, &store, "USD").await;
        let r = replay(&t, &store, id).await;
        assert_eq!(r["result"], "applied", "{r}");
        assert_eq!(
            catalog_product(&t, &store, "632910392").await["price"],
            19900
        );

        // Payloads that are not a product stay rejected however often replayed.
        let broken = [
            (
                "products/update",
                FIXTURE[..FIXTURE.len() / 2].to_string(),
                "invalid_payload",
                "shopify_products",
            ),
            (
                "products/update",
                product_at("2024-03-01T00:00:00+00:00", |p| {
                    p["variants"][1]["price"] = json!(209.5)
                }),
                "invalid_payload",
                "shopify_products",
            ),
            (
                "products/update",
                product_at("2024-03-01T00:00:00+00:00", |p| {
                    p["title"] = json!("Nano\u{0}")
                }),
                "invalid_value",
                "shopify_products",
            ),
            (
                "products/delete",
                r#"{"id":"one"}"#.to_string(),
                "invalid_payload",
                "shopify_product_deletes",
            ),
        ];
        for (topic, body, code, source) in broken {
            let (status, r) = signed(&t, &store, topic, &body).await;
            assert_eq!(
                (status, r["code"].clone()),
                (422, json!(code)),
                "{topic}: {r}"
            );
            let kept = rejections(&t, &store).await;
            assert_eq!(kept[0]["source"], source, "{kept:?}");
            assert_eq!(kept[0]["payload"], body.as_str());
            let before = kept.len();
            let r = replay(&t, &store, kept[0]["id"].as_i64().expect("id")).await;
            assert_eq!(r["result"], "rejected", "{r}");
            assert_eq!(rejections(&t, &store).await.len(), before);
        }
        let p = catalog_product(&t, &store, "632910392").await;
        assert_eq!(
            (
                p["title"].clone(),
                variant(&p, "IPOD2008RED")["price"].clone()
            ),
            (json!("IPod Nano - 8GB"), json!(20950))
        );
        t.stop().await;
    }
);
