//! Property test of set-wise stock application on the real databases: a random
//! batch applied at once leaves exactly what applying it in pieces leaves — the
//! same levels as one update at a time, and the same states, market states,
//! transitions and restock events (policy snapshot and superseding included) as one
//! batch per variant, the one-variant path every other caller (orders, expiry,
//! markets) takes. When no variant appears twice in a batch, one update at a time
//! must agree on everything too (a batch judges each variant once, on its total
//! after the batch, so repeated variants may legitimately differ from it).

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Backend, TestDb};
use proptest::prelude::*;
use restock::storage::Db;
use restock::storage::catalog::{ProductInput, VariantInput};
use restock::storage::orders::{OrderInput, OrderLineInput};
use restock::storage::stock::BatchOutcome;
use restock::storage::stores::NewStore;
use restock_core::ids::StoreId;
use restock_core::stock::{InventoryPolicy, StockUpdate, Version};
use restock_core::values::{Currency, HttpUrl, Market, Sku};

const VARIANTS: usize = 5;
const LOCATIONS: [&str; 2] = ["l0", "l1"];

#[derive(Debug, Clone)]
struct Item {
    /// An index into the catalog; `VARIANTS` names a SKU the store does not have.
    variant: usize,
    location: usize,
    available: i64,
    reserved: i64,
    observed_at: i64,
    sequence: Option<i64>,
}

#[derive(Debug, Clone)]
struct Round {
    /// An order for this variant first, before the batch.
    order: Option<usize>,
    items: Vec<Item>,
}

fn item() -> impl Strategy<Value = Item> {
    (
        0..=VARIANTS,
        0..LOCATIONS.len(),
        0..7i64,
        0..3i64,
        0..4i64,
        prop::option::of(0..4i64),
    )
        .prop_map(
            |(variant, location, available, reserved, observed_at, sequence)| Item {
                variant,
                location,
                available,
                reserved,
                observed_at,
                sequence,
            },
        )
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop::option::of(0..VARIANTS),
        prop::collection::vec(item(), 1..12),
    )
        .prop_map(|(order, items)| Round { order, items })
}

fn sku(variant: usize) -> String {
    format!("V{variant}")
}

static STORES: AtomicUsize = AtomicUsize::new(0);

/// A store whose variants differ in what decides their availability: thresholds
/// set on the variant, a pre-order variant (it never fires), and a market served by
/// one of the two locations.
async fn seed(db: &Db) -> StoreId {
    let slug = format!("s{}", STORES.fetch_add(1, Ordering::Relaxed));
    let store = db
        .create_store(NewStore::plain("S", &slug), 0)
        .await
        .expect("store")
        .store
        .store_id();
    let variants = (0..VARIANTS)
        .map(|i| VariantInput {
            min_stock: (i == 1).then_some(1),
            notify_threshold: (i == 2).then_some(3),
            inventory_policy: if i == 3 {
                InventoryPolicy::Preorder
            } else {
                InventoryPolicy::Deny
            },
            ..VariantInput::plain(Sku::parse(&sku(i)).expect("sku"), sku(i))
        })
        .collect();
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
        release: None,
        variants,
    };
    db.upsert_product(store, &product, 0)
        .await
        .expect("product");
    db.put_market(
        store,
        &Market::parse("eu").expect("market"),
        &["l1".to_string()],
        0,
    )
    .await
    .expect("market");
    store
}

fn update(i: &Item, base: i64) -> StockUpdate {
    StockUpdate {
        sku: Sku::parse(&sku(i.variant)).expect("sku"),
        location: LOCATIONS[i.location].into(),
        available: i.available,
        reserved: i.reserved,
        incoming: None,
        incoming_at_ms: None,
        available_until_ms: None,
        version: Version {
            observed_at_ms: base + i.observed_at,
            sequence: i.sequence,
        },
    }
}

macro_rules! rows {
    ($db:expr, $store:expr, $sql:expr, $ty:ty) => {
        match $db {
            Db::Sqlite(p) => {
                sqlx::query_as::<_, $ty>($sql)
                    .bind($store.0)
                    .fetch_all(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_as::<_, $ty>($sql)
                    .bind($store.0)
                    .fetch_all(p)
                    .await
            }
        }
        .expect("snapshot")
        .into_iter()
        .map(|r| format!("{r:?}"))
        .collect::<Vec<String>>()
    };
}

/// What a store's stock looks like, by SKU, ids left out (they differ by store).
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    levels: Vec<String>,
    states: Vec<String>,
    events: Vec<String>,
}

async fn snapshot(db: &Db, store: StoreId) -> Snapshot {
    let levels = rows!(
        db,
        store,
        "SELECT v.sku, l.location, l.available, l.reserved, l.observed_at, l.sequence, l.source, l.updated_at \
         FROM stock_levels l JOIN variants v ON v.id = l.variant_id WHERE l.store_id = $1 ORDER BY v.sku, l.location",
        (String, String, i64, i64, i64, Option<i64>, String, i64)
    );
    let mut states = rows!(
        db,
        store,
        "SELECT sku, available, in_stock, available_until, state_changed_at FROM variants \
         WHERE store_id = $1 ORDER BY sku",
        (String, i64, bool, Option<i64>, Option<i64>)
    );
    states.extend(rows!(
        db,
        store,
        "SELECT v.sku, m.market, m.available, m.in_stock, m.state_changed_at FROM variant_markets m \
         JOIN variants v ON v.id = m.variant_id WHERE m.store_id = $1 ORDER BY v.sku, m.market",
        (String, String, i64, bool, Option<i64>)
    ));
    let mut events = rows!(
        db,
        store,
        "SELECT v.sku, t.market, t.to_state, t.quantity, t.cause, t.at FROM availability_transitions t \
         JOIN variants v ON v.id = t.variant_id WHERE t.store_id = $1 ORDER BY v.sku, t.id",
        (String, Option<String>, String, i64, String, i64)
    );
    events.extend(rows!(
        db,
        store,
        "SELECT v.sku, e.market, e.quantity, e.available_until, e.policy, e.plan_state, e.created_at, \
                e.finished_at, e.next_run_at \
         FROM restock_events e JOIN variants v ON v.id = e.variant_id WHERE e.store_id = $1 ORDER BY v.sku, e.id",
        (String, Option<String>, i64, Option<i64>, Option<String>, String, i64, Option<i64>, Option<i64>)
    ));
    Snapshot {
        levels,
        states,
        events,
    }
}

/// Restocks as (SKU, market), sorted: what intake answers.
fn restocks(outs: &[BatchOutcome]) -> Vec<(String, Option<String>, i64)> {
    let mut r: Vec<_> = outs
        .iter()
        .flat_map(|o| &o.restocks)
        .map(|r| (r.sku.clone(), r.market.clone(), r.quantity))
        .collect();
    r.sort();
    r
}

fn counts(outs: &[BatchOutcome]) -> (u64, u64, usize, usize) {
    (
        outs.iter().map(|o| o.applied).sum(),
        outs.iter().map(|o| o.stale).sum(),
        outs.iter().map(|o| o.unknown_sku.len()).sum(),
        outs.iter().map(|o| o.rejection_ids.len()).sum(),
    )
}

async fn run_case(
    backend: Backend,
    rounds: Vec<Round>,
    one_per_variant: bool,
) -> Result<(), TestCaseError> {
    let t = TestDb::new(backend).await;
    let db = &t.db;
    // All at once; one batch per variant; one update at a time.
    let whole = seed(db).await;
    let per_variant = seed(db).await;
    let single = seed(db).await;
    let mut now = 1_000;
    for (r, round) in rounds.iter().enumerate() {
        now += 1_000;
        let mut items = round.items.clone();
        if one_per_variant {
            // Keep each variant's last item only.
            let mut seen = std::collections::BTreeSet::new();
            items.reverse();
            items.retain(|i| seen.insert(i.variant));
            items.reverse();
        }
        // Versions move forward a little each round, so stored levels are sometimes
        // newer and sometimes older than the round's updates.
        let base = r as i64 * 2;
        let updates: Vec<StockUpdate> = items.iter().map(|i| update(i, base)).collect();
        if let Some(v) = round.order {
            for store in [whole, per_variant, single] {
                let order = OrderInput {
                    order_ref: format!("o{now}"),
                    email: None,
                    customer_id: None,
                    source: "test".into(),
                    currency: None,
                    market: None,
                    ordered_at: now - 500,
                    lines: vec![OrderLineInput {
                        sku: Sku::parse(&sku(v)).expect("sku"),
                        quantity: 1,
                        price_minor: None,
                    }],
                };
                db.record_order(store, &order, now - 500)
                    .await
                    .expect("order");
            }
        }

        let a = db
            .apply_stock_batch(whole, "test", &updates, &[], now)
            .await
            .expect("batch");
        let mut b = Vec::new();
        for v in 0..=VARIANTS {
            let mine: Vec<StockUpdate> = items
                .iter()
                .filter(|i| i.variant == v)
                .map(|i| update(i, base))
                .collect();
            if !mine.is_empty() {
                b.push(
                    db.apply_stock_batch(per_variant, "test", &mine, &[], now)
                        .await
                        .expect("batch"),
                );
            }
        }
        let mut c = Vec::new();
        for u in &updates {
            c.push(
                db.apply_stock_batch(single, "test", std::slice::from_ref(u), &[], now)
                    .await
                    .expect("batch"),
            );
        }
        let a = [a];
        prop_assert_eq!(
            counts(&a),
            counts(&b),
            "round {}: counts differ from one batch per variant",
            r
        );
        prop_assert_eq!(
            counts(&a),
            counts(&c),
            "round {}: counts differ from one update at a time",
            r
        );
        prop_assert_eq!(
            restocks(&a),
            restocks(&b),
            "round {}: restocks differ from one batch per variant",
            r
        );
        let unknown: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.variant == VARIANTS)
            .map(|(n, _)| n)
            .collect();
        prop_assert_eq!(&a[0].unknown_sku, &unknown);

        let sa = snapshot(db, whole).await;
        let sb = snapshot(db, per_variant).await;
        let sc = snapshot(db, single).await;
        prop_assert_eq!(
            &sa,
            &sb,
            "round {}: batch and one batch per variant differ",
            r
        );
        prop_assert_eq!(
            &sa.levels,
            &sc.levels,
            "round {}: levels differ from one update at a time",
            r
        );
        if one_per_variant {
            prop_assert_eq!(
                restocks(&a),
                restocks(&c),
                "round {}: restocks differ from one update at a time",
                r
            );
            prop_assert_eq!(
                &sa,
                &sc,
                "round {}: batch and one update at a time differ",
                r
            );
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
    proptest!(config, |(rounds in prop::collection::vec(round(), 1..5), one_per_variant in any::<bool>())| {
        runtime.block_on(run_case(backend, rounds, one_per_variant))?;
    });
}

#[test]
fn a_batch_applies_as_its_pieces_do_on_sqlite() {
    check(Backend::Sqlite);
}

#[test]
fn a_batch_applies_as_its_pieces_do_on_postgres() {
    check(Backend::Postgres);
}

both_dbs!(
    concurrent_batches_on_the_same_variants_end_at_the_newest,
    |backend: Backend| async move {
        let t = TestDb::new(backend).await;
        let db = &t.db;
        let store = seed(db).await;
        for round in 0..10i64 {
            let at = 10 + round * 10;
            let items = |available: i64, observed_at: i64| -> Vec<StockUpdate> {
                (0..VARIANTS)
                    .map(|v| {
                        update(
                            &Item {
                                variant: v,
                                location: 0,
                                available,
                                reserved: 0,
                                observed_at,
                                sequence: None,
                            },
                            0,
                        )
                    })
                    .collect()
            };
            // Back in stock, and (newer) sold out again, racing; the sold-out batch
            // lists the variants in the other order.
            let up = items(6, at + 1);
            let mut down = items(0, at + 2);
            down.reverse();
            let (a, b) = tokio::join!(
                db.apply_stock_batch(store, "test", &up, &[], at),
                db.apply_stock_batch(store, "test", &down, &[], at),
            );
            let (a, b) = (a.expect("up"), b.expect("down"));
            assert_eq!(b.applied, VARIANTS as u64, "the newest always applies");
            assert_eq!(a.applied + a.stale, VARIANTS as u64);
            let snap = snapshot(db, store).await;
            for v in 0..VARIANTS {
                let sku = format!("\"V{v}\"");
                let level = snap
                    .levels
                    .iter()
                    .find(|l| l.starts_with(&format!("({sku}, \"l0\"")))
                    .expect("level");
                assert!(
                    level.contains(&format!("\"l0\", 0, 0, {}", at + 2)),
                    "{level}"
                );
                let state = snap
                    .states
                    .iter()
                    .find(|s| s.starts_with(&format!("({sku},")))
                    .expect("state");
                assert!(state.contains(", 0, false,"), "round {round}: {state}");
                // Whatever the interleaving, each restock was followed by its sold-out.
                let transitions: Vec<&String> = snap
                    .events
                    .iter()
                    .filter(|e| e.starts_with(&format!("({sku}, None, \"")))
                    .collect();
                let ins = transitions
                    .iter()
                    .filter(|e| e.contains("\"in_stock\""))
                    .count();
                let outs = transitions
                    .iter()
                    .filter(|e| e.contains("\"out_of_stock\""))
                    .count();
                assert_eq!(ins, outs, "round {round}: {transitions:?}");
            }
        }
        t.cleanup().await;
    }
);
