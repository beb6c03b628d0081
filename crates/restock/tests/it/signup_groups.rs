//! Sign-ups committed in groups (SQLite's writer; the same storage call on
//! PostgreSQL): each sign-up of a group gets its own answer, one that fails leaves
//! nothing behind and fails nothing else, and many shoppers signing up at once are
//! each answered as if alone.

use crate::common;

use common::{Backend, TestApp, TestDb};
use restock::storage::demand::{PreferenceChange, SignUp, SubscribeOutcome, Target};
use restock::storage::signup_writer::SignUpWriter;
use restock::storage::stores::NewStore;
use restock::storage::write_turns::WriteTurns;
use restock_core::ids::{ProductId, ShopperId, StoreId, VariantId};
use restock_core::values::{Channel, Email};
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
        let (store, product, variant, _) = seed_two_variants(db).await;

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
        let writer = SignUpWriter::start(db.clone(), WriteTurns::for_db(db));
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

/// A store with one product of two variants, on a fresh database.
async fn seed_two_variants(
    db: &restock::storage::Db,
) -> (StoreId, ProductId, VariantId, VariantId) {
    let store = db
        .create_store(NewStore::plain("G", "g"), 0)
        .await
        .expect("store")
        .store
        .store_id();
    let variant = |sku: &str| {
        restock::storage::catalog::VariantInput::plain(
            restock_core::values::Sku::parse(sku).expect("sku"),
            sku,
        )
    };
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
        variants: vec![variant("V1"), variant("V2")],
    };
    let (product, _) = db
        .upsert_product(store, &product, 0)
        .await
        .expect("product");
    let id = |sku: &'static str| async move {
        VariantId(
            db.variant_by_sku(store, sku)
                .await
                .expect("q")
                .expect("v")
                .id,
        )
    };
    (store, product, id("V1").await, id("V2").await)
}

type Rows = Vec<Vec<Option<String>>>;

/// Runs a statement on either database.
async fn execute(db: &restock::storage::Db, sql: &'static str) {
    match db {
        restock::storage::Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
        restock::storage::Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(drop),
    }
    .expect(sql);
}

/// Every row a sign-up writes, by address instead of id, as text.
async fn signup_rows(db: &restock::storage::Db) -> [Rows; 4] {
    use sqlx::Row;
    let queries = [
        "SELECT cp.address, CAST(sh.time_zone AS TEXT), CAST(sh.created_at AS TEXT), CAST(sh.updated_at AS TEXT), \
                CAST(sh.opted_out_at AS TEXT), CAST(sh.opt_outs AS TEXT) \
         FROM shoppers sh JOIN contact_points cp ON cp.shopper_id = sh.id ORDER BY 1",
        "SELECT address, address_key, CAST(consent_at AS TEXT), CAST(consent_withdrawn_at AS TEXT), \
                CAST(suppressed_at AS TEXT), CAST(created_at AS TEXT), CAST(updated_at AS TEXT) \
         FROM contact_points ORDER BY 1",
        "SELECT cp.address, c.channel, CASE WHEN c.granted THEN 'yes' ELSE 'no' END, c.text, c.source, c.ip, \
                c.user_agent, CAST(c.at AS TEXT) \
         FROM consents c JOIN contact_points cp ON cp.id = c.contact_point_id ORDER BY 1, 8, 4",
        "SELECT cp.address, CAST(s.product_id AS TEXT), CAST(s.variant_id AS TEXT), s.market, s.status, s.source, \
                CAST(s.created_at AS TEXT), CAST(s.last_signup_at AS TEXT), CAST(s.updated_at AS TEXT) \
         FROM subscriptions s JOIN contact_points cp ON cp.shopper_id = s.shopper_id ORDER BY 1, 2, 3, 7",
    ];
    let mut out: [Rows; 4] = Default::default();
    for (q, rows) in queries.iter().zip(out.iter_mut()) {
        // The same reading for either pool type.
        macro_rules! as_text {
            ($pool:expr) => {
                sqlx::query(*q)
                    .fetch_all($pool)
                    .await
                    .expect("dump")
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect()
            };
        }
        *rows = match db {
            restock::storage::Db::Sqlite(p) => as_text!(p),
            restock::storage::Db::Postgres(p) => as_text!(p),
        };
    }
    out
}

both_dbs!(
    a_group_writes_exactly_what_one_at_a_time_writes,
    |backend: Backend| async move {
        // Two databases alike: one takes the sign-ups as a group (set-wise for the
        // new addresses on SQLite), the other one at a time.
        let grouped = TestDb::new(backend).await;
        let single = TestDb::new(backend).await;
        let (store, product, v1, v2) = seed_two_variants(&grouped.db).await;
        assert_eq!(
            seed_two_variants(&single.db).await,
            (store, product, v1, v2)
        );
        // Addresses the store knows, in each state the rule for a known address
        // tells apart: plain; opted out of email and of a category; opted out of
        // everything (twice: one comes back anonymously, one through the API);
        // bounced.
        // The plain one is in a time zone already, which a later sign-up moves.
        let known = SignUp {
            time_zone: Some(restock_core::values::TimeZone::parse("America/New_York").expect("tz")),
            ..signup("old@example.com", product, v1)
        };
        let quiet = signup("quiet@example.com", product, v1);
        let gone = signup("gone@example.com", product, v1);
        let back = signup("back@example.com", product, v1);
        let bounced = signup("bounced@example.com", product, v1);
        for t in [&grouped, &single] {
            for s in [&known, &quiet, &gone, &back, &bounced] {
                t.db.subscribe(store, s, 5).await.expect("known address");
            }
            let shopper = |e: &'static str| async move {
                ShopperId(
                    t.db.shopper_by_email(store, &Email::parse(e).expect("email"))
                        .await
                        .expect("q")
                        .expect("shopper")
                        .id,
                )
            };
            for (who, change) in [
                (
                    "quiet@example.com",
                    PreferenceChange {
                        channels: vec![(Channel::Email, false)],
                        categories: vec![("boots".into(), false)],
                        ..Default::default()
                    },
                ),
                (
                    "gone@example.com",
                    PreferenceChange {
                        all: Some(false),
                        ..Default::default()
                    },
                ),
                (
                    "back@example.com",
                    PreferenceChange {
                        all: Some(false),
                        ..Default::default()
                    },
                ),
            ] {
                t.db.change_preferences(store, shopper(who).await, &change, &Default::default(), 6)
                    .await
                    .expect("preferences")
                    .expect("shopper");
            }
            execute(
                &t.db,
                "UPDATE contact_points SET suppressed_at = 7 WHERE address = 'bounced@example.com'",
            )
            .await;
        }
        let paris = || Some(restock_core::values::TimeZone::parse("Europe/Paris").expect("tz"));
        let quiet_again = signup("quiet@example.com", product, v2);
        let gone_anonymous = signup("gone@example.com", product, v2);
        let back_by_api = SignUp {
            anonymous: false,
            time_zone: paris(),
            ..signup("back@example.com", product, v1)
        };
        let bounced_again = signup("bounced@example.com", product, v2);
        let old_moved = SignUp {
            time_zone: paris(),
            ..signup("old@example.com", product, v1)
        };
        let rich = SignUp {
            time_zone: Some(restock_core::values::TimeZone::parse("Europe/Paris").expect("tz")),
            consent: restock::storage::demand::ConsentInput {
                text: "Tell me \"when\" it's back".into(),
                source: "widget".into(),
                ip: Some("203.0.113.9".into()),
                user_agent: Some("Mozilla/5.0 (X11)".into()),
            },
            ..signup("ann@example.com", product, v1)
        };
        let whole_product = SignUp {
            target: Target::Product(product),
            ..signup("bob@example.com", product, v1)
        };
        let ann_again = signup("Ann@Example.com", product, v1);
        let ann_other = signup("ann@example.com", product, v2);
        let old_other = signup("old@example.com", product, v2);
        let cy = signup("cy@example.com", product, v2);
        let group = [
            (store, &rich, 10),
            (store, &old_other, 10),
            (store, &whole_product, 11),
            (store, &ann_again, 12),
            (store, &cy, 12),
            (store, &ann_other, 13),
            (store, &quiet_again, 14),
            (store, &gone_anonymous, 14),
            (store, &back_by_api, 15),
            (store, &bounced_again, 15),
            (store, &old_moved, 16),
        ];
        let out = grouped
            .db
            .subscribe_group(&group)
            .await
            .expect("group")
            .expect("every sign-up succeeds");
        let mut one_by_one = Vec::new();
        for &(store, s, now) in &group {
            one_by_one.push(single.db.subscribe(store, s, now).await.expect("sign-up"));
        }
        let kind = |o: &SubscribeOutcome| match o {
            SubscribeOutcome::Created(..) => "created",
            SubscribeOutcome::Merged(..) => "merged",
            SubscribeOutcome::Suppressed => "suppressed",
            SubscribeOutcome::ConfirmationRequired => "confirmation required",
        };
        assert_eq!(
            out.iter().map(kind).collect::<Vec<_>>(),
            [
                "created",
                "created",
                "created",
                "merged",
                "created",
                "created",
                "created",
                "confirmation required",
                "merged",
                "suppressed",
                "merged",
            ]
        );
        assert_eq!(
            out.iter().map(kind).collect::<Vec<_>>(),
            one_by_one.iter().map(kind).collect::<Vec<_>>()
        );
        // The outcomes name the rows written: ann's repeat merges into her sign-up.
        let (SubscribeOutcome::Created(ann_sub, ann), SubscribeOutcome::Merged(again_sub, again)) =
            (&out[0], &out[3])
        else {
            panic!("{out:?}")
        };
        assert_eq!((ann_sub, ann), (again_sub, again));
        let rows = signup_rows(&grouped.db).await;
        assert_eq!(rows, signup_rows(&single.db).await);
        // What the rule changed: the email opt-out lifted and the category's kept;
        // the shopper back through the API opted in, in their new time zone; the
        // anonymous one still out.
        let shopper = |address: &str| {
            rows[0]
                .iter()
                .find(|r| r[0].as_deref() == Some(address))
                .cloned()
                .expect("shopper row")
        };
        let opt_outs: serde_json::Value = serde_json::from_str(
            shopper("quiet@example.com")[5]
                .as_deref()
                .expect("opt-outs"),
        )
        .expect("json");
        assert_eq!(opt_outs["channels"], json!([]), "{opt_outs}");
        assert_eq!(opt_outs["categories"], json!(["boots"]), "{opt_outs}");
        let back = shopper("back@example.com");
        assert_eq!(
            (back[1].as_deref(), back[4].as_deref()),
            (Some("Europe/Paris"), None)
        );
        assert!(
            shopper("gone@example.com")[4].is_some(),
            "{:?}",
            shopper("gone@example.com")
        );
        assert_eq!(
            shopper("old@example.com")[1].as_deref(),
            Some("Europe/Paris")
        );
        grouped.cleanup().await;
        single.cleanup().await;
    }
);

both_dbs!(
    signups_by_sku_in_one_group_are_each_judged_on_their_own_variant,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("judged").await;
        t.seed_catalog(&store).await;
        let (status, body) = t
            .put(
                "/v1/products/boot",
                &store.api_key,
                &json!({"title": "Boot", "url": "https://shop.example/boot", "price": 9000, "currency": "EUR",
                        "variants": [{"sku": "B-40"}, {"sku": "B-41"}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        // S-42 and B-41 sold out, S-43 in stock, B-40 removed by the shop.
        t.stock(
            &store,
            json!([{"sku": "S-42", "available": 0}, {"sku": "S-43", "available": 5},
                   {"sku": "B-40", "available": 0}, {"sku": "B-41", "available": 0}]),
        )
        .await;
        execute(
            &t.app.db,
            "UPDATE variants SET removed_at = 1 WHERE sku = 'B-40'",
        )
        .await;

        // The sign-up writer (SQLite's) reads the variants of a group at once, and
        // finds what reading each finds.
        let store_id = StoreId(store.id);
        if let restock::storage::Db::Sqlite(p) = &t.app.db {
            let skus = ["S-42", "S-43", "B-40", "B-41", "NOPE"];
            let group: Vec<(StoreId, &str)> = skus.iter().map(|s| (store_id, *s)).collect();
            let mut conn = p.acquire().await.expect("connection");
            let at_once = restock::storage::catalog::sku_facts_of(&mut conn, &group)
                .await
                .expect("facts");
            drop(conn);
            for sku in skus {
                let alone = t.app.db.sku_facts(store_id, sku).await.expect("facts");
                assert_eq!(
                    at_once.get(&(store_id, sku.to_string())).copied(),
                    alone,
                    "{sku}"
                );
            }
            assert_eq!(at_once.len(), 4, "{at_once:?}");
        }

        // Sent at once (groups on SQLite), every sign-up gets the answer its own
        // variant calls for, and only the two sold-out variants take sign-ups.
        let wanted = [
            ("S-42", 201, "created"),
            ("S-43", 409, "in_stock"),
            ("B-40", 409, "discontinued"),
            ("B-41", 201, "created"),
            ("NOPE", 422, "unknown_sku"),
        ];
        let answers = futures::future::join_all((0..40).map(|i| {
            let t = &t;
            let store = &store;
            let sku = wanted[i % wanted.len()].0;
            async move {
                t.subscribe(
                    store,
                    json!({"email": format!("j{i}@example.com"), "sku": sku}),
                )
                .await
            }
        }))
        .await;
        for (i, (status, body)) in answers.iter().enumerate() {
            let (sku, want_status, want) = wanted[i % wanted.len()];
            let got = if *status < 300 {
                body["status"].clone()
            } else {
                body["code"].clone()
            };
            assert_eq!((*status, got), (want_status, json!(want)), "{sku}: {body}");
        }
        let waiting = t
            .app
            .db
            .subscriptions(store_id, None, Some("waiting"), 0, 1_000)
            .await
            .expect("list");
        assert_eq!(waiting.len(), 16, "{waiting:?}");
        t.stop().await;
    }
);

both_dbs!(
    one_address_signing_up_at_once_while_its_signup_ends_keeps_one_waiting_and_a_consent_each,
    |backend: Backend| async move {
        // The same address signs up for the same variant from eight places at once,
        // while the merchant cancels the sign-up it has: each answer names the
        // sign-up it created or renewed, there is never more than one waiting, and
        // each sign-up answered recorded its consent once (a path that found the
        // store changed under it and started again must not record it twice).
        let t = TestDb::new(backend).await;
        let db = &t.db;
        let (store, product, variant, _) = seed_two_variants(db).await;
        let writer = SignUpWriter::start(db.clone(), WriteTurns::for_db(db));
        let same = signup("same@example.com", product, variant);
        let mut answered = 0;
        for round in 0..12_i64 {
            let waiting = db
                .subscriptions(store, None, Some("waiting"), 0, 10)
                .await
                .expect("list");
            let cancel = async {
                if let Some(s) = waiting.first() {
                    db.cancel_subscription(store, restock_core::ids::SubscriptionId(s.id), round)
                        .await
                        .expect("cancel");
                }
            };
            let signups =
                futures::future::join_all((0..8).map(|_| writer.subscribe(store, &same, round)));
            let (outcomes, ()) = tokio::join!(signups, cancel);
            let mut named = std::collections::BTreeSet::new();
            for o in outcomes {
                match o.expect("sign-up") {
                    SubscribeOutcome::Created(s, _) | SubscribeOutcome::Merged(s, _) => {
                        named.insert(s);
                    }
                    other => panic!("{other:?}"),
                }
                answered += 1;
            }
            let waiting = db
                .subscriptions(store, None, Some("waiting"), 0, 10)
                .await
                .expect("list");
            assert!(waiting.len() <= 1, "round {round}: {waiting:?}");
            assert!(named.len() <= 2, "round {round}: {named:?}");
        }
        let shopper = db
            .shopper_by_email(store, &Email::parse("same@example.com").expect("email"))
            .await
            .expect("q")
            .expect("shopper");
        let consents = db
            .shopper_consents(ShopperId(shopper.id), 1_000)
            .await
            .expect("consents");
        assert_eq!(consents.len(), answered);
        t.cleanup().await;
    }
);
