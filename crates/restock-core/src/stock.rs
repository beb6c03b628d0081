//! Stock: which update is newest, and the availability state machine.
//!
//! ## Ordering
//! Sources deliver out of order and replay. Each stored level remembers the version of
//! the update that set it; an incoming update is applied only if [`Version::is_newer`]
//! says so. When both carry a source sequence, the sequence decides; otherwise the
//! source's observed time does, with the sequence breaking ties. An update equal to
//! the stored one is a replay and is ignored, which makes applying idempotent.
//!
//! ## Availability and the no-flap rule
//! A variant's available quantity is the sum over its locations. With the merchant's
//! minimum stock level `min` and notify threshold `notify`:
//!
//! - an **in-stock** variant becomes **out of stock** when available `<= min`;
//! - an **out-of-stock** variant becomes **in stock** only when available
//!   `> max(min, notify)` — that transition is a *restock event*.
//!
//! Between `min` and `max(min, notify)` the state does not change: a count that wobbles
//! inside that band fires nothing, and once a restock has fired, another can fire only
//! after the variant has really sold out again (fallen to `min` or below). Setting the
//! notify threshold above the minimum level is how a merchant widens the band. Within
//! one batch, a variant's transitions are judged once, on its total after the batch.

use serde::{Deserialize, Serialize};

/// The version of a stock observation: the source's observed time and, when the
/// source has one, its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub observed_at_ms: i64,
    pub sequence: Option<i64>,
}

impl Version {
    /// Whether `self` (incoming) supersedes `stored`.
    pub fn is_newer(&self, stored: &Version) -> bool {
        match (self.sequence, stored.sequence) {
            (Some(a), Some(b)) => a > b,
            _ => {
                (self.observed_at_ms, self.sequence.unwrap_or(i64::MIN))
                    > (stored.observed_at_ms, stored.sequence.unwrap_or(i64::MIN))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    InStock,
    OutOfStock,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::InStock => "in_stock",
            Availability::OutOfStock => "out_of_stock",
        }
    }

    pub fn from_in_stock(in_stock: bool) -> Self {
        if in_stock {
            Availability::InStock
        } else {
            Availability::OutOfStock
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Out of stock → in stock: a restock event.
    Restocked,
    /// In stock → out of stock.
    SoldOut,
}

/// The thresholds in force for one variant, already resolved through the fallback
/// chain variant → product → category → store (see [`resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub min_stock: i64,
    pub notify_threshold: i64,
}

impl Thresholds {
    /// The quantity an out-of-stock variant must exceed to count as restocked.
    pub fn restock_bar(&self) -> i64 {
        self.min_stock.max(self.notify_threshold)
    }
}

/// The first value set along the fallback chain, or the default.
pub fn resolve(chain: &[Option<i64>], default: i64) -> i64 {
    chain.iter().flatten().next().copied().unwrap_or(default)
}

/// The state machine: the next state for a variant whose total available quantity is
/// now `available`, and the transition if there is one.
pub fn next_state(
    current: Availability,
    available: i64,
    thresholds: Thresholds,
) -> (Availability, Option<Transition>) {
    match current {
        Availability::OutOfStock if available > thresholds.restock_bar() => {
            (Availability::InStock, Some(Transition::Restocked))
        }
        Availability::InStock if available <= thresholds.min_stock => {
            (Availability::OutOfStock, Some(Transition::SoldOut))
        }
        state => (state, None),
    }
}

/// The canonical stock update every source is turned into at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockUpdate {
    pub sku: crate::values::Sku,
    pub location: String,
    pub available: i64,
    /// Units of `available` reserved or committed: not for sale.
    pub reserved: i64,
    pub incoming: Option<i64>,
    pub incoming_at_ms: Option<i64>,
    /// Temporary or seasonal stock: counts as available until then.
    pub available_until_ms: Option<i64>,
    pub version: Version,
}

/// One location's stored level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub available: i64,
    pub version: Version,
}

/// Whether an incoming level replaces the stored one: it is newer, or it carries the
/// same version with a different quantity (a source whose clock is coarser than its
/// updates, or two receipt-stamped updates in one millisecond: the one received later
/// wins). The same version with the same quantity is a replay and changes nothing.
/// This is the one ordering rule; storage calls it for every update.
pub fn supersedes(incoming: &Level, stored: &Level) -> bool {
    if incoming.version == stored.version {
        return incoming.available != stored.available;
    }
    incoming.version.is_newer(&stored.version)
}

/// Applies an update to a location's level: returns the new level if it supersedes
/// what is stored (or nothing is stored), `None` if it is stale or a replay.
pub fn apply(stored: Option<&Level>, incoming: Level) -> Option<Level> {
    match stored {
        Some(level) if !supersedes(&incoming, level) => None,
        _ => Some(incoming),
    }
}

/// Whether a variant can fire "back in stock". A variant the merchant sells on
/// pre-order or back-order can always be bought, so a rising count is not news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InventoryPolicy {
    /// Sold only from stock: the default.
    #[default]
    Deny,
    Preorder,
    Backorder,
}

impl InventoryPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryPolicy::Deny => "deny",
            InventoryPolicy::Preorder => "preorder",
            InventoryPolicy::Backorder => "backorder",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deny" => Some(InventoryPolicy::Deny),
            "preorder" => Some(InventoryPolicy::Preorder),
            "backorder" => Some(InventoryPolicy::Backorder),
            _ => None,
        }
    }

    /// Whether a transition to in stock is announced to waiting shoppers.
    pub fn fires_restock(self) -> bool {
        self == InventoryPolicy::Deny
    }
}

/// What storage knows of one location's level when judging availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelFacts {
    pub location: String,
    pub available: i64,
    /// Units of `available` already reserved or committed to orders.
    pub reserved: i64,
    pub available_until_ms: Option<i64>,
    pub observed_at_ms: i64,
}

/// An order line the stock sources may not have seen yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedUnits {
    pub ordered_at_ms: i64,
    pub quantity: i64,
    /// The market the order ships to, if the order said so.
    pub market: Option<String>,
}

/// Available to sell in one scope: every location (`locations: None`) or the
/// locations serving one market.
///
/// Per location, what is on hand minus what is reserved (never below zero, so an
/// oversold location does not eat another's stock); expired temporary stock counts
/// nothing; incoming stock is not on hand and never counts. From the sum, orders
/// placed after the newest observation of these locations are subtracted: the
/// sources have not reported them yet. Orders naming a market count against that
/// market and the total; orders naming none only against the total. All sums
/// saturate, so no quantity can overflow.
pub fn available_to_sell(
    levels: &[LevelFacts],
    locations: Option<&[String]>,
    market: Option<&str>,
    orders: &[OrderedUnits],
    now_ms: i64,
) -> i64 {
    let in_scope = |l: &&LevelFacts| locations.is_none_or(|ls| ls.contains(&l.location));
    let mut total: i64 = 0;
    let mut newest: Option<i64> = None;
    for l in levels.iter().filter(in_scope) {
        newest = Some(newest.map_or(l.observed_at_ms, |n| n.max(l.observed_at_ms)));
        if l.available_until_ms.is_some_and(|u| u <= now_ms) {
            continue;
        }
        total = total.saturating_add(l.available.saturating_sub(l.reserved.max(0)).max(0));
    }
    let Some(newest) = newest else {
        return 0;
    };
    let unreported: i64 = orders
        .iter()
        .filter(|o| o.ordered_at_ms > newest)
        .filter(|o| market.is_none() || o.market.as_deref() == market)
        .fold(0i64, |acc, o| acc.saturating_add(o.quantity.max(0)));
    total.saturating_sub(unreported).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const T: Thresholds = Thresholds {
        min_stock: 0,
        notify_threshold: 0,
    };

    #[test]
    fn restock_needs_more_than_the_bar() {
        let t = Thresholds {
            min_stock: 2,
            notify_threshold: 5,
        };
        assert_eq!(
            next_state(Availability::OutOfStock, 5, t),
            (Availability::OutOfStock, None)
        );
        assert_eq!(
            next_state(Availability::OutOfStock, 6, t),
            (Availability::InStock, Some(Transition::Restocked))
        );
        // Inside the band an in-stock variant stays in stock.
        assert_eq!(
            next_state(Availability::InStock, 3, t),
            (Availability::InStock, None)
        );
        assert_eq!(
            next_state(Availability::InStock, 2, t),
            (Availability::OutOfStock, Some(Transition::SoldOut))
        );
    }

    #[test]
    fn flapping_inside_the_band_fires_once() {
        let t = Thresholds {
            min_stock: 0,
            notify_threshold: 3,
        };
        let mut state = Availability::OutOfStock;
        let mut restocks = 0;
        for qty in [4, 1, 3, 1, 2, 3, 1, 4] {
            let (next, tr) = next_state(state, qty, t);
            restocks += usize::from(tr == Some(Transition::Restocked));
            state = next;
        }
        assert_eq!(restocks, 1);
    }

    #[test]
    fn fallback_chain_takes_the_first_set_value() {
        assert_eq!(resolve(&[None, Some(3), Some(7)], 0), 3);
        assert_eq!(resolve(&[None, None], 4), 4);
    }

    #[test]
    fn sequence_beats_time_when_both_have_one() {
        let older_seq = Version {
            observed_at_ms: 2_000,
            sequence: Some(1),
        };
        let newer_seq = Version {
            observed_at_ms: 1_000,
            sequence: Some(2),
        };
        assert!(newer_seq.is_newer(&older_seq));
        assert!(!older_seq.is_newer(&newer_seq));
        assert!(!older_seq.is_newer(&older_seq), "a replay is not newer");
    }

    /// An update as a source would send it: location, quantity, and a unique version.
    #[derive(Debug, Clone)]
    struct Update {
        location: u8,
        qty: i64,
        version: Version,
    }

    fn updates(with_sequence: bool) -> impl Strategy<Value = Vec<Update>> {
        prop::collection::vec((0u8..3, 0i64..6), 1..24).prop_map(move |raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (location, qty))| Update {
                    location,
                    qty,
                    // Distinct, increasing versions in generation (= real) order.
                    version: if with_sequence {
                        Version {
                            observed_at_ms: 1_000 - i as i64,
                            sequence: Some(i as i64),
                        }
                    } else {
                        Version {
                            observed_at_ms: 1_000 + i as i64,
                            sequence: None,
                        }
                    },
                })
                .collect()
        })
    }

    /// Applies updates in the given arrival order, judging the state machine after
    /// every applied update; returns final levels and the number of restocks.
    fn run(arrivals: &[Update], t: Thresholds) -> (BTreeMap<u8, i64>, usize, Vec<i64>) {
        let mut levels: BTreeMap<u8, Level> = BTreeMap::new();
        let mut state = Availability::OutOfStock;
        let mut restocks = 0;
        let mut totals = Vec::new();
        for u in arrivals {
            let incoming = Level {
                available: u.qty,
                version: u.version,
            };
            if let Some(level) = apply(levels.get(&u.location), incoming) {
                levels.insert(u.location, level);
                let total: i64 = levels.values().map(|l| l.available).sum();
                totals.push(total);
                let (next, tr) = next_state(state, total, t);
                restocks += usize::from(tr == Some(Transition::Restocked));
                state = next;
            }
        }
        (
            levels.into_iter().map(|(k, v)| (k, v.available)).collect(),
            restocks,
            totals,
        )
    }

    /// Independent model: restock count = number of rises above the bar after being at
    /// or below the minimum (or never having been in stock).
    fn count_real_restocks(totals: &[i64], t: Thresholds) -> usize {
        let mut armed = true;
        let mut n = 0;
        for &total in totals {
            if armed && total > t.restock_bar() {
                n += 1;
                armed = false;
            } else if !armed && total <= t.min_stock {
                armed = true;
            }
        }
        n
    }

    fn lf(loc: &str, available: i64, reserved: i64, observed: i64) -> LevelFacts {
        LevelFacts {
            location: loc.into(),
            available,
            reserved,
            available_until_ms: None,
            observed_at_ms: observed,
        }
    }

    #[test]
    fn available_to_sell_subtracts_reservations_expiry_and_unreported_orders() {
        let levels = vec![
            lf("a", 10, 3, 100),
            lf("b", 2, 5, 100), // oversold: counts 0, not -3
            LevelFacts {
                available_until_ms: Some(50),
                ..lf("c", 7, 0, 90)
            },
        ];
        assert_eq!(available_to_sell(&levels, None, None, &[], 60), 7);
        let eu = vec!["a".to_string()];
        assert_eq!(
            available_to_sell(&levels, Some(&eu), Some("eu"), &[], 60),
            7
        );
        let orders = vec![
            OrderedUnits {
                ordered_at_ms: 99,
                quantity: 4,
                market: None,
            }, // reported
            OrderedUnits {
                ordered_at_ms: 101,
                quantity: 2,
                market: None,
            }, // not yet
            OrderedUnits {
                ordered_at_ms: 102,
                quantity: 1,
                market: Some("eu".into()),
            },
        ];
        assert_eq!(available_to_sell(&levels, None, None, &orders, 60), 4);
        assert_eq!(
            available_to_sell(&levels, Some(&eu), Some("eu"), &orders, 60),
            6
        );
        let none: Vec<String> = vec![];
        assert_eq!(
            available_to_sell(&levels, Some(&none), Some("us"), &orders, 60),
            0
        );
    }

    #[test]
    fn same_version_different_quantity_supersedes_but_a_replay_does_not() {
        let v = Version {
            observed_at_ms: 5,
            sequence: None,
        };
        let stored = Level {
            available: 3,
            version: v,
        };
        assert!(!supersedes(
            &Level {
                available: 3,
                version: v
            },
            &stored
        ));
        assert!(supersedes(
            &Level {
                available: 4,
                version: v
            },
            &stored
        ));
        let older = Version {
            observed_at_ms: 4,
            sequence: None,
        };
        assert!(!supersedes(
            &Level {
                available: 9,
                version: older
            },
            &stored
        ));
    }

    #[test]
    fn only_stock_sold_from_the_shelf_fires() {
        assert!(InventoryPolicy::Deny.fires_restock());
        assert!(!InventoryPolicy::Preorder.fires_restock());
        assert!(!InventoryPolicy::Backorder.fires_restock());
    }

    proptest! {
        #[test]
        fn available_to_sell_never_overflows_or_goes_negative(
            qs in prop::collection::vec((any::<i64>(), any::<i64>()), 0..6),
            orders in prop::collection::vec(any::<i64>(), 0..4),
        ) {
            let levels: Vec<LevelFacts> = qs.iter().enumerate()
                .map(|(i, (a, r))| lf(&i.to_string(), *a, *r, 0)).collect();
            let orders: Vec<OrderedUnits> = orders.into_iter()
                .map(|q| OrderedUnits { ordered_at_ms: 1, quantity: q, market: None }).collect();
            let ats = available_to_sell(&levels, None, None, &orders, 0);
            prop_assert!(ats >= 0);
        }

        #[test]
        fn any_arrival_order_ends_at_the_newest_state(
            ups in updates(false),
            seed in any::<u64>(),
            with_seq in any::<bool>(),
        ) {
            let ups: Vec<Update> = if with_seq {
                ups.into_iter().enumerate().map(|(i, mut u)| {
                    u.version = Version { observed_at_ms: 5_000 - i as i64, sequence: Some(i as i64) };
                    u
                }).collect()
            } else { ups };
            // Newest per location, by generation order.
            let mut expected: BTreeMap<u8, i64> = BTreeMap::new();
            for u in &ups { expected.insert(u.location, u.qty); }

            let mut shuffled = ups.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            // Replays of random updates must change nothing.
            let mut with_replays = shuffled.clone();
            with_replays.extend(shuffled.iter().step_by(2).cloned());

            let (levels, restocks, totals) = run(&with_replays, T);
            prop_assert_eq!(levels, expected);
            prop_assert_eq!(restocks, count_real_restocks(&totals, T));
        }

        #[test]
        fn in_order_delivery_fires_once_per_real_transition(
            ups in updates(true),
            min in 0i64..3,
            extra in 0i64..4,
        ) {
            let t = Thresholds { min_stock: min, notify_threshold: min + extra };
            let (_, restocks, totals) = run(&ups, t);
            prop_assert_eq!(totals.len(), ups.len(), "in-order updates are all applied");
            prop_assert_eq!(restocks, count_real_restocks(&totals, t));
        }

        #[test]
        fn state_is_consistent_with_quantity(qtys in prop::collection::vec(0i64..10, 1..40), min in 0i64..4, extra in 0i64..4) {
            let t = Thresholds { min_stock: min, notify_threshold: min + extra };
            let mut state = Availability::OutOfStock;
            for q in qtys {
                state = next_state(state, q, t).0;
                if q <= t.min_stock { prop_assert_eq!(state, Availability::OutOfStock); }
                if q > t.restock_bar() { prop_assert_eq!(state, Availability::InStock); }
            }
        }
    }
}
