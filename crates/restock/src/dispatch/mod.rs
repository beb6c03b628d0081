//! Dispatch: claim due notifications, check the variant is still available, render,
//! send, record. Claims are committed before any network call; outcomes are fenced
//! by attempt number; failures follow `restock_core::retry`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use restock_core::planner::{Check, HoldReason, SendFacts, recheck, reminder_at};
use restock_core::retry::{Decision, Failure};
use restock_core::token::Purpose;
use restock_core::values::{Channel, TimeZone};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::app::App;
use crate::channels::EmailMessage;
use crate::render::Links;
use crate::storage::demand::parse_opt_outs;
use crate::storage::outbox::{Claimed, Record, RestockFacts, ShopperFacts, Write};
use crate::storage::stock::parse_restock_policy;

pub mod record;

/// What happened to one claimed notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Retry,
    Failed,
    Dead,
    Skipped,
    /// Not now: quiet hours or the frequency cap; due again later.
    Deferred,
    /// Another worker owns the row now (our lease expired); nothing recorded.
    Lost,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
            Outcome::Dead => "dead",
            Outcome::Skipped => "skipped",
            Outcome::Deferred => "deferred",
            Outcome::Lost => "lost",
        }
    }
}

/// The most outcomes written in one group commit.
const MAX_GROUP: usize = 500;
/// Group commits in flight at once on PostgreSQL: while one group commits, the next
/// is written (about a sixth more sends a second than one at a time, measured with
/// `restock bench --email`). SQLite has one writer, so one.
const PG_RECORDERS: usize = 2;

/// Sends in flight plus outcomes awaiting their group commit, per unit of
/// `dispatch.concurrency`; a crash can send that many again.
///
/// On PostgreSQL a group commit waits for its WAL flush, and outcomes wait for the
/// group before theirs: with room for only 2 × the concurrency, sends stalled on
/// the cap with groups of about 8, and `restock bench --email` ran at 55 % of raw
/// `smtp-source` (6,300 /s, 2 vCPU Xeon). With 8 ×, groups average 21, each row costs
/// the database less, and the same run reaches 80–86 % (9,300–9,700 /s); 4 × gave
/// 70 %, 6 × 73 %. SQLite's single writer gained nothing from more room (8,049 /s
/// at 2 ×, 7,798 at 4 ×, 7,274 at 8 ×), so it keeps the smaller bound.
pub fn unrecorded_per_send(db: &crate::storage::Db) -> usize {
    match db {
        crate::storage::Db::Sqlite(_) => 2,
        crate::storage::Db::Postgres(_) => 8,
    }
}

/// What delivering a batch shares: the app, the outcome recorder and the claims held.
///
/// A send's slot is freed as soon as the channel answers, so the next send starts
/// while the outcome waits for its group commit. Sends in flight plus outcomes not
/// yet committed are capped (`unrecorded`, [`unrecorded_per_send`] × the
/// concurrency): that bounds what a crash can cause to go out twice (a message
/// sent, its outcome not yet committed), each with its stable Message-ID.
#[derive(Clone)]
struct Deliver {
    app: App,
    recorder: Recorder,
    leases: Leases,
    unrecorded: Arc<Semaphore>,
    slots: Arc<Semaphore>,
}

impl Deliver {
    fn start(app: &App, stop: CancellationToken) -> Deliver {
        let leases = Leases::default();
        tokio::spawn(renew_leases(app.clone(), leases.clone(), stop));
        let concurrency = app.config.dispatch.concurrency;
        Deliver {
            app: app.clone(),
            recorder: Recorder::start(app),
            leases,
            unrecorded: Arc::new(Semaphore::new(unrecorded_per_send(&app.db) * concurrency)),
            slots: Arc::new(Semaphore::new(concurrency)),
        }
    }

    /// Waits for room to start a send: a slot, and room under the unrecorded cap.
    async fn room(&self) -> Room {
        // Neither semaphore is ever closed.
        let unrecorded = self.unrecorded.clone().acquire_owned().await.ok();
        let slot = self.slots.clone().acquire_owned().await.ok();
        Room { unrecorded, slot }
    }
}

/// Held from the start of a send: `slot` until the channel answers, `unrecorded`
/// until the outcome is committed.
struct Room {
    unrecorded: Option<OwnedSemaphorePermit>,
    slot: Option<OwnedSemaphorePermit>,
}

/// Runs every notification that is due now, until none is left, and returns how
/// many were processed. Tests and the demo drive delivery with this.
pub async fn run_pending(app: &App) -> anyhow::Result<usize> {
    let stop = CancellationToken::new();
    let _stop_renewing = stop.clone().drop_guard();
    let deliver = Deliver::start(app, stop);
    let mut total = 0;
    loop {
        app.db.reap_expired_leases(app.now()).await?;
        app.db.expire_temporary_stock(app.now(), 1000).await?;
        app.db.expire_subscriptions(app.now(), 1000).await?;
        crate::planning::plan_due(app).await?;
        let d = &app.config.dispatch;
        let claimed = app
            .db
            .claim_due(app.now(), d.lease_secs * 1000, d.batch_size)
            .await?;
        if claimed.is_empty() {
            return Ok(total);
        }
        total += claimed.len();
        let claimed_at = Instant::now();
        deliver.leases.hold(&claimed);
        let ready = prepare(app, claimed).await?;
        let mut tasks = JoinSet::new();
        for p in ready {
            let room = deliver.room().await;
            let deliver = deliver.clone();
            tasks.spawn(async move { deliver.one(p, room, claimed_at).await });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// The worker: a feeder claims due notifications in batches and reads what they need
/// (one set of queries per batch) into a queue; each free send slot takes the next
/// one at once; outcomes are written in group commits; leases of everything held
/// are renewed. Nothing waits on a timer while there is work. On `shutdown` it stops
/// claiming, gives back what was claimed but not started, and lets the sends in
/// flight finish and be recorded.
pub async fn run_worker(app: App, shutdown: CancellationToken) {
    let d = app.config.dispatch.clone();
    let stop = CancellationToken::new();
    let deliver = Deliver::start(&app, stop.clone());
    let queue = 2 * (d.batch_size as usize).max(d.concurrency);
    let (tx, mut rx) = mpsc::channel::<Ready>(queue);
    let feeder = tokio::spawn(feed(
        app.clone(),
        deliver.leases.clone(),
        tx,
        shutdown.clone(),
    ));
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    tracing::info!(concurrency = d.concurrency, "dispatch worker started");
    loop {
        let room = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            room = deliver.room() => room,
        };
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = rx.recv() => next,
        };
        let Some((ready, claimed_at)) = next else {
            break;
        };
        while tasks.try_join_next().is_some() {}
        let deliver = deliver.clone();
        tasks.spawn(async move { deliver.one(ready, room, claimed_at).await });
    }
    if let Err(e) = feeder.await {
        tracing::error!(error = %e, "dispatch feeder stopped abnormally");
    }
    // Claimed but not started: back to the queue, not left to their lease.
    rx.close();
    let mut unstarted = Vec::new();
    while let Some((ready, _)) = rx.recv().await {
        unstarted.push(ready);
    }
    give_back(&app, &deliver.leases, unstarted).await;
    while tasks.try_join_next().is_some() {}
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(
            in_flight,
            "dispatch stopping: letting sends in flight finish"
        );
    }
    while tasks.join_next().await.is_some() {}
    stop.cancel();
    tracing::info!("dispatch worker stopped");
}

/// A claimed notification with what its send needs, and when it was claimed.
type Ready = (Prepared, Instant);

/// Claims while the queue has room for a batch and reads the batch's facts; naps
/// only when nothing is due (woken at once by work planned in this process).
async fn feed(app: App, leases: Leases, tx: mpsc::Sender<Ready>, shutdown: CancellationToken) {
    let d = app.config.dispatch.clone();
    let batch = (d.batch_size as usize).min(tx.max_capacity() / 2).max(1);
    let mut last_housekeeping = 0;
    while !shutdown.is_cancelled() {
        let now = app.now();
        if now - last_housekeeping >= 1000 {
            last_housekeeping = now;
            housekeeping(&app, now).await;
        }
        // Wait until a whole batch fits, so claims come in batches, not one by one
        // as slots free up; wake at least once a second for housekeeping.
        let room = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = tx.reserve_many(batch) => r.is_ok(),
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        if !room {
            break;
        }
        let limit = tx.capacity().min(d.batch_size as usize) as i64;
        let claim = async {
            let _turn = app.write_turns.take().await;
            app.db
                .claim_due(app.now(), d.lease_secs * 1000, limit)
                .await
        };
        let claimed = match claim.await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "claiming notifications");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = app.work_ready.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(d.poll_interval_ms)) => {}
            }
            continue;
        }
        let claimed_at = Instant::now();
        leases.hold(&claimed);
        let ids: Vec<i64> = claimed.iter().map(|n| n.id).collect();
        match prepare(&app, claimed).await {
            Ok(ready) => {
                let mut ready = ready.into_iter();
                while let Some(p) = ready.next() {
                    let room = tokio::select! {
                        biased;
                        room = tx.reserve() => room.ok(),
                        _ = shutdown.cancelled() => None,
                    };
                    match room {
                        Some(room) => room.send((p, claimed_at)),
                        None => {
                            give_back(&app, &leases, std::iter::once(p).chain(ready).collect())
                                .await;
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                // Stop holding them: their leases lapse and they are taken over.
                tracing::warn!(error = %e, "reading a claimed batch's facts");
                leases.release(&ids);
            }
        }
    }
}

/// Returns claims that will not be started (the worker is stopping) to the queue.
async fn give_back(app: &App, leases: &Leases, unstarted: Vec<Prepared>) {
    let ids: Vec<i64> = unstarted.iter().map(|p| p.n.id).collect();
    let now = app.now();
    let records: Vec<Record> = unstarted
        .into_iter()
        .map(|p| Record {
            n: p.n,
            write: Write::Release,
            at: now,
        })
        .collect();
    let _turn = app.write_turns.take().await;
    if let Err(e) = app.db.record_outcomes(&records).await {
        tracing::warn!(error = %e, "giving back claims; their leases will lapse instead");
    }
    leases.release(&ids);
}

/// Claims this process holds, by notification id, with the attempt that claimed it.
#[derive(Clone, Default)]
struct Leases(Arc<std::sync::Mutex<HashMap<i64, i64>>>);

impl Leases {
    fn hold(&self, claimed: &[Claimed]) {
        if let Ok(mut held) = self.0.lock() {
            held.extend(claimed.iter().map(|n| (n.id, n.attempts)));
        }
    }

    fn release(&self, ids: &[i64]) {
        if let Ok(mut held) = self.0.lock() {
            for id in ids {
                held.remove(id);
            }
        }
    }

    fn snapshot(&self) -> Vec<(i64, i64)> {
        self.0
            .lock()
            .map(|held| held.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
}

/// Every third of a lease, extends the leases of everything held, so a claim is
/// never taken over while this process is alive and working on it.
async fn renew_leases(app: App, leases: Leases, stop: CancellationToken) {
    let lease_ms = app.config.dispatch.lease_secs * 1000;
    let every = Duration::from_millis((lease_ms / 3).max(50) as u64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let held = leases.snapshot();
        if held.is_empty() {
            continue;
        }
        let _turn = app.write_turns.take().await;
        match app.db.renew_leases(&held, app.now() + lease_ms).await {
            Ok(n) => app.metrics.lease_renewals.inc_by(n),
            Err(e) => tracing::warn!(error = %e, held = held.len(), "renewing leases"),
        }
    }
}

/// Writes outcomes in group commits: while one write runs, the next outcomes gather
/// and go together in the next transaction ([`PG_RECORDERS`] writers on PostgreSQL,
/// each taking the next group when it is free).
#[derive(Clone)]
struct Recorder {
    tx: mpsc::Sender<Pending>,
}

/// An outcome to write, and who waits to hear whether it was written.
type Pending = (Record, oneshot::Sender<bool>);

impl Recorder {
    fn start(app: &App) -> Recorder {
        let (tx, rx) = mpsc::channel(MAX_GROUP * 2);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let writers = match app.db {
            crate::storage::Db::Sqlite(_) => 1,
            crate::storage::Db::Postgres(_) => PG_RECORDERS,
        };
        for _ in 0..writers {
            tokio::spawn(record_groups(app.clone(), rx.clone()));
        }
        Recorder { tx }
    }

    /// Whether the outcome was written (false: another attempt owns the row now,
    /// or it could not be written and the lease will hand it over).
    async fn record(&self, r: Record) -> bool {
        let (done, written) = oneshot::channel();
        if self.tx.send((r, done)).await.is_err() {
            return false;
        }
        written.await.unwrap_or(false)
    }
}

/// [`Db::record_outcomes`](crate::storage::Db::record_outcomes) in a write turn.
async fn record_in_turn(
    app: &App,
    records: &[Record],
) -> Result<Vec<bool>, crate::storage::StorageError> {
    let _turn = app.write_turns.take().await;
    app.db.record_outcomes(records).await
}

async fn record_groups(app: App, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        if rx.lock().await.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let (records, answers): (Vec<Record>, Vec<oneshot::Sender<bool>>) = group.drain(..).unzip();
        app.metrics.record_batch.observe(records.len() as f64);
        let first = records[0].n.id;
        let written = match record::durably(first, || record_in_turn(&app, &records)).await {
            Ok(owned) => owned,
            Err(e) => {
                // Not an outage: record one by one so one bad row fails alone.
                tracing::warn!(error = %crate::util::ErrorChain(&e), "recording a group of outcomes; retrying one by one");
                let mut owned = Vec::with_capacity(records.len());
                for r in &records {
                    let one = std::slice::from_ref(r);
                    owned.push(match record::durably(r.n.id, || record_in_turn(&app, one)).await {
                        Ok(v) => v.first().copied().unwrap_or(false),
                        Err(e) => {
                            // The lease will expire and the row be taken over.
                            tracing::error!(id = r.n.id, error = %crate::util::ErrorChain(&e), "dispatch failed to record an outcome");
                            false
                        }
                    });
                }
                owned
            }
        };
        for ((answer, owned), r) in answers.into_iter().zip(written).zip(&records) {
            if owned && matches!(r.write, Write::Sent { .. }) {
                app.events.emit(
                    "notification.sent",
                    Some(restock_core::ids::StoreId(r.n.store_id)),
                    serde_json::json!({
                        "notification_id": r.n.id,
                        "subscription_id": r.n.subscription_id,
                        "shopper_id": r.n.shopper_id,
                        "restock_id": r.n.restock_event_id,
                        "variant_id": r.n.variant_id,
                        "purpose": r.n.purpose,
                        "channel": r.n.channel,
                        "sent_at": r.at,
                    }),
                );
            }
            let _ = answer.send(owned);
        }
    }
}

/// Reads a claimed batch's facts and pairs each notification with its own.
async fn prepare(app: &App, claimed: Vec<Claimed>) -> anyhow::Result<Vec<Prepared>> {
    let mut facts = app.db.batch_facts(&claimed).await?;
    // The frequency cap reads the shoppers' recent sends; only when some restock in
    // the batch has one (its window decides how far back).
    let widest_cap = facts
        .restocks
        .values()
        .filter_map(|r| parse_restock_policy(r.policy.as_deref()).frequency_cap)
        .map(|cap| cap.window_ms)
        .max();
    let sent_times = match widest_cap {
        Some(window) => {
            let mut shoppers: Vec<i64> = claimed.iter().map(|n| n.shopper_id).collect();
            shoppers.sort_unstable();
            shoppers.dedup();
            app.db.recent_sends(&shoppers, app.now() - window).await?
        }
        None => HashMap::new(),
    };
    Ok(claimed
        .into_iter()
        .map(|n| Prepared {
            restock: facts.restocks.get(&n.restock_event_id).cloned(),
            shopper: facts.shoppers.remove(&n.id),
            sent_times: sent_times.get(&n.shopper_id).cloned().unwrap_or_default(),
            n,
        })
        .collect())
}

/// A claimed notification with the facts its send is decided on.
pub struct Prepared {
    n: Claimed,
    restock: Option<Arc<RestockFacts>>,
    shopper: Option<ShopperFacts>,
    sent_times: Vec<i64>,
}

/// Once a second: take over claims whose worker died, re-judge variants whose
/// temporary stock ran out, and end sign-ups past the store's interest window.
async fn housekeeping(app: &App, now: i64) {
    let _turn = app.write_turns.take().await;
    if let Err(e) = app.db.reap_expired_leases(now).await {
        tracing::warn!(error = %e, "reaping expired leases");
    }
    match app.db.expire_temporary_stock(now, 1000).await {
        Ok(n) if n > 0 => app.plan_ready.notify_one(),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "expiring temporary stock"),
    }
    if let Err(e) = app.db.expire_subscriptions(now, 1000).await {
        tracing::warn!(error = %e, "expiring sign-ups");
    }
    crate::dispatch::record::purge_if_due(app, now).await;
}

impl Deliver {
    /// Delivers one notification: decides, sends, frees the send slot, then records
    /// the outcome through the group commit. Never panics on data.
    async fn one(&self, p: Prepared, room: Room, claimed_at: Instant) -> Outcome {
        let app = &self.app;
        let waited = claimed_at.elapsed();
        app.metrics.claim_wait.observe(waited.as_secs_f64());
        if waited.as_millis() as i64 > app.config.dispatch.lease_secs * 500 {
            app.metrics.slow_claims.inc();
            tracing::warn!(
                waited_ms = waited.as_millis() as u64,
                lease_secs = app.config.dispatch.lease_secs,
                "a claim waited over half its lease before sending: dispatch is behind"
            );
        }
        let span = info_span!(
            "notification",
            id = p.n.id,
            store = p.n.store_id,
            attempt = p.n.attempts
        );
        async {
            let Room { unrecorded, slot } = room;
            let write = decide_and_send(app, &p).await;
            drop(slot);
            let at = app.now();
            let outcome = self.record(p.n, write, at).await;
            drop(unrecorded);
            app.metrics
                .sends
                .with_label_values(&[app.email.name(), outcome.label()])
                .inc();
            tracing::debug!(outcome = outcome.label(), "notification processed");
            outcome
        }
        .instrument(span)
        .await
    }

    async fn record(&self, n: Claimed, write: Write, at: i64) -> Outcome {
        let id = n.id;
        let outcome = match &write {
            Write::Sent { .. } => Outcome::Sent,
            Write::Retry { .. } => Outcome::Retry,
            Write::Final { state: "dead", .. } => Outcome::Dead,
            Write::Final {
                state: "failed", ..
            }
            | Write::FailedAndSuppress { .. } => Outcome::Failed,
            Write::Final { .. } => Outcome::Skipped,
            Write::Deferred { .. } => Outcome::Deferred,
            Write::Release => Outcome::Lost,
        };
        let written = self.recorder.record(Record { n, write, at }).await;
        self.leases.release(&[id]);
        if written { outcome } else { Outcome::Lost }
    }
}

/// What to write for one notification: the core's last check, then the send.
async fn decide_and_send(app: &App, p: &Prepared) -> Write {
    let n = &p.n;
    let now = app.now();
    let retry = app.config.dispatch.retry;
    let skipped = |reason: HoldReason, why: &str| Write::Final {
        state: "skipped",
        reason: Some(reason.as_str()),
        error: why.to_string(),
    };
    let dead = |why: String| Write::Final {
        state: "dead",
        reason: None,
        error: why,
    };
    let attempts = i32::try_from(n.attempts).unwrap_or(i32::MAX);
    if attempts > retry.max_attempts {
        // Only reachable through lease expiry: the process died mid-send this often.
        return dead(format!("lease expired on {} attempts", n.attempts - 1));
    }
    let (Some(facts), Some(shopper)) = (&p.restock, &p.shopper) else {
        return skipped(HoldReason::Ended, "variant no longer exists");
    };
    let ctx = &facts.message;
    // The last word before the message leaves is the core's: an opt-out, a
    // cancellation, a purchase or a sell-out since planning wins; quiet hours and the
    // frequency cap move it later.
    let policy = parse_restock_policy(facts.policy.as_deref());
    let channel = Channel::parse(&n.channel).unwrap_or(Channel::Email);
    let send_facts = SendFacts {
        now_ms: now,
        reminder: n.purpose == "reminder",
        subscription_live: shopper.live_subscriptions > 0,
        category: facts.category.clone(),
        opt_outs: parse_opt_outs(shopper.opted_out_at, shopper.opt_outs.as_deref()),
        channel,
        contact_consent: shopper.consent_at.is_some() && shopper.consent_withdrawn_at.is_none(),
        contact_suppressed: shopper.contact_suppressed_at.is_some(),
        in_stock: facts.scope_in_stock && ctx.available_until.is_none_or(|u| u > now),
        bought_since_planned: shopper.bought > 0,
        clicked: shopper.clicked > 0,
        time_zone: shopper
            .time_zone
            .as_deref()
            .and_then(|t| TimeZone::parse(t).ok()),
        sent_times_ms: match policy.frequency_cap {
            Some(cap) => p
                .sent_times
                .iter()
                .copied()
                .filter(|t| *t > now - cap.window_ms)
                .collect(),
            None => Vec::new(),
        },
    };
    match recheck(&policy, &send_facts) {
        Check::Go => {}
        Check::Defer { until_ms, reason } => {
            return Write::Deferred {
                due_at: until_ms,
                reason: reason.as_str(),
            };
        }
        Check::Skip(reason) => {
            let why = match reason {
                HoldReason::SoldOut => {
                    "sold out again before sending; waiting for the next restock"
                }
                HoldReason::Ended => "the sign-up ended before sending",
                HoldReason::OptedOut => "opted out before sending",
                HoldReason::Suppressed => "address suppressed",
                HoldReason::NoConsent => "consent withdrawn before sending",
                HoldReason::RecentPurchase => "bought before the alert went",
                HoldReason::Acted => "clicked or bought since the alert: no reminder",
                _ => "held back before sending",
            };
            return skipped(reason, why);
        }
    }
    let click = app.public_url(&format!("/t/c/{}", app.signer.sign(Purpose::Click, n.id)));
    let unsubscribe = app.public_url(&format!(
        "/t/u/{}",
        app.signer.sign(Purpose::Unsubscribe, n.id)
    ));
    let rendered = match app.renderer.restock_email(
        ctx,
        Links {
            click: &click,
            unsubscribe: &unsubscribe,
            reminder: n.purpose == "reminder",
        },
    ) {
        Ok(r) => r,
        Err(e) => return dead(format!("rendering failed: {e}")),
    };
    let msg = EmailMessage {
        to: n.recipient.clone(),
        subject: rendered.subject,
        html: rendered.html,
        text: rendered.text,
        // Unique across stores and installations, and stable for one notification
        // so a resend after a crash is recognisably the same message.
        message_id: format!(
            "<restock.{}.{}.{}@{}>",
            n.id, n.store_id, app.installation_id, app.public_host
        ),
        list_unsubscribe: unsubscribe,
    };
    let result = app.email.send(&msg).await;
    let now = app.now();
    match result {
        Ok(()) => {
            let latency = (now - facts.restock_at).max(0) as f64 / 1000.0;
            app.metrics
                .restock_to_send
                .with_label_values(&[app.email.name()])
                .observe(latency);
            Write::Sent {
                reminder_at: (n.purpose == "alert")
                    .then(|| reminder_at(&policy, now))
                    .flatten(),
            }
        }
        Err(failure) => {
            let jitter: f64 = rand::rng().random();
            tracing::info!(
                reason = %crate::util::redact_addresses(failure.reason()),
                "send failed"
            );
            match retry.decide(attempts, &failure, now, jitter) {
                Decision::RetryAt(at) => Write::Retry {
                    due_at: at,
                    error: failure.reason().to_string(),
                },
                Decision::Failed => Write::FailedAndSuppress {
                    error: failure.reason().to_string(),
                },
                Decision::Dead => dead(match &failure {
                    Failure::Permanent { reason } => reason.clone(),
                    other => format!("gave up after {} attempts: {}", n.attempts, other.reason()),
                }),
            }
        }
    }
}
