//! Property test of planning against the real databases: for any mix of sign-ups
//! (variant- or product-level, the same address in another case), cancellations,
//! opt-outs, orders, stock changes, planning runs and deliveries, what storage and
//! the workers write for each restock is exactly what the core planner
//! (`restock_core::planner::plan_page`) decides over the facts of an independent
//! model — nobody twice, nobody opted out, no recent purchaser.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Backend, TestDb};
use proptest::prelude::*;
use rand::SeedableRng;
use restock::App;
use restock::channels::{EmailChannel, MemoryOutbox};
use restock::config::Config;
use restock::storage::Db;
use restock::storage::catalog::{ProductInput, VariantInput};
use restock::storage::demand::{ConsentInput, PreferenceChange, SignUp, SubscribeOutcome, Target};
use restock::storage::orders::{OrderInput, OrderLineInput};
use restock::storage::stores::NewStore;
use restock::util::Clock;
use restock_core::ids::{ContactPointId, ProductId, ShopperId, StoreId, SubscriptionId, VariantId};
use restock_core::planner::{
    Candidate, Contact, OptOuts, Outcome, Position, Restock, Tally, Wave, plan_page,
};
use restock_core::policy::StorePolicy;
use restock_core::stock::{StockUpdate, Version};
use restock_core::values::{Channel, Currency, Email, HttpUrl, Sku};

#[derive(Debug, Clone)]
enum Op {
    Stock {
        variant: usize,
        qty: i64,
    },
    Subscribe {
        shopper: usize,
        variant: Option<usize>,
        upper: bool,
    },
    Cancel {
        pick: usize,
    },
    OptOut {
        shopper: usize,
        what: u8,
    },
    Order {
        shopper: usize,
        variant: usize,
    },
    Deliver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3i64).prop_map(|(variant, qty)| Op::Stock { variant, qty }),
        5 => (0..6usize, prop::option::of(0..3usize), any::<bool>())
            .prop_map(|(shopper, variant, upper)| Op::Subscribe { shopper, variant, upper }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (0..6usize, 0..3u8).prop_map(|(shopper, what)| Op::OptOut { shopper, what }),
        1 => (0..6usize, 0..3usize).prop_map(|(shopper, variant)| Op::Order { shopper, variant }),
        2 => Just(Op::Deliver),
    ]
}

#[derive(Debug, Clone)]
struct Sub {
    shopper: usize,
    variant: Option<usize>,
    created_at: i64,
    waiting: bool,
}

#[derive(Default)]
struct Model {
    subs: BTreeMap<i64, Sub>,
    /// Shopper index → (shopper id, contact id).
    ids: BTreeMap<usize, (i64, i64)>,
    opt_all: BTreeSet<usize>,
    opt_category: BTreeSet<usize>,
    opt_email: BTreeSet<usize>,
    /// Shopper → latest purchase time.
    bought: BTreeMap<usize, i64>,
    /// Alerts planned and not yet sent: (shopper, variant, sign-ups they answer).
    pending: Vec<(usize, usize, Vec<i64>)>,
    in_stock: [bool; 3],
    /// Per variant: the level last reported, and units ordered since.
    level: [i64; 3],
    ordered_since: [i64; 3],
}

const WINDOW_MS: i64 = 1_000_000;

async fn seed(db: &Db) -> (StoreId, ProductId, Vec<VariantId>) {
    let store = db
        .create_store(NewStore::plain("P", "p"), 0)
        .await
        .expect("store")
        .store
        .store_id();
    let policy = StorePolicy {
        recent_purchase_window_secs: Some(WINDOW_MS / 1000),
        ..StorePolicy::default()
    };
    db.set_store_policy(store, &policy).await.expect("policy");
    let variant = |sku: &str| VariantInput::plain(Sku::parse(sku).expect("sku"), sku);
    let product = ProductInput {
        external_id: "p".into(),
        title: "P".into(),
        description: String::new(),
        image_url: None,
        url: HttpUrl::parse("https://shop.example/p").expect("url"),
        category: Some("shoes".into()),
        price_minor: 100,
        currency: Currency::parse("EUR").expect("currency"),
        min_stock: None,
        notify_threshold: None,
        release: None,
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
                .expect("v")
                .id,
        ));
    }
    (store, product, variants)
}

fn email(shopper: usize, upper: bool) -> Email {
    let s = format!("shopper{shopper}@example.com");
    Email::parse(&if upper { s.to_uppercase() } else { s }).expect("email")
}

/// The decisions the core planner makes for a restock of `variant` over the model's
/// facts: the reference the databases are held to.
fn expected(m: &Model, variant: usize, now: i64) -> BTreeMap<i64, Outcome> {
    let policy = StorePolicy {
        recent_purchase_window_secs: Some(WINDOW_MS / 1000),
        ..StorePolicy::default()
    }
    .for_product(None);
    let mut page: Vec<Candidate> = m
        .subs
        .iter()
        .filter(|(_, s)| s.waiting && s.variant.is_none_or(|v| v == variant))
        .map(|(id, s)| {
            let (shopper_id, contact) = m.ids[&s.shopper];
            Candidate {
                shopper: ShopperId(shopper_id),
                subscriptions: vec![SubscriptionId(*id)],
                position: Position {
                    signed_up_at_ms: s.created_at,
                    subscription: SubscriptionId(*id),
                },
                last_signup_at_ms: s.created_at,
                tier: None,
                time_zone: None,
                preferred_channel: None,
                opt_outs: OptOuts {
                    all: m.opt_all.contains(&s.shopper),
                    categories: if m.opt_category.contains(&s.shopper) {
                        vec!["shoes".into()]
                    } else {
                        vec![]
                    },
                    channels: if m.opt_email.contains(&s.shopper) {
                        vec![Channel::Email]
                    } else {
                        vec![]
                    },
                },
                contacts: vec![Contact {
                    id: ContactPointId(contact),
                    channel: Channel::Email,
                    address: String::new(),
                    consent: !m.opt_email.contains(&s.shopper),
                    suppressed: false,
                }],
                last_purchase_ms: m
                    .bought
                    .get(&s.shopper)
                    .copied()
                    .filter(|t| *t >= now - WINDOW_MS),
                message_times_ms: vec![],
                in_flight: m.pending.iter().any(|(_, _, subs)| subs.contains(id)),
                decided: false,
            }
        })
        .collect();
    page.sort_by_key(|c| c.position);
    let plan = plan_page(
        &Restock {
            category: Some("shoes".into()),
            at_ms: now,
        },
        &policy,
        Wave {
            number: 1,
            now_ms: now,
            room: None,
        },
        &mut Tally::default(),
        page,
        &mut rand::rngs::StdRng::seed_from_u64(1),
    );
    plan.decisions
        .into_iter()
        .map(|d| {
            let outcome = match d.outcome {
                Outcome::Send(mut s) => {
                    s.address = String::new();
                    Outcome::Send(s)
                }
                h => h,
            };
            (d.shopper.0, outcome)
        })
        .collect()
}

async fn decisions(db: &Db, event: i64) -> BTreeMap<i64, (String, Option<String>)> {
    let sql = "SELECT shopper_id, state, reason FROM notifications WHERE restock_event_id = $1 AND purpose = 'alert'";
    let rows: Vec<(i64, String, Option<String>)> = match db {
        Db::Sqlite(p) => sqlx::query_as(sql).bind(event).fetch_all(p).await,
        Db::Postgres(p) => sqlx::query_as(sql).bind(event).fetch_all(p).await,
    }
    .expect("decisions");
    let n = rows.len();
    let map: BTreeMap<i64, (String, Option<String>)> =
        rows.into_iter().map(|(s, st, r)| (s, (st, r))).collect();
    assert_eq!(map.len(), n, "a shopper decided twice for one restock");
    map
}

async fn run_case(backend: Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t = TestDb::new(backend).await;
    let db = &t.db;
    let (store, product, variants) = seed(db).await;
    let clock = Clock::manual(10_000_000);
    let config = Config::from_defaults_and("[dispatch]\nenabled = false").expect("config");
    let app = App::new(
        config,
        db.clone(),
        clock.clone(),
        EmailChannel::Memory(MemoryOutbox::default()),
    )
    .await
    .expect("app");
    let mut m = Model::default();
    // Restocks not planned yet.
    let mut unplanned: Vec<i64> = Vec::new();
    for op in ops {
        clock.advance_ms(1_000);
        let now = clock.now_ms();
        let deliver = matches!(op, Op::Deliver);
        match op {
            Op::Subscribe {
                shopper,
                variant,
                upper,
            } => {
                let target = match variant {
                    Some(v) => Target::Variant {
                        product,
                        variant: variants[v],
                    },
                    None => Target::Product(product),
                };
                if variant.is_some_and(|v| m.in_stock[v])
                    || (variant.is_none() && m.in_stock.iter().any(|s| *s))
                {
                    continue; // the API refuses sign-ups for what is in stock
                }
                let signup = SignUp {
                    email: email(shopper, upper),
                    target,
                    market: None,
                    source: "test".into(),
                    consent: ConsentInput::default(),
                    time_zone: None,
                    anonymous: true,
                };
                match db.subscribe(store, &signup, now).await.expect("subscribe") {
                    SubscribeOutcome::Created(id, sh) => {
                        prop_assert!(!m.opt_all.contains(&shopper));
                        let contact = db.shopper_contacts(sh).await.expect("contacts")[0].id;
                        if let Some((known, _)) = m.ids.get(&shopper) {
                            prop_assert_eq!(
                                *known,
                                sh.0,
                                "one shopper whatever the case of the address"
                            );
                        }
                        m.ids.insert(shopper, (sh.0, contact));
                        let dup = m
                            .subs
                            .values()
                            .any(|s| s.waiting && s.shopper == shopper && s.variant == variant);
                        prop_assert!(!dup, "a second waiting sign-up for one target");
                        m.subs.insert(
                            id.0,
                            Sub {
                                shopper,
                                variant,
                                created_at: now,
                                waiting: true,
                            },
                        );
                    }
                    SubscribeOutcome::Merged(id, _) => {
                        let s = m.subs.get(&id.0).expect("merged into a known sign-up");
                        prop_assert_eq!(
                            (s.shopper, s.variant, s.waiting),
                            (shopper, variant, true)
                        );
                    }
                    SubscribeOutcome::ConfirmationRequired => {
                        prop_assert!(m.opt_all.contains(&shopper))
                    }
                    SubscribeOutcome::Suppressed => {
                        prop_assert!(false, "nobody is suppressed here")
                    }
                }
                // A consent is recorded with every sign-up (an email opt-out is undone).
                m.opt_email.remove(&shopper);
            }
            Op::Cancel { pick } => {
                if m.subs.is_empty() {
                    continue;
                }
                let id = *m.subs.keys().nth(pick % m.subs.len()).expect("pick");
                db.cancel_subscription(store, SubscriptionId(id), now)
                    .await
                    .expect("cancel");
                let s = m.subs.get_mut(&id).expect("sub");
                if s.waiting {
                    s.waiting = false;
                    m.pending.retain(|(_, _, subs)| !subs.contains(&id));
                }
            }
            Op::OptOut { shopper, what } => {
                let Some((id, _)) = m.ids.get(&shopper) else {
                    continue;
                };
                let mut change = PreferenceChange::default();
                match what {
                    0 => {
                        change.all = Some(false);
                        m.opt_all.insert(shopper);
                    }
                    1 => {
                        change.categories.push(("shoes".into(), false));
                        m.opt_category.insert(shopper);
                    }
                    _ => {
                        change.channels.push((Channel::Email, false));
                        m.opt_email.insert(shopper);
                    }
                }
                db.change_preferences(
                    store,
                    ShopperId(*id),
                    &change,
                    &ConsentInput::default(),
                    now,
                )
                .await
                .expect("preferences");
            }
            Op::Order { shopper, variant } => {
                let order = OrderInput {
                    order_ref: format!("o{now}"),
                    email: Some(email(shopper, false)),
                    customer_id: None,
                    source: "test".into(),
                    currency: None,
                    market: None,
                    ordered_at: now,
                    lines: vec![OrderLineInput {
                        sku: Sku::parse(&format!("V{variant}")).expect("sku"),
                        quantity: 1,
                        price_minor: None,
                    }],
                };
                db.record_order(store, &order, now).await.expect("order");
                if m.ids.contains_key(&shopper) {
                    m.bought.insert(shopper, now);
                    for s in m.subs.values_mut() {
                        if s.shopper == shopper
                            && s.waiting
                            && s.variant.is_none_or(|v| v == variant)
                        {
                            s.waiting = false;
                        }
                    }
                    m.pending
                        .retain(|(sh, v, _)| !(*sh == shopper && *v == variant));
                }
                // The order counts against stock the sources have not reported yet.
                m.ordered_since[variant] += 1;
                if m.in_stock[variant] && m.level[variant] - m.ordered_since[variant] <= 0 {
                    m.in_stock[variant] = false;
                }
            }
            Op::Stock { variant, qty } => {
                let update = StockUpdate {
                    sku: Sku::parse(&format!("V{variant}")).expect("sku"),
                    location: "l".into(),
                    available: qty,
                    reserved: 0,
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
                let was = m.in_stock[variant];
                m.level[variant] = qty;
                m.ordered_since[variant] = 0;
                m.in_stock[variant] = qty > 0;
                prop_assert_eq!(out.restocks.len(), usize::from(!was && qty > 0));
                if let Some(r) = out.restocks.first() {
                    unplanned.push(r.event_id.0);
                }
            }
            Op::Deliver => {}
        }
        // Plan whatever restocked now, and compare with the reference.
        if !unplanned.is_empty() {
            for event in std::mem::take(&mut unplanned) {
                let variant = {
                    let sql = "SELECT variant_id FROM restock_events WHERE id = $1";
                    let v: i64 = match db {
                        Db::Sqlite(p) => sqlx::query_scalar(sql).bind(event).fetch_one(p).await,
                        Db::Postgres(p) => sqlx::query_scalar(sql).bind(event).fetch_one(p).await,
                    }
                    .expect("event");
                    variants
                        .iter()
                        .position(|x| x.0 == v)
                        .expect("known variant")
                };
                let want = expected(&m, variant, clock.now_ms());
                restock::planning::plan_due(&app).await.expect("plan");
                let got = decisions(db, event).await;
                let want_kinds: BTreeMap<i64, (String, Option<String>)> = want
                    .iter()
                    .map(|(s, o)| {
                        (
                            *s,
                            match o {
                                Outcome::Send(s) => (
                                    "pending".to_string(),
                                    s.deferred.map(|d| d.as_str().to_string()),
                                ),
                                Outcome::Hold(r) => {
                                    ("held".to_string(), Some(r.as_str().to_string()))
                                }
                            },
                        )
                    })
                    .collect();
                prop_assert_eq!(
                    &got,
                    &want_kinds,
                    "restock of V{} planned differently from the core planner",
                    variant
                );
                for (shopper_id, o) in &want {
                    if matches!(o, Outcome::Send(_)) {
                        let shopper = m
                            .ids
                            .iter()
                            .find(|(_, (id, _))| id == shopper_id)
                            .map(|(k, _)| *k)
                            .expect("known");
                        let subs: Vec<i64> = m
                            .subs
                            .iter()
                            .filter(|(_, s)| {
                                s.shopper == shopper
                                    && s.waiting
                                    && s.variant.is_none_or(|v| v == variant)
                            })
                            .map(|(id, _)| *id)
                            .collect();
                        m.pending.push((shopper, variant, subs));
                    }
                }
            }
        }
        // Deliveries: claim everything due and record it sent.
        if deliver {
            let claimed = db
                .claim_due(clock.now_ms(), 60_000, 1_000)
                .await
                .expect("claim");
            for n in claimed {
                prop_assert!(
                    db.record_sent(&n, clock.now_ms(), None)
                        .await
                        .expect("sent")
                );
                let covered: Vec<i64> = std::iter::once(n.subscription_id)
                    .chain(n.extra_subscription_id)
                    .collect();
                let before = m.pending.len();
                m.pending
                    .retain(|(_, _, subs)| !covered.iter().any(|c| subs.contains(c)));
                prop_assert_eq!(
                    before,
                    m.pending.len() + 1,
                    "sent an alert the model did not plan"
                );
                for id in covered {
                    if let Some(s) = m.subs.get_mut(&id) {
                        s.waiting = false;
                    }
                }
            }
        }
    }
    t.cleanup().await;
    Ok(())
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
fn planning_matches_the_core_planner_on_sqlite() {
    check(Backend::Sqlite);
}

#[test]
fn planning_matches_the_core_planner_on_postgres() {
    check(Backend::Postgres);
}
