use super::*;
use crate::ids::{ContactPointId, ShopperId, SubscriptionId};
use crate::policy::{EarlyAccess, FrequencyCapSetting, QuietHoursSetting, StorePolicy};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, BTreeSet};

const H: i64 = 3_600_000;
const NOW: i64 = 1_772_366_400_000; // 2026-03-01 12:00 UTC

fn candidate(shopper: i64, signed_up: i64) -> Candidate {
    Candidate {
        shopper: ShopperId(shopper),
        subscriptions: vec![SubscriptionId(shopper * 10)],
        position: Position {
            signed_up_at_ms: signed_up,
            subscription: SubscriptionId(shopper * 10),
        },
        last_signup_at_ms: signed_up,
        tier: None,
        time_zone: None,
        preferred_channel: None,
        opt_outs: OptOuts::default(),
        contacts: vec![Contact {
            id: ContactPointId(shopper),
            channel: Channel::Email,
            address: format!("s{shopper}@x.test"),
            consent: true,
            suppressed: false,
        }],
        last_purchase_ms: None,
        message_times_ms: vec![],
        in_flight: false,
        decided: false,
    }
}

fn restock() -> Restock {
    Restock {
        category: Some("shoes".into()),
        at_ms: NOW,
    }
}

fn all_at_once(now: i64) -> Wave {
    Wave {
        number: 1,
        now_ms: now,
        room: None,
    }
}

fn plan(policy: &Policy, wave: Wave, page: Vec<Candidate>) -> PagePlan {
    plan_page(
        &restock(),
        policy,
        wave,
        &mut Tally::default(),
        page,
        &mut StdRng::seed_from_u64(7),
    )
}

#[test]
fn a_shoppers_variant_and_product_sign_ups_get_one_alert() {
    let mut product_level = candidate(1, NOW - 5 * H);
    product_level.subscriptions = vec![SubscriptionId(99)];
    product_level.position.subscription = SubscriptionId(99);
    let p = plan(
        &Policy::default(),
        all_at_once(NOW),
        vec![
            candidate(1, NOW - H),
            product_level,
            candidate(2, NOW - 2 * H),
        ],
    );
    assert_eq!(p.decisions.len(), 2);
    let one = p
        .decisions
        .iter()
        .find(|d| d.shopper == ShopperId(1))
        .expect("shopper 1");
    assert_eq!(one.subscriptions.len(), 2);
    assert_eq!(one.position.signed_up_at_ms, NOW - 5 * H);
}

#[test]
fn held_back_shoppers_carry_their_reason() {
    let policy = StorePolicy {
        recent_purchase_window_secs: Some(7 * 24 * 3600),
        interest_window_secs: Some(30 * 24 * 3600),
        ..StorePolicy::default()
    }
    .for_product(None);
    let mut opted = candidate(1, NOW - H);
    opted.opt_outs.categories = vec!["shoes".into()];
    let mut bought = candidate(2, NOW - H);
    bought.last_purchase_ms = Some(NOW - 24 * H);
    let mut old = candidate(3, NOW - 40 * 24 * H);
    old.last_signup_at_ms = NOW - 40 * 24 * H;
    let mut bounced = candidate(4, NOW - H);
    bounced.contacts[0].suppressed = true;
    let mut no_consent = candidate(5, NOW - H);
    no_consent.contacts[0].consent = false;
    let mut pending = candidate(6, NOW - H);
    pending.in_flight = true;
    let mut channel_out = candidate(7, NOW - H);
    channel_out.opt_outs.channels = vec![Channel::Email];
    let p = plan(
        &policy,
        all_at_once(NOW),
        vec![
            opted,
            bought,
            old,
            bounced,
            no_consent,
            pending,
            channel_out,
            candidate(8, NOW - H),
        ],
    );
    let reasons: BTreeMap<i64, Outcome> = p
        .decisions
        .iter()
        .map(|d| (d.shopper.0, d.outcome.clone()))
        .collect();
    assert_eq!(reasons[&1], Outcome::Hold(HoldReason::OptedOut));
    assert_eq!(reasons[&2], Outcome::Hold(HoldReason::RecentPurchase));
    assert_eq!(reasons[&3], Outcome::Hold(HoldReason::Expired));
    assert_eq!(reasons[&4], Outcome::Hold(HoldReason::Suppressed));
    assert_eq!(reasons[&5], Outcome::Hold(HoldReason::NoConsent));
    assert_eq!(reasons[&6], Outcome::Hold(HoldReason::AlreadyPending));
    assert_eq!(reasons[&7], Outcome::Hold(HoldReason::OptedOut));
    assert!(matches!(reasons[&8], Outcome::Send(_)));
}

#[test]
fn quiet_hours_defer_to_the_shoppers_morning() {
    let policy = StorePolicy {
        quiet_hours: Some(QuietHoursSetting {
            start: "21:00".into(),
            end: "08:00".into(),
        }),
        ..StorePolicy::default()
    }
    .for_product(None);
    let mut ny = candidate(1, NOW - H);
    ny.time_zone = Some(TimeZone::parse("America/New_York").expect("tz"));
    // 03:30 UTC on 2 March: 22:30 in New York, 03:30 in UTC (store zone).
    let now = 1_772_422_200_000;
    let p = plan(&policy, all_at_once(now), vec![ny, candidate(2, NOW - H)]);
    let at: BTreeMap<i64, (i64, Option<DeferReason>)> = p
        .decisions
        .iter()
        .filter_map(|d| match &d.outcome {
            Outcome::Send(s) => Some((d.shopper.0, (s.not_before_ms, s.deferred))),
            Outcome::Hold(_) => None,
        })
        .collect();
    assert_eq!(
        at[&1],
        (1_772_456_400_000, Some(DeferReason::QuietHours)),
        "08:00 New York"
    );
    assert_eq!(
        at[&2],
        (1_772_438_400_000, Some(DeferReason::QuietHours)),
        "08:00 UTC"
    );
}

#[test]
fn waves_take_shoppers_per_unit_in_order_and_keep_the_rest_waiting() {
    let policy = StorePolicy {
        release: Release::Waves {
            shoppers_per_unit: 2,
            interval_secs: 60,
        },
        ..StorePolicy::default()
    }
    .for_product(None);
    let room = Wave::capacity(&policy, 2);
    assert_eq!(room, Some(4));
    let page: Vec<Candidate> = (1..=10)
        .map(|i| candidate(i, NOW - 100 * H + i * H))
        .collect();
    let p = plan(
        &policy,
        Wave {
            number: 1,
            now_ms: NOW,
            room,
        },
        page,
    );
    let sent: Vec<i64> = p.decisions.iter().map(|d| d.shopper.0).collect();
    assert_eq!(sent, vec![1, 2, 3, 4]);
    assert_eq!(p.stopped, Some(Stop::WaveFull));
    assert_eq!(
        p.resume_after.map(|r| r.subscription),
        Some(SubscriptionId(40))
    );
}

#[test]
fn early_access_tiers_go_first_and_alone_inside_the_window() {
    let policy = StorePolicy {
        early_access: Some(EarlyAccess {
            tiers: vec!["vip".into(), "gold".into()],
            window_secs: 3600,
        }),
        ..StorePolicy::default()
    }
    .for_product(None);
    let mut gold = candidate(1, NOW - 9 * H);
    gold.tier = Some("gold".into());
    let mut vip = candidate(2, NOW - H);
    vip.tier = Some("vip".into());
    let page = vec![candidate(3, NOW - 10 * H), gold, vip];
    let inside = plan(&policy, all_at_once(NOW + 60_000), page.clone());
    let who: Vec<i64> = inside.decisions.iter().map(|d| d.shopper.0).collect();
    assert_eq!(who, vec![2, 1]);
    assert_eq!(inside.stopped, Some(Stop::EarlyAccessOnly));
    // Shopper 3 signed up first and is not decided: nothing before them is resumable.
    assert_eq!(inside.resume_after, None);
    let after = plan(&policy, all_at_once(NOW + 2 * H), page);
    assert_eq!(after.decisions.len(), 3);
}

#[test]
fn frequency_cap_defers_instead_of_dropping() {
    let policy = StorePolicy {
        frequency_cap: Some(FrequencyCapSetting {
            max_messages: 1,
            window_secs: 24 * 3600,
        }),
        ..StorePolicy::default()
    }
    .for_product(None);
    let mut capped = candidate(1, NOW - H);
    capped.message_times_ms = vec![NOW - 2 * H];
    let p = plan(&policy, all_at_once(NOW), vec![capped]);
    match &p.decisions[0].outcome {
        Outcome::Send(s) => {
            assert_eq!(s.not_before_ms, NOW + 22 * H);
            assert_eq!(s.deferred, Some(DeferReason::FrequencyCap));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn recheck_lets_a_late_opt_out_or_purchase_win() {
    let policy = Policy::default();
    let facts = SendFacts {
        now_ms: NOW,
        reminder: false,
        subscription_live: true,
        category: Some("shoes".into()),
        opt_outs: OptOuts::default(),
        channel: Channel::Email,
        contact_consent: true,
        contact_suppressed: false,
        in_stock: true,
        bought_since_planned: false,
        clicked: false,
        time_zone: None,
        sent_times_ms: vec![],
    };
    assert_eq!(recheck(&policy, &facts), Check::Go);
    let opted = SendFacts {
        opt_outs: OptOuts {
            all: true,
            ..OptOuts::default()
        },
        ..facts.clone()
    };
    assert_eq!(recheck(&policy, &opted), Check::Skip(HoldReason::OptedOut));
    let sold = SendFacts {
        in_stock: false,
        ..facts.clone()
    };
    assert_eq!(recheck(&policy, &sold), Check::Skip(HoldReason::SoldOut));
    let clicked = SendFacts {
        reminder: true,
        clicked: true,
        ..facts
    };
    assert_eq!(recheck(&policy, &clicked), Check::Skip(HoldReason::Acted));
}

// ---- properties: a whole restock planned page by page, wave by wave ----

#[derive(Debug, Clone)]
struct Shopper {
    tier: Option<&'static str>,
    zone: &'static str,
    opted_out: bool,
    bought: bool,
    capped_at: Option<i64>,
    two_sign_ups: bool,
}

fn shopper() -> impl Strategy<Value = Shopper> {
    (
        prop::option::weighted(0.2, prop::sample::select(vec!["vip", "gold"])),
        prop::sample::select(vec!["UTC", "America/New_York", "Asia/Tokyo"]),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.2, -30i64..0),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(tier, zone, opted_out, bought, capped_at, two)| Shopper {
            tier,
            zone,
            opted_out,
            bought,
            capped_at: capped_at.map(|h| NOW + h * H),
            two_sign_ups: two,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_restock_planned_in_pages_and_waves_keeps_every_rule(
        shoppers in prop::collection::vec(shopper(), 1..60),
        page_size in 1usize..12,
        waves in prop::option::of((1u32..3, 0i64..5)),
        early in any::<bool>(),
        holdout in prop::sample::select(vec![0.0, 10.0, 33.0, 50.0]),
        start_hour in 0i64..24,
        seed in any::<u64>(),
    ) {
        let store = StorePolicy {
            release: match waves { Some((r, _)) => Release::Waves { shoppers_per_unit: r, interval_secs: 60 }, None => Release::AllAtOnce },
            early_access: early.then(|| EarlyAccess { tiers: vec!["vip".into(), "gold".into()], window_secs: 1800 }),
            quiet_hours: Some(QuietHoursSetting { start: "22:00".into(), end: "07:00".into() }),
            frequency_cap: Some(FrequencyCapSetting { max_messages: 1, window_secs: 12 * 3600 }),
            recent_purchase_window_secs: Some(30 * 24 * 3600),
            holdout_percent: holdout,
            ..StorePolicy::default()
        };
        let policy = store.for_product(None);
        let r = Restock { category: Some("shoes".into()), at_ms: NOW + start_hour * H };
        let cands: Vec<Candidate> = shoppers.iter().enumerate().flat_map(|(i, s)| {
            let id = i as i64 + 1;
            let mut c = candidate(id, NOW - 1000 * H + id * H);
            c.tier = s.tier.map(str::to_string);
            c.time_zone = Some(TimeZone::parse(s.zone).expect("tz"));
            c.opt_outs.all = s.opted_out;
            c.last_purchase_ms = s.bought.then_some(NOW - 2 * H);
            c.message_times_ms = s.capped_at.into_iter().collect();
            let mut rows = vec![c.clone()];
            if s.two_sign_ups {
                // A product-level sign-up of the same shopper, later in the list.
                c.subscriptions = vec![SubscriptionId(id * 10 + 1)];
                c.position = Position { signed_up_at_ms: NOW - 10 * H + id, subscription: SubscriptionId(id * 10 + 1) };
                rows.push(c);
            }
            rows
        }).collect();
        // The waiting list in sign-up order, as storage pages it.
        let mut list = cands.clone();
        list.sort_by_key(|c| c.position);

        let mut rng = StdRng::seed_from_u64(seed);
        let mut tally = Tally::default();
        let mut decided: BTreeMap<i64, Decision> = BTreeMap::new();
        let mut now = r.at_ms;
        let mut cursor: Option<Position> = None;
        let available = waves.map_or(1, |(_, a)| a);
        for wave_no in 1..=200u32 {
            let room = Wave::capacity(&policy, available);
            let wave = Wave { number: wave_no, now_ms: now, room };
            let mut sends_this_wave = 0u64;
            // Early-access shoppers are fetched on their own first (phase 1), then
            // the list from the cursor (phase 2), as storage does.
            let mut phase1: Vec<Candidate> = list.iter().filter(|c| early_access_rank(&policy, c.tier.as_deref()).is_some()).cloned().collect();
            phase1.iter_mut().for_each(|c| c.decided = decided.contains_key(&c.shopper.0));
            let mut stop = None;
            if phase1.iter().any(|c| !c.decided) {
                let p = plan_page(&r, &policy, Wave { room: room.map(|x| x.saturating_sub(sends_this_wave)), ..wave }, &mut tally, phase1, &mut rng);
                sends_this_wave += p.sends;
                for d in p.decisions { prop_assert!(decided.insert(d.shopper.0, d).is_none(), "decided twice"); }
                stop = p.stopped;
            }
            while stop.is_none() {
                let rest: Vec<Candidate> = list.iter().filter(|c| cursor.is_none_or(|cur| c.position > cur)).take(page_size).cloned()
                    .map(|mut c| { c.decided = decided.contains_key(&c.shopper.0); c }).collect();
                if rest.is_empty() { break; }
                let p = plan_page(&r, &policy, Wave { room: room.map(|x| x.saturating_sub(sends_this_wave)), ..wave }, &mut tally, rest, &mut rng);
                sends_this_wave += p.sends;
                for d in p.decisions { prop_assert!(decided.insert(d.shopper.0, d).is_none(), "decided twice"); }
                if let Some(at) = p.resume_after { cursor = Some(at); }
                stop = p.stopped;
                if stop.is_none() && p.resume_after.is_none() { break; }
            }
            if let Some(room) = room { prop_assert!(sends_this_wave <= room, "wave {} sent {} > {}", wave_no, sends_this_wave, room); }
            if decided.len() == shoppers.len() || (room == Some(0)) { break; }
            now += 30 * 60_000;
        }
        // Every rule, over the whole restock.
        let eligible = decided.values().filter(|d| matches!(d.outcome, Outcome::Send(_) | Outcome::Hold(HoldReason::Holdout))).count() as u64;
        let held_out = decided.values().filter(|d| d.outcome == Outcome::Hold(HoldReason::Holdout)).count() as u64;
        prop_assert_eq!(held_out, holdouts_for(&policy, eligible));
        prop_assert_eq!(tally, Tally { eligible, held_out });
        let mut early_seen_after_other = false;
        let mut other_decided = false;
        let by_order: BTreeSet<((usize, Position), i64)> = cands.iter().map(|c| (order_key(&policy, c), c.shopper.0)).collect();
        for (_, id) in &by_order {
            let s = &shoppers[*id as usize - 1];
            let is_early = early && s.tier.is_some();
            match decided.get(id) {
                Some(_) if !is_early => other_decided = true,
                None if is_early && other_decided => early_seen_after_other = true,
                _ => {}
            }
        }
        prop_assert!(!early_seen_after_other, "an early-access shopper waited while another was told");
        for (id, d) in &decided {
            let s = &shoppers[*id as usize - 1];
            if let Outcome::Send(send) = &d.outcome {
                prop_assert!(!s.opted_out && !s.bought, "sent to an opted-out or recent purchaser");
                let q = policy.quiet_hours.expect("quiet hours set");
                prop_assert!(!q.is_quiet(send.not_before_ms, TimeZone::parse(s.zone).expect("tz")), "inside quiet hours");
                let cap = policy.frequency_cap.expect("cap set");
                prop_assert!(cap.fits(send.not_before_ms, &s.capped_at.into_iter().collect::<Vec<_>>()), "over the cap");
                if early && s.tier.is_none() {
                    prop_assert!(send.not_before_ms >= r.at_ms + 1800 * 1000 || send.wave > 0);
                }
            }
        }
    }
}
