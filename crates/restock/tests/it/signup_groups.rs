//! Sign-ups committed in groups (SQLite's writer; the same storage call on
//! PostgreSQL): each sign-up of a group gets its own answer, one that fails leaves
//! nothing behind and fails nothing else, and many shoppers signing up at once are
//! each answered as if alone.

use crate::common;

use common::{Backend, TestApp, TestDb};
use restock::storage::demand::{SignUp, SubscribeOutcome, Target};
use restock::storage::signup_writer::SignUpWriter;
use restock::storage::stores::NewStore;
use restock_core::ids::{ProductId, StoreId, VariantId};
use restock_core::values::Email;
use serde_json::json;

fn signup(email: &str, product: ProductId, variant: VariantId) -> SignUp {
    SignUp {
        email: Email::parse(email).expect("email"),
        target: Target::Variant { product, variant },
        market: None,
        source: "test".into(),
        consent: Default::default(),
        time_zone: None,
        anonymous: true,
    }
}

both_dbs!(
    a_failing_signup_fails_alone_in_its_group,
    |backend: Backend| async move {
        let t = TestDb::new(backend).await;
        let db = &t.db;
        let store = db
            .create_store(
                NewStore {
                    name: "G",
                    slug: "g",
                    allowed_origins: &[],
                    shopify_secret: None,
                    woocommerce_secret: None,
                },
                0,
            )
            .await
            .expect("store")
            .store
            .store_id();
        let product = restock::storage::catalog::ProductInput {
            external_id: "p".into(),
            title: "P".into(),
            description: String::new(),
            image_url: None,
            url: restock_core::values::HttpUrl::parse("https://shop.example/p").expect("url"),
            category: None,
            price_minor: 100,
            currency: restock_core::values::Currency::parse("EUR").expect("currency"),
            min_stock: None,
            notify_threshold: None,
            release: None,
            variants: vec![restock::storage::catalog::VariantInput {
                sku: restock_core::values::Sku::parse("V").expect("sku"),
                title: "V".into(),
                options: Default::default(),
                price_minor: None,
                image_url: None,
                url: None,
                min_stock: None,
                notify_threshold: None,
                inventory_item_id: None,
                inventory_policy: Default::default(),
            }],
        };
        let (product, _) = db
            .upsert_product(store, &product, 0)
            .await
            .expect("product");
        let variant = VariantId(
            db.variant_by_sku(store, "V")
                .await
                .expect("q")
                .expect("v")
                .id,
        );

        let ann = signup("ann@example.com", product, variant);
        // A variant that does not exist: the sign-up's insert breaks a foreign key.
        let bad = signup("bob@example.com", product, VariantId(variant.0 + 1_000));
        let again = signup("ann@example.com", product, variant);
        let cy = signup("cy@example.com", product, variant);
        let email = |e: &str| Email::parse(e).expect("email");

        // As one group: the bad one rolls the group back, nothing is written.
        let group = [
            (store, &ann, 10),
            (store, &bad, 10),
            (store, &again, 11),
            (store, &cy, 11),
        ];
        assert_eq!(db.subscribe_group(&group).await.expect("group"), None);
        assert!(
            db.shopper_by_email(store, &email("ann@example.com"))
                .await
                .expect("q")
                .is_none(),
            "a rolled-back group left a shopper behind"
        );

        // Through the writer, at once (one group on SQLite): each gets its own answer.
        let writer = SignUpWriter::start(db.clone());
        let (a, b, d) = tokio::join!(
            writer.subscribe(store, &ann, 10),
            writer.subscribe(store, &bad, 10),
            writer.subscribe(store, &cy, 11),
        );
        let c = writer.subscribe(store, &again, 11).await;
        let Ok(SubscribeOutcome::Created(first, ann_id)) = a else {
            panic!("ann: {a:?}");
        };
        assert!(b.is_err(), "bob: {b:?}");
        assert_eq!(
            c.ok(),
            Some(SubscribeOutcome::Merged(first, ann_id)),
            "the same shopper again is merged"
        );
        assert!(matches!(d, Ok(SubscribeOutcome::Created(..))), "cy: {d:?}");
        assert!(
            db.shopper_by_email(store, &email("bob@example.com"))
                .await
                .expect("q")
                .is_none(),
            "the failed sign-up left its shopper behind"
        );
        let waiting = db
            .subscriptions(store, None, Some("waiting"), 0, 100)
            .await
            .expect("list");
        assert_eq!(waiting.len(), 2, "{waiting:?}");
        t.cleanup().await;
    }
);

both_dbs!(
    concurrent_storefront_signups_are_each_answered,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("many").await;
        t.seed_catalog(&store).await;
        t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
            .await;
        // 48 shoppers at once, each twice (the second is a merge), and an address
        // that opted out of everything, which an anonymous sign-up cannot put back.
        let (status, _) = t
            .subscribe(&store, json!({"email": "gone@example.com", "sku": "S-42"}))
            .await;
        assert_eq!(status, 201);
        let gone = t
            .app
            .db
            .shopper_by_email(
                StoreId(store.id),
                &Email::parse("gone@example.com").expect("email"),
            )
            .await
            .expect("q")
            .expect("shopper");
        let (status, body) = t
            .put(
                &format!("/v1/shoppers/{}/preferences", gone.id),
                &store.api_key,
                &json!({"all": false}),
            )
            .await;
        assert_eq!(status, 200, "{body}");

        let first = futures::future::join_all((0..48).map(|i| {
            let t = &t;
            let store = &store;
            async move {
                t.subscribe(
                    store,
                    json!({"email": format!("s{i}@example.com"), "sku": "S-42"}),
                )
                .await
            }
        }));
        let (first, refused) = tokio::join!(
            first,
            t.subscribe(&store, json!({"email": "gone@example.com", "sku": "S-42"}))
        );
        assert_eq!(refused.0, 409, "{}", refused.1);
        assert_eq!(refused.1["code"], json!("confirmation_required"));
        for (status, body) in &first {
            assert_eq!(
                (*status, body["status"].clone()),
                (201, json!("created")),
                "{body}"
            );
        }
        let second = futures::future::join_all((0..48).map(|i| {
            let t = &t;
            let store = &store;
            async move {
                t.subscribe(
                    store,
                    json!({"email": format!("s{i}@example.com"), "sku": "S-42"}),
                )
                .await
            }
        }))
        .await;
        for (i, (status, body)) in second.iter().enumerate() {
            assert_eq!(
                (*status, body["status"].clone()),
                (200, json!("merged")),
                "{body}"
            );
            assert_eq!(
                body["subscription_id"], first[i].1["subscription_id"],
                "merged into another sign-up"
            );
        }
        let waiting = t
            .app
            .db
            .subscriptions(StoreId(store.id), None, Some("waiting"), 0, 1_000)
            .await
            .expect("list");
        let ours = waiting
            .iter()
            .filter(|s| s.email.as_deref().is_some_and(|e| e.starts_with('s')))
            .count();
        assert_eq!(ours, 48, "{waiting:?}");
        t.stop().await;
    }
);

both_dbs!(
    one_address_signing_up_from_many_tabs_at_once_is_one_shopper,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("tabs").await;
        t.seed_catalog(&store).await;
        t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
            .await;
        // The same new address, sixteen times at once: each look-up finds no shopper,
        // so the writes race on the address's uniqueness. Every request is answered
        // with the one sign-up; none fails.
        let answers = futures::future::join_all((0..16).map(|_| {
            let t = &t;
            let store = &store;
            async move {
                t.subscribe(store, json!({"email": "tabs@example.com", "sku": "S-42"}))
                    .await
            }
        }))
        .await;
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        let merged = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!((created, merged), (1, 15), "{answers:?}");
        let ids: std::collections::BTreeSet<String> = answers
            .iter()
            .map(|(_, b)| b["subscription_id"].to_string())
            .collect();
        assert_eq!(ids.len(), 1, "{answers:?}");
        let waiting = t
            .app
            .db
            .subscriptions(StoreId(store.id), None, Some("waiting"), 0, 1_000)
            .await
            .expect("list");
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        t.stop().await;
    }
);
