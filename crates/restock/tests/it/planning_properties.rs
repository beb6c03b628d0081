//! Property test of planning against the real databases: for any mix of
//! subscriptions (variant- or product-level, unsubscribed, suppressed), stock
//! changes, re-planning and deliveries, the planner plans exactly what the domain
//! rule (`restock_core::planner::eligible`) says, never twice for one subscription
//! and restock, and never while a subscription has a notification in flight.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Backend, TestDb};
use proptest::prelude::*;
use restock::storage::Db;
use restock::storage::catalog::{ProductInput, VariantInput};
use restock::storage::demand::{SubscribeOutcome, Target};
use restock::storage::stores::NewStore;
use restock_core::ids::{ProductId, RestockEventId, StoreId, SubscriptionId, VariantId};
use restock_core::planner::{RestockView, SubscriptionStatus, SubscriptionView, eligible};
use restock_core::stock::{StockUpdate, Version};
use restock_core::values::{Currency, Email, HttpUrl, Sku};

#[derive(Debug, Clone)]
enum Op {
    /// Set a variant's stock.
    Stock {
        variant: usize,
        qty: i64,
    },
    /// Sign someone up (variant index, or None for product-level).
    Subscribe {
        shopper: usize,
        variant: Option<usize>,
    },
    Unsubscribe {
        pick: usize,
    },
    Suppress {
        shopper: usize,
    },
    /// Plan a past restock again.
    Replan {
        pick: usize,
    },
    /// Claim what is due and send (true) or skip (false) each, in turn.
    Deliver {
        outcomes: Vec<bool>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3i64).prop_map(|(variant, qty)| Op::Stock { variant, qty }),
        4 => (0..6usize, prop::option::of(0..3usize)).prop_map(|(shopper, variant)| Op::Subscribe { shopper, variant }),
        1 => any::<usize>().prop_map(|pick| Op::Unsubscribe { pick }),
        1 => (0..6usize).prop_map(|shopper| Op::Suppress { shopper }),
        2 => any::<usize>().prop_map(|pick| Op::Replan { pick }),
        2 => prop::collection::vec(any::<bool>(), 0..8).prop_map(|outcomes| Op::Deliver { outcomes }),
    ]
}

#[derive(Debug, Clone)]
struct ModelSub {
    shopper: usize,
    variant: Option<usize>,
    status: SubscriptionStatus,
    in_flight: usize,
}

async fn seed(db: &Db) -> (StoreId, ProductId, Vec<VariantId>) {
    let store = db
        .create_store(
            NewStore {
                name: "P",
                slug: "p",
                allowed_origins: &[],
                shopify_secret: None,
            },
            0,
        )
        .await
        .expect("store")
        .store
        .store_id();
    let variant = |sku: &str| VariantInput {
        sku: Sku::parse(sku).expect("sku"),
        title: sku.into(),
        options: Default::default(),
        price_minor: None,
        image_url: None,
        url: None,
        min_stock: None,
        notify_threshold: None,
        inventory_item_id: None,
    };
    let product = ProductInput {
        external_id: "p".into(),
        title: "P".into(),
        description: String::new(),
        image_url: None,
        url: HttpUrl::parse("https://shop.example/p").expect("url"),
        category: None,
        price_minor: 100,
        currency: Currency::parse("EUR").expect("currency"),
        min_stock: None,
        notify_threshold: None,
        variants: vec![variant("V0"), variant("V1"), variant("V2")],
    };
    let (product, _) = db
        .upsert_product(store, &product, 0)
        .await
        .expect("product");
    let mut variants = Vec::new();
    for sku in ["V0", "V1", "V2"] {
        variants.push(VariantId(
            db.variant_by_sku(store, sku)
                .await
                .expect("q")
                .expect("variant")
                .id,
        ));
    }
    (store, product, variants)
}

async fn exec(db: &Db, sql: &str, id: i64) {
    match db {
        Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()),
        Db::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .expect("exec");
}

async fn pairs(db: &Db) -> Vec<(i64, i64)> {
    let sql = "SELECT subscription_id, restock_event_id FROM notifications";
    match db {
        Db::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
        Db::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
    }
    .expect("pairs")
}

async fn run_case(backend: Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t = TestDb::new(backend).await;
    let db = &t.db;
    let (store, product, variants) = seed(db).await;
    let mut subs: BTreeMap<i64, ModelSub> = BTreeMap::new();
    let mut suppressed: BTreeSet<usize> = BTreeSet::new();
    // Shoppers with a subscriber row (created by their first sign-up).
    let mut known: BTreeSet<usize> = BTreeSet::new();
    let mut in_stock = [false; 3];
    let mut events: Vec<(RestockEventId, usize)> = Vec::new();
    let mut planned_pairs: BTreeSet<(i64, i64)> = BTreeSet::new();
    let mut now = 1_000;
    for op in ops {
        now += 10;
        match op {
            Op::Subscribe { shopper, variant } => {
                let email = Email::parse(&format!("s{shopper}@example.com")).expect("email");
                let target = match variant {
                    Some(v) => Target::Variant {
                        product,
                        variant: variants[v],
                    },
                    None => Target::Product(product),
                };
                known.insert(shopper);
                match db
                    .subscribe(store, &email, target, "test", now)
                    .await
                    .expect("subscribe")
                {
                    SubscribeOutcome::Created(id) => {
                        prop_assert!(!suppressed.contains(&shopper));
                        subs.insert(
                            id.0,
                            ModelSub {
                                shopper,
                                variant,
                                status: SubscriptionStatus::Waiting,
                                in_flight: 0,
                            },
                        );
                    }
                    SubscribeOutcome::Merged(id) => {
                        let s = subs
                            .get_mut(&id.0)
                            .expect("merged into a known subscription");
                        prop_assert_eq!((s.shopper, s.variant), (shopper, variant));
                        s.status = SubscriptionStatus::Waiting;
                    }
                    SubscribeOutcome::Suppressed => prop_assert!(suppressed.contains(&shopper)),
                }
            }
            Op::Unsubscribe { pick } => {
                if subs.is_empty() {
                    continue;
                }
                let id = *subs.keys().nth(pick % subs.len()).expect("pick");
                db.unsubscribe(SubscriptionId(id), false, now)
                    .await
                    .expect("unsubscribe");
                let s = subs.get_mut(&id).expect("sub");
                s.status = SubscriptionStatus::Unsubscribed;
                // Its pending notification is skipped (none is running between ops).
                s.in_flight = 0;
            }
            Op::Suppress { shopper } => {
                exec(db, &format!("UPDATE subscribers SET suppressed_at = 1 WHERE email = 's{shopper}@example.com' AND store_id = $1"), store.0).await;
                if known.contains(&shopper) {
                    suppressed.insert(shopper);
                }
            }
            Op::Stock { variant, qty } => {
                let update = StockUpdate {
                    sku: Sku::parse(&format!("V{variant}")).expect("sku"),
                    location: "l".into(),
                    available: qty,
                    incoming: None,
                    incoming_at_ms: None,
                    available_until_ms: None,
                    version: Version {
                        observed_at_ms: now,
                        sequence: None,
                    },
                };
                let out = db
                    .apply_stock_batch(store, "test", &[update], &[], now)
                    .await
                    .expect("apply");
                let was = in_stock[variant];
                in_stock[variant] = qty > 0;
                let restocked = !was && qty > 0;
                prop_assert_eq!(out.restocks.len(), usize::from(restocked));
                if let Some(r) = out.restocks.first() {
                    let view = RestockView {
                        id: r.event_id,
                        product,
                        variant: variants[variant],
                    };
                    let expected: Vec<i64> = subs
                        .iter()
                        .filter(|(id, s)| {
                            eligible(&view_of(**id, s, &suppressed, product, &variants), &view)
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    prop_assert_eq!(
                        r.planned as usize,
                        expected.len(),
                        "planned for restock of V{}",
                        variant
                    );
                    for id in expected {
                        subs.get_mut(&id).expect("sub").in_flight += 1;
                        planned_pairs.insert((id, r.event_id.0));
                    }
                    events.push((r.event_id, variant));
                }
            }
            Op::Replan { pick } => {
                if events.is_empty() {
                    continue;
                }
                let (event, variant) = events[pick % events.len()];
                let view = RestockView {
                    id: event,
                    product,
                    variant: variants[variant],
                };
                let expected: Vec<i64> = subs
                    .iter()
                    .filter(|(id, s)| {
                        eligible(&view_of(**id, s, &suppressed, product, &variants), &view)
                            && !planned_pairs.contains(&(**id, event.0))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                let planned = db.replan(event, now).await.expect("replan");
                prop_assert_eq!(planned as usize, expected.len(), "replanned");
                for id in expected {
                    subs.get_mut(&id).expect("sub").in_flight += 1;
                    planned_pairs.insert((id, event.0));
                }
            }
            Op::Deliver { outcomes } => {
                let claimed = db.claim_due(now, 60_000, 1_000).await.expect("claim");
                let mut outcomes = outcomes.into_iter().cycle();
                for n in claimed {
                    let send = outcomes.next().unwrap_or(true);
                    let s = subs
                        .get_mut(&n.subscription_id)
                        .expect("claimed a known subscription");
                    prop_assert_eq!(
                        s.in_flight,
                        1,
                        "one notification in flight per subscription"
                    );
                    s.in_flight = 0;
                    if send {
                        prop_assert!(db.record_sent(&n, now).await.expect("sent"));
                        if s.status == SubscriptionStatus::Waiting {
                            s.status = SubscriptionStatus::Notified;
                        }
                    } else {
                        prop_assert!(
                            db.record_final(&n, "skipped", "test", now)
                                .await
                                .expect("skipped")
                        );
                    }
                }
            }
        }
        for s in subs.values() {
            prop_assert!(
                s.in_flight <= 1,
                "two notifications in flight for one subscription"
            );
        }
    }
    let stored = pairs(db).await;
    let distinct: BTreeSet<(i64, i64)> = stored.iter().copied().collect();
    prop_assert_eq!(
        distinct.len(),
        stored.len(),
        "a subscription was planned twice for one restock"
    );
    prop_assert_eq!(distinct, planned_pairs);
    t.cleanup().await;
    Ok(())
}

fn view_of(
    id: i64,
    s: &ModelSub,
    suppressed: &BTreeSet<usize>,
    product: ProductId,
    variants: &[VariantId],
) -> SubscriptionView {
    SubscriptionView {
        id: SubscriptionId(id),
        product,
        variant: s.variant.map(|v| variants[v]),
        status: s.status,
        subscriber_suppressed: suppressed.contains(&s.shopper),
        has_notification_in_flight: s.in_flight > 0,
    }
}

fn check(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in prop::collection::vec(op(), 1..40))| {
        runtime.block_on(run_case(backend, ops))?;
    });
}

#[test]
fn planning_matches_the_rule_on_sqlite() {
    check(Backend::Sqlite);
}

#[test]
fn planning_matches_the_rule_on_postgres() {
    check(Backend::Postgres);
}
