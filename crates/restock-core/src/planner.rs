//! The planner: for one restock, who is told, on which channel, in which wave and
//! when — or why they are held back. Production runs exactly these functions:
//! storage fetches a page of waiting shoppers with their facts, [`plan_page`]
//! decides, storage writes the decisions; dispatch asks [`recheck`] right before
//! each send.
//!
//! Rules, in the order they are applied to a waiting shopper:
//! 1. One decision per shopper and restock: a shopper's variant-level and
//!    product-level sign-ups are one candidate, and a shopper already decided for
//!    this restock is passed over.
//! 2. Order: early-access tiers first (in the policy's order of tiers), then sign-up
//!    time. During the early-access window only early-access shoppers are told.
//! 3. Held back, with the reason recorded: opted out of everything or of the
//!    product's category; the sign-up's interest window passed; an alert about the
//!    same product already on its way; a recent purchase of the variant or product;
//!    no reachable contact (channel opted out, address suppressed, no consent).
//! 4. Wave: at most `shoppers_per_unit × available` sends per wave; the rest keep
//!    their place for the next wave.
//! 5. Holdout: exactly round(share × eligible) of the eligible shoppers, chosen at
//!    random, are held out (never sent) so lift can be measured.
//! 6. When: now, moved later (never dropped) by the frequency cap and by quiet hours
//!    in the shopper's time zone (else the store's).

use rand::Rng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::ids::{ContactPointId, ShopperId, SubscriptionId};
use crate::policy::{Policy, Release};
use crate::values::{Channel, TimeZone};

/// The status of a sign-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Waiting for a restock.
    Waiting,
    /// An alert went out; the sign-up is fulfilled.
    Notified,
    /// The shopper unsubscribed from a message's link.
    Unsubscribed,
    /// Cancelled before a restock, by the merchant or by the shopper's link.
    Cancelled,
    /// The shopper bought it.
    Purchased,
    /// The store's interest window passed.
    Expired,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 6] = [
        SubscriptionStatus::Waiting,
        SubscriptionStatus::Notified,
        SubscriptionStatus::Unsubscribed,
        SubscriptionStatus::Cancelled,
        SubscriptionStatus::Purchased,
        SubscriptionStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Waiting => "waiting",
            SubscriptionStatus::Notified => "notified",
            SubscriptionStatus::Unsubscribed => "unsubscribed",
            SubscriptionStatus::Cancelled => "cancelled",
            SubscriptionStatus::Purchased => "purchased",
            SubscriptionStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Why a shopper was not sent an alert for a restock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Opted out of everything, of the product's category, or of every channel they have.
    OptedOut,
    /// The sign-up's interest window passed.
    Expired,
    /// An alert about this product is already on its way to them.
    AlreadyPending,
    /// Bought the variant or product within the store's recent-purchase window.
    RecentPurchase,
    /// Every address of theirs bounced.
    Suppressed,
    /// No channel with consent.
    NoConsent,
    /// In the holdout group: never sent, so lift can be measured.
    Holdout,
    /// The sign-up ended (cancelled, unsubscribed, bought) before the send.
    Ended,
    /// The variant sold out again before the send.
    SoldOut,
    /// A reminder that is not needed: the shopper clicked or bought.
    Acted,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::OptedOut => "opted_out",
            HoldReason::Expired => "expired",
            HoldReason::AlreadyPending => "already_pending",
            HoldReason::RecentPurchase => "recent_purchase",
            HoldReason::Suppressed => "suppressed",
            HoldReason::NoConsent => "no_consent",
            HoldReason::Holdout => "holdout",
            HoldReason::Ended => "ended",
            HoldReason::SoldOut => "sold_out",
            HoldReason::Acted => "acted",
        }
    }
}

/// Why a message goes later than planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferReason {
    QuietHours,
    FrequencyCap,
}

impl DeferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeferReason::QuietHours => "quiet_hours",
            DeferReason::FrequencyCap => "frequency_cap",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "quiet_hours" => Some(DeferReason::QuietHours),
            "frequency_cap" => Some(DeferReason::FrequencyCap),
            _ => None,
        }
    }
}

/// The restock being planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restock {
    /// The product's category handle (category opt-outs name it).
    pub category: Option<String>,
    /// When the restock happened; the early-access window counts from here.
    pub at_ms: i64,
}

/// A shopper's place in a waiting list: when they signed up, and the sign-up's id
/// to break ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub signed_up_at_ms: i64,
    pub subscription: SubscriptionId,
}

/// What the shopper has opted out of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOuts {
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub channels: Vec<Channel>,
}

impl OptOuts {
    pub fn is_empty(&self) -> bool {
        !self.all && self.categories.is_empty() && self.channels.is_empty()
    }

    /// Opted out of everything, or of this category.
    pub fn excludes(&self, category: Option<&str>) -> bool {
        self.all || category.is_some_and(|c| self.categories.iter().any(|x| x == c))
    }
}

/// One of the shopper's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub id: ContactPointId,
    pub channel: Channel,
    pub address: String,
    /// A consent to this channel is on record and not withdrawn.
    pub consent: bool,
    /// The address bounced permanently.
    pub suppressed: bool,
}

/// A waiting shopper and the facts the rules need.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub shopper: ShopperId,
    /// The shopper's waiting sign-ups this restock answers (variant- and/or
    /// product-level).
    pub subscriptions: Vec<SubscriptionId>,
    /// Where they stand: their earliest sign-up this restock answers.
    pub position: Position,
    /// When they last signed up (the interest window counts from here).
    pub last_signup_at_ms: i64,
    pub tier: Option<String>,
    pub time_zone: Option<TimeZone>,
    pub preferred_channel: Option<Channel>,
    pub opt_outs: OptOuts,
    pub contacts: Vec<Contact>,
    /// Their latest purchase of this variant or product, if storage found one in the
    /// recent-purchase window.
    pub last_purchase_ms: Option<i64>,
    /// Their back-in-stock messages sent or scheduled (for the frequency cap).
    pub message_times_ms: Vec<i64>,
    /// An alert about this product is pending or being sent to them.
    pub in_flight: bool,
    /// Already decided for this restock (an earlier page or wave).
    pub decided: bool,
}

/// A decided alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub contact: ContactPointId,
    pub channel: Channel,
    pub address: String,
    pub wave: u32,
    /// Not before this time (ms since the epoch).
    pub not_before_ms: i64,
    /// Why it goes later than now, if it does.
    pub deferred: Option<DeferReason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Send(Send),
    Hold(HoldReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub shopper: ShopperId,
    pub subscriptions: Vec<SubscriptionId>,
    pub position: Position,
    pub outcome: Outcome,
}

/// The wave being filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wave {
    pub number: u32,
    pub now_ms: i64,
    /// Sends this wave may still make; `None` when everyone is told at once.
    pub room: Option<u64>,
}

impl Wave {
    /// The wave's size: unlimited when everyone is told at once, else
    /// `shoppers_per_unit × available`.
    pub fn capacity(policy: &Policy, available: i64) -> Option<u64> {
        match policy.release {
            Release::AllAtOnce => None,
            Release::Waves {
                shoppers_per_unit, ..
            } => Some(u64::from(shoppers_per_unit).saturating_mul(available.max(0) as u64)),
        }
    }

    /// When the wave after one that starts at `now_ms` may start.
    pub fn next_after(policy: &Policy, now_ms: i64) -> Option<i64> {
        match policy.release {
            Release::AllAtOnce => None,
            Release::Waves { interval_secs, .. } => {
                Some(now_ms.saturating_add(interval_secs.saturating_mul(1000)))
            }
        }
    }
}

/// Running counts kept with the restock across pages and waves, so the holdout
/// share is exact over the whole restock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub eligible: u64,
    pub held_out: u64,
}

/// Why a page stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The wave is full; the rest wait for the next wave.
    WaveFull,
    /// Inside the early-access window and the next shopper has no early access.
    EarlyAccessOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePlan {
    pub decisions: Vec<Decision>,
    /// Everyone at or before this position (in sign-up order) is decided; resume
    /// after it. `None` when nothing could be consumed.
    pub resume_after: Option<Position>,
    pub stopped: Option<Stop>,
    /// Sends decided in this page (they use the wave's room).
    pub sends: u64,
}

/// The rank of a tier in the early-access order; `None` for no early access.
pub fn early_access_rank(policy: &Policy, tier: Option<&str>) -> Option<usize> {
    let tier = tier?;
    policy.early_access_tiers.iter().position(|t| t == tier)
}

/// Whether `now` is inside the restock's early-access window.
pub fn in_early_access_window(policy: &Policy, restock: &Restock, now_ms: i64) -> bool {
    !policy.early_access_tiers.is_empty()
        && now_ms < restock.at_ms.saturating_add(policy.early_access_window_ms)
}

/// The order in which waiting shoppers are served.
pub fn order_key(policy: &Policy, c: &Candidate) -> (usize, Position) {
    (
        early_access_rank(policy, c.tier.as_deref()).unwrap_or(usize::MAX),
        c.position,
    )
}

/// The contact to use: the shopper's preferred channel first, then the store's
/// order; only channels not opted out, with consent, at addresses not suppressed.
fn choose_contact<'a>(
    policy: &Policy,
    opt_outs: &OptOuts,
    preferred: Option<Channel>,
    contacts: &'a [Contact],
) -> Result<&'a Contact, HoldReason> {
    let order = preferred
        .into_iter()
        .chain(policy.channels.iter().copied())
        .filter(|ch| policy.channels.contains(ch));
    let mut why = HoldReason::NoConsent;
    let mut seen_any = false;
    for ch in order {
        for c in contacts.iter().filter(|c| c.channel == ch) {
            seen_any = true;
            if opt_outs.channels.contains(&ch) {
                why = HoldReason::OptedOut;
            } else if c.suppressed {
                if why != HoldReason::OptedOut {
                    why = HoldReason::Suppressed;
                }
            } else if !c.consent {
                // NoConsent unless a stronger reason was seen.
            } else {
                return Ok(c);
            }
        }
    }
    if !seen_any {
        return Err(HoldReason::NoConsent);
    }
    Err(why)
}

/// Rules 3 for one candidate: the contact to use, or why they are held back.
pub fn judge<'a>(
    restock: &Restock,
    policy: &Policy,
    now_ms: i64,
    c: &'a Candidate,
) -> Result<&'a Contact, HoldReason> {
    if c.opt_outs.excludes(restock.category.as_deref()) {
        return Err(HoldReason::OptedOut);
    }
    if policy
        .interest_window_ms
        .is_some_and(|w| c.last_signup_at_ms.saturating_add(w) <= now_ms)
    {
        return Err(HoldReason::Expired);
    }
    if c.in_flight {
        return Err(HoldReason::AlreadyPending);
    }
    if let (Some(w), Some(at)) = (policy.recent_purchase_window_ms, c.last_purchase_ms)
        && at > now_ms.saturating_sub(w)
    {
        return Err(HoldReason::RecentPurchase);
    }
    choose_contact(policy, &c.opt_outs, c.preferred_channel, &c.contacts)
}

/// When a message may go: at or after `t`, within the frequency cap, outside quiet
/// hours in `tz` — and why it moved, if it did.
pub fn schedule(
    policy: &Policy,
    tz: TimeZone,
    t: i64,
    message_times_ms: &[i64],
) -> (i64, Option<DeferReason>) {
    let mut at = t;
    let mut reason = None;
    // Each step only moves later; a handful of rounds settles any real input.
    for _ in 0..8 {
        let mut moved = false;
        if let Some(cap) = policy.frequency_cap {
            let s = cap.next_slot(at, message_times_ms);
            if s > at {
                at = s;
                reason = Some(DeferReason::FrequencyCap);
                moved = true;
            }
        }
        if let Some(q) = policy.quiet_hours {
            let s = q.next_allowed(at, tz);
            if s > at {
                at = s;
                reason = Some(DeferReason::QuietHours);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    (at, reason)
}

/// How many of the first `n` eligible shoppers of a restock are held out:
/// round(share × n), halves up.
pub fn holdouts_for(policy: &Policy, n: u64) -> u64 {
    (n.saturating_mul(u64::from(policy.holdout_bps)) + 5_000) / 10_000
}

/// Plans one page of waiting shoppers for one wave of a restock.
pub fn plan_page<R: Rng + ?Sized>(
    restock: &Restock,
    policy: &Policy,
    wave: Wave,
    tally: &mut Tally,
    page: Vec<Candidate>,
    rng: &mut R,
) -> PagePlan {
    // One candidate per shopper: merge a shopper's rows, keeping their earliest place.
    let mut merged: Vec<Candidate> = Vec::with_capacity(page.len());
    let mut index: std::collections::HashMap<ShopperId, usize> = Default::default();
    for c in page {
        match index.get(&c.shopper) {
            Some(&i) => {
                let m = &mut merged[i];
                m.subscriptions.extend(c.subscriptions.iter().copied());
                m.position = m.position.min(c.position);
                m.last_signup_at_ms = m.last_signup_at_ms.max(c.last_signup_at_ms);
                m.in_flight |= c.in_flight;
                m.decided |= c.decided;
            }
            None => {
                index.insert(c.shopper, merged.len());
                merged.push(c);
            }
        }
    }
    let mut positions: Vec<Position> = merged.iter().map(|c| c.position).collect();
    positions.sort_unstable();
    merged.sort_by_key(|c| order_key(policy, c));

    let early_only = in_early_access_window(policy, restock, wave.now_ms);
    let mut consumed: std::collections::HashSet<Position> = Default::default();
    let mut decisions: Vec<Decision> = Vec::new();
    // Eligible shoppers of this page, waiting for the holdout draw.
    let mut eligible: Vec<(usize, ContactPointId, Channel, String)> = Vec::new();
    let mut stopped = None;
    let base_held = holdouts_for(policy, tally.eligible).max(tally.held_out);
    for (i, c) in merged.iter().enumerate() {
        if c.decided {
            consumed.insert(c.position);
            continue;
        }
        if early_only && early_access_rank(policy, c.tier.as_deref()).is_none() {
            stopped = Some(Stop::EarlyAccessOnly);
            break;
        }
        match judge(restock, policy, wave.now_ms, c) {
            Err(reason) => {
                consumed.insert(c.position);
                decisions.push(Decision {
                    shopper: c.shopper,
                    subscriptions: c.subscriptions.clone(),
                    position: c.position,
                    outcome: Outcome::Hold(reason),
                });
            }
            Ok(contact) => {
                let j = eligible.len() as u64 + 1;
                let held = holdouts_for(policy, tally.eligible + j).saturating_sub(base_held);
                let sends = j.saturating_sub(held);
                if wave.room.is_some_and(|room| sends > room) {
                    stopped = Some(Stop::WaveFull);
                    break;
                }
                consumed.insert(c.position);
                eligible.push((i, contact.id, contact.channel, contact.address.clone()));
            }
        }
    }
    // The holdout draw: exactly the share over the restock so far, at random.
    let n = eligible.len() as u64;
    let k = holdouts_for(policy, tally.eligible + n)
        .saturating_sub(base_held)
        .min(n);
    let held: std::collections::HashSet<usize> =
        sample(rng, n as usize, k as usize).into_iter().collect();
    tally.eligible += n;
    tally.held_out = base_held + k;
    let mut sends = 0;
    for (e, (i, contact, channel, address)) in eligible.into_iter().enumerate() {
        let c = &merged[i];
        let outcome = if held.contains(&e) {
            Outcome::Hold(HoldReason::Holdout)
        } else {
            sends += 1;
            let tz = c.time_zone.unwrap_or(policy.time_zone);
            let (not_before_ms, deferred) = schedule(policy, tz, wave.now_ms, &c.message_times_ms);
            Outcome::Send(Send {
                contact,
                channel,
                address,
                wave: wave.number,
                not_before_ms,
                deferred,
            })
        };
        decisions.push(Decision {
            shopper: c.shopper,
            subscriptions: c.subscriptions.clone(),
            position: c.position,
            outcome,
        });
    }
    let resume_after = positions
        .iter()
        .take_while(|p| consumed.contains(p))
        .last()
        .copied();
    PagePlan {
        decisions,
        resume_after,
        stopped,
        sends,
    }
}

/// What dispatch knows right before a send.
#[derive(Debug, Clone, PartialEq)]
pub struct SendFacts {
    pub now_ms: i64,
    pub reminder: bool,
    /// At least one of the sign-ups the message answers is still live (waiting, or
    /// for a reminder: fulfilled by its alert).
    pub subscription_live: bool,
    pub category: Option<String>,
    pub opt_outs: OptOuts,
    pub channel: Channel,
    pub contact_consent: bool,
    pub contact_suppressed: bool,
    /// The restock's scope is in stock now.
    pub in_stock: bool,
    /// Bought the variant or product since the message was planned.
    pub bought_since_planned: bool,
    /// Clicked the alert (reminders only).
    pub clicked: bool,
    pub time_zone: Option<TimeZone>,
    /// Their other back-in-stock messages already sent (for the cap).
    pub sent_times_ms: Vec<i64>,
}

/// The verdict right before a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Go,
    /// Not now: put it back, due at this time.
    Defer {
        until_ms: i64,
        reason: DeferReason,
    },
    /// Never: record why.
    Skip(HoldReason),
}

/// The last word before a message leaves: an opt-out, cancellation, purchase or
/// sell-out since planning wins; quiet hours and the cap move it later.
pub fn recheck(policy: &Policy, f: &SendFacts) -> Check {
    if !f.subscription_live {
        return Check::Skip(HoldReason::Ended);
    }
    if f.opt_outs.excludes(f.category.as_deref()) || f.opt_outs.channels.contains(&f.channel) {
        return Check::Skip(HoldReason::OptedOut);
    }
    if f.contact_suppressed {
        return Check::Skip(HoldReason::Suppressed);
    }
    if !f.contact_consent {
        return Check::Skip(HoldReason::NoConsent);
    }
    if f.bought_since_planned {
        return Check::Skip(if f.reminder {
            HoldReason::Acted
        } else {
            HoldReason::RecentPurchase
        });
    }
    if f.reminder && f.clicked {
        return Check::Skip(HoldReason::Acted);
    }
    if !f.in_stock {
        return Check::Skip(HoldReason::SoldOut);
    }
    let tz = f.time_zone.unwrap_or(policy.time_zone);
    match schedule(policy, tz, f.now_ms, &f.sent_times_ms) {
        (at, Some(reason)) if at > f.now_ms => Check::Defer {
            until_ms: at,
            reason,
        },
        _ => Check::Go,
    }
}

/// When the one reminder after an alert sent at `sent_at_ms` is due, if the policy
/// has reminders.
pub fn reminder_at(policy: &Policy, sent_at_ms: i64) -> Option<i64> {
    policy
        .reminder_after_ms
        .map(|d| sent_at_ms.saturating_add(d))
}

#[cfg(test)]
mod tests;
