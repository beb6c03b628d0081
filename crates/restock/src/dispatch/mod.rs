//! Dispatch: claim due notifications, check the variant is still available, render,
//! send, record. Claims are committed before any network call; outcomes are fenced
//! by attempt number; failures follow `restock_core::retry`.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use restock_core::planner::{Check, HoldReason, SendFacts, recheck, reminder_at};
use restock_core::retry::{Decision, Failure};
use restock_core::token::Purpose;
use restock_core::values::{Channel, TimeZone};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::app::App;
use crate::channels::EmailMessage;
use crate::render::Links;
use crate::storage::demand::parse_opt_outs;
use crate::storage::outbox::Claimed;
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

/// Runs every notification that is due now, until none is left, and returns how
/// many were processed. Tests and the demo drive delivery with this.
pub async fn run_pending(app: &App) -> anyhow::Result<usize> {
    let sem = Arc::new(Semaphore::new(app.config.dispatch.concurrency));
    let mut total = 0;
    loop {
        app.db.reap_expired_leases(app.now()).await?;
        app.db.expire_temporary_stock(app.now(), 1000).await?;
        app.db.expire_subscriptions(app.now(), 1000).await?;
        crate::planning::plan_due(app).await?;
        let claimed = claim(app).await?;
        if claimed.is_empty() {
            return Ok(total);
        }
        total += claimed.len();
        let mut tasks = JoinSet::new();
        for n in claimed {
            let permit = sem.clone().acquire_owned().await?;
            let app = app.clone();
            tasks.spawn(async move {
                let _permit = permit;
                process(&app, n).await
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn claim(app: &App) -> anyhow::Result<Vec<Claimed>> {
    let d = &app.config.dispatch;
    Ok(app
        .db
        .claim_due(app.now(), d.lease_secs * 1000, d.batch_size)
        .await?)
}

/// The worker loop: claims and sends until `shutdown`; then stops claiming and
/// lets the sends in flight finish.
pub async fn run_worker(app: App, shutdown: CancellationToken) {
    let d = app.config.dispatch.clone();
    let sem = Arc::new(Semaphore::new(d.concurrency));
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut last_reap = 0;
    tracing::info!(concurrency = d.concurrency, "dispatch worker started");
    while !shutdown.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        let now = app.now();
        if now - last_reap >= 1000 {
            last_reap = now;
            housekeeping(&app, now).await;
        }
        // Claim no more than there are free slots, so claimed rows do not sit
        // leased while waiting for a slot.
        let free = sem.available_permits() as i64;
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match app
                .db
                .claim_due(now, d.lease_secs * 1000, free.min(d.batch_size))
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming notifications");
                    Vec::new()
                }
            }
        };
        let got_work = !claimed.is_empty();
        for n in claimed {
            // Claims never exceed the free slots, so a slot is there; if shutdown has
            // begun (or a slot is somehow missing) the claim goes back to the queue
            // instead of sitting leased until the lease expires.
            let permit = if shutdown.is_cancelled() {
                None
            } else {
                sem.clone().try_acquire_owned().ok()
            };
            let Some(permit) = permit else {
                if let Err(e) = app.db.release_claim(&n, app.now()).await {
                    tracing::warn!(error = %e, id = n.id, "releasing a claim");
                }
                continue;
            };
            let app = app.clone();
            tasks.spawn(async move {
                let _permit = permit;
                process(&app, n).await
            });
        }
        if got_work {
            continue;
        }
        let wait = if free == 0 {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(d.poll_interval_ms)
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = app.work_ready.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    while tasks.try_join_next().is_some() {}
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(
            in_flight,
            "dispatch stopping: letting sends in flight finish"
        );
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("dispatch worker stopped");
}

/// Once a second: take over claims whose worker died, re-judge variants whose
/// temporary stock ran out, and end sign-ups past the store's interest window.
async fn housekeeping(app: &App, now: i64) {
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

/// Processes one claimed notification end to end. Never panics on data: any
/// problem becomes a recorded outcome.
pub async fn process(app: &App, n: Claimed) -> Outcome {
    let span = info_span!(
        "notification",
        id = n.id,
        store = n.store_id,
        attempt = n.attempts
    );
    async {
        let channel = app.email.name();
        let outcome = match process_inner(app, &n).await {
            Ok(o) => o,
            Err(e) => {
                // A database error while recording: the lease will expire and the
                // row will be taken over; nothing is lost.
                tracing::error!(error = ?e, "dispatch failed to record an outcome");
                Outcome::Lost
            }
        };
        app.metrics
            .sends
            .with_label_values(&[channel, outcome.label()])
            .inc();
        tracing::debug!(outcome = outcome.label(), "notification processed");
        outcome
    }
    .instrument(span)
    .await
}

async fn process_inner(app: &App, n: &Claimed) -> anyhow::Result<Outcome> {
    let db = &app.db;
    let now = app.now();
    let retry = app.config.dispatch.retry;
    let record_final = |state: &'static str, reason: Option<&'static str>, why: String| async move {
        Ok::<_, anyhow::Error>(
            if db.record_final(n, state, reason, &why, app.now()).await? {
                match state {
                    "dead" => Outcome::Dead,
                    "failed" => Outcome::Failed,
                    _ => Outcome::Skipped,
                }
            } else {
                Outcome::Lost
            },
        )
    };
    let attempts = i32::try_from(n.attempts).unwrap_or(i32::MAX);
    if attempts > retry.max_attempts {
        // Only reachable through lease expiry: the process died mid-send this often.
        return record_final(
            "dead",
            None,
            format!("lease expired on {} attempts", n.attempts - 1),
        )
        .await;
    }
    let Some((ctx, facts)) = db.message_context(n).await? else {
        return record_final("skipped", Some("ended"), "variant no longer exists".into()).await;
    };
    // The last word before the message leaves is the core's: an opt-out, a
    // cancellation, a purchase or a sell-out since planning wins; quiet hours and the
    // frequency cap move it later.
    let policy = parse_restock_policy(facts.policy.as_deref());
    let channel = Channel::parse(&n.channel).unwrap_or(Channel::Email);
    let sent_times = match policy.frequency_cap {
        Some(cap) => db.sent_times(n.shopper_id, now - cap.window_ms).await?,
        None => Vec::new(),
    };
    let send_facts = SendFacts {
        now_ms: now,
        reminder: n.purpose == "reminder",
        subscription_live: facts.live_subscriptions > 0,
        category: facts.category.clone(),
        opt_outs: parse_opt_outs(facts.opted_out_at, facts.opt_outs.as_deref()),
        channel,
        contact_consent: facts.consent_at.is_some() && facts.consent_withdrawn_at.is_none(),
        contact_suppressed: facts.contact_suppressed_at.is_some(),
        in_stock: facts.scope_in_stock && ctx.available_until.is_none_or(|u| u > now),
        bought_since_planned: facts.bought > 0,
        clicked: facts.clicked > 0,
        time_zone: facts
            .time_zone
            .as_deref()
            .and_then(|t| TimeZone::parse(t).ok()),
        sent_times_ms: sent_times,
    };
    match recheck(&policy, &send_facts) {
        Check::Go => {}
        Check::Defer { until_ms, reason } => {
            return Ok(
                if db
                    .record_deferred(n, until_ms, reason.as_str(), now)
                    .await?
                {
                    Outcome::Deferred
                } else {
                    Outcome::Lost
                },
            );
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
            return record_final("skipped", Some(reason.as_str()), why.into()).await;
        }
    }
    let click = app.public_url(&format!("/t/c/{}", app.signer.sign(Purpose::Click, n.id)));
    let unsubscribe = app.public_url(&format!(
        "/t/u/{}",
        app.signer.sign(Purpose::Unsubscribe, n.id)
    ));
    let rendered = match app.renderer.restock_email(
        &ctx,
        Links {
            click: &click,
            unsubscribe: &unsubscribe,
            reminder: n.purpose == "reminder",
        },
    ) {
        Ok(r) => r,
        Err(e) => return record_final("dead", None, format!("rendering failed: {e}")).await,
    };
    let host = url::Url::parse(&app.config.public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "restock.local".into());
    let msg = EmailMessage {
        to: n.recipient.clone(),
        subject: rendered.subject,
        html: rendered.html,
        text: rendered.text,
        // Unique across stores and installations, and stable for one notification
        // so a resend after a crash is recognisably the same message.
        message_id: format!(
            "<restock.{}.{}.{}@{host}>",
            n.id, n.store_id, app.installation_id
        ),
        list_unsubscribe: unsubscribe,
    };
    let result = app.email.send(&msg).await;
    let now = app.now();
    let reminder_at = (n.purpose == "alert")
        .then(|| reminder_at(&policy, now))
        .flatten();
    match result {
        Ok(()) => {
            let latency = (now - facts.restock_at).max(0) as f64 / 1000.0;
            app.metrics
                .restock_to_send
                .with_label_values(&[app.email.name()])
                .observe(latency);
            // The relay has the message: record it even if the database is away now.
            Ok(
                if record::durably(n.id, || db.record_sent(n, now, reminder_at)).await? {
                    Outcome::Sent
                } else {
                    Outcome::Lost
                },
            )
        }
        Err(failure) => {
            let jitter: f64 = rand::rng().random();
            tracing::info!(
                reason = %crate::util::redact_addresses(failure.reason()),
                "send failed"
            );
            match retry.decide(attempts, &failure, now, jitter) {
                Decision::RetryAt(at) => Ok(
                    if record::durably(n.id, || db.record_retry(n, at, failure.reason(), now))
                        .await?
                    {
                        Outcome::Retry
                    } else {
                        Outcome::Lost
                    },
                ),
                Decision::Failed => Ok(
                    if record::durably(n.id, || {
                        db.record_failed_and_suppress(n, failure.reason(), now)
                    })
                    .await?
                    {
                        Outcome::Failed
                    } else {
                        Outcome::Lost
                    },
                ),
                Decision::Dead => {
                    let why = match &failure {
                        Failure::Permanent { reason } => reason.clone(),
                        other => {
                            format!("gave up after {} attempts: {}", n.attempts, other.reason())
                        }
                    };
                    record_final("dead", None, why).await
                }
            }
        }
    }
}
