//! Runs the configured sources. Every instance runs this; a lease in the database
//! makes exactly one instance run each poller and each WebSocket stream (another
//! takes over within a lease period if it dies), while JetStream consumers run on
//! every instance and share the stream through their durable consumer.
//!
//! A poller that fails is retried sooner than its interval, with backoff and jitter;
//! after `intake.breaker_failures` failures in a row its circuit breaker opens and it
//! is left alone for a while. A source with no success within its staleness limit is
//! marked stale once and raises a `source.stale` event.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use restock_core::ids::StoreId;
use restock_core::stock::StockUpdate;
use tokio_util::sync::CancellationToken;

use super::source::{Kind, Profile, open_config};
use crate::app::App;
use crate::storage::rejections::NewRejection;
use crate::storage::sources::{RunReport, SourceRow};

/// A configured source as its module sees it for one run (or one stream session).
#[derive(Debug, Clone)]
pub struct SourceCtx {
    pub id: i64,
    pub store: StoreId,
    pub name: String,
    pub kind: Kind,
    pub profile: Profile,
    /// The kind's settings, opened.
    pub config: serde_json::Value,
    /// Where the source left off.
    pub cursor: Option<String>,
    pub interval_secs: i64,
}

/// What a run delivered so far: modules deliver in chunks through [`SourceCtx::deliver`].
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub applied: i64,
    pub rejected: i64,
    pub stale: i64,
    pub restocks: i64,
    pub newest_event_at: Option<i64>,
}

impl SourceCtx {
    pub fn from_row(app: &App, row: &SourceRow) -> anyhow::Result<SourceCtx> {
        Ok(SourceCtx {
            id: row.id,
            store: StoreId(row.store_id),
            name: row.name.clone(),
            kind: Kind::parse(&row.kind)
                .ok_or_else(|| anyhow::anyhow!("unknown source kind {:?}", row.kind))?,
            profile: Profile::from_stored(&row.profile),
            config: open_config(app, row)?,
            cursor: row.cursor.clone(),
            interval_secs: row.interval_secs,
        })
    }

    /// A dead letter from this source (the raw record, whole, with why).
    pub fn rejection(
        &self,
        code: &str,
        reason: impl Into<String>,
        payload: impl Into<String>,
    ) -> NewRejection {
        NewRejection {
            store: Some(self.store),
            source: self.name.clone(),
            reason_code: code.to_string(),
            reason: reason.into(),
            payload: payload.into(),
        }
    }

    /// Hands a chunk of parsed updates (and the records that could not be parsed) to
    /// intake under this source's profile, adding the outcome to `so_far`, and logs
    /// what arrived (`received`) with that outcome.
    pub async fn deliver(
        &self,
        app: &App,
        updates: Vec<StockUpdate>,
        rejected: Vec<NewRejection>,
        received: super::Received,
        so_far: &mut Delivered,
    ) -> Result<(), crate::storage::StorageError> {
        if updates.is_empty() && rejected.is_empty() {
            // What arrived is logged even when nothing came of it (stream messages
            // all at or below the cursor).
            let none = serde_json::json!({"applied": 0, "stale": 0, "rejected": 0, "restocks": 0});
            super::log_delivery(app, self.store, &self.name, &received, none).await;
            return Ok(());
        }
        let newest = updates.iter().map(|u| u.version.observed_at_ms).max();
        let out = super::apply_with(
            app,
            self.store,
            &self.name,
            &self.profile,
            updates,
            rejected,
        )
        .await?;
        super::log_delivery(
            app,
            self.store,
            &self.name,
            &received,
            super::stock_outcome(&out),
        )
        .await;
        so_far.applied += out.applied as i64;
        so_far.stale += out.stale as i64;
        so_far.rejected += out.rejection_ids.len() as i64;
        so_far.restocks += out.restocks.len() as i64;
        so_far.newest_event_at = so_far.newest_event_at.max(newest);
        app.metrics
            .source_items
            .with_label_values(&[self.kind.as_str(), "applied"])
            .inc_by(out.applied);
        app.metrics
            .source_items
            .with_label_values(&[self.kind.as_str(), "rejected"])
            .inc_by(out.rejection_ids.len() as u64);
        // Older than what is stored, or a replay of it (a redelivery, a reconnect).
        app.metrics
            .source_items
            .with_label_values(&[self.kind.as_str(), "stale"])
            .inc_by(out.stale);
        Ok(())
    }

    /// Records a stream's progress (a batch applied, its new cursor) on its health.
    pub async fn record(
        &self,
        app: &App,
        d: &Delivered,
        cursor: Option<String>,
    ) -> anyhow::Result<()> {
        app.db
            .record_source_run(
                self.id,
                &RunReport {
                    ok: true,
                    applied: d.applied,
                    rejected: d.rejected,
                    newest_event_at: d.newest_event_at,
                    cursor,
                    ..RunReport::default()
                },
                app.now(),
            )
            .await?;
        Ok(())
    }
}

/// A pull source's run: what it delivered and where the next run starts.
#[derive(Debug, Clone, Default)]
pub struct PullOutcome {
    pub delivered: Delivered,
    pub cursor: Option<String>,
}

/// Runs every configured source this instance should run, until `stop`.
pub async fn run(app: App, stop: CancellationToken) {
    let owner = app.instance_name.clone();
    let tick = Duration::from_millis(app.config.intake.tick_ms.max(50));
    let mut running: HashMap<i64, (i64, CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        match app
            .db
            .runnable_sources(&Kind::CONFIGURED.map(Kind::as_str))
            .await
        {
            Ok(rows) => {
                let live: HashMap<i64, &SourceRow> = rows.iter().map(|r| (r.id, r)).collect();
                running.retain(|id, (updated, token, handle)| {
                    let keep = !handle.is_finished()
                        && live.get(id).is_some_and(|r| r.updated_at == *updated);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for row in rows {
                    if running.contains_key(&row.id) {
                        continue;
                    }
                    let token = stop.child_token();
                    let handle =
                        tokio::spawn(supervise(app.clone(), row.id, owner.clone(), token.clone()));
                    running.insert(row.id, (row.updated_at, token, handle));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list sources"),
        }
        if let Err(e) = check_stale(&app).await {
            tracing::warn!(error = %e, "cannot check sources for staleness");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    for (_, (_, token, handle)) in running {
        token.cancel();
        let _ = handle.await;
    }
}

/// Runs one source for as long as it is unchanged and this instance should run it.
async fn supervise(app: App, id: i64, owner: String, stop: CancellationToken) {
    let lease_ms = app.config.intake.lease_secs.max(1) * 1000;
    let renew_every = Duration::from_millis((lease_ms / 3).max(100) as u64);
    let mut failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let Ok(Some(row)) = app.db.source_by_id(id).await else {
            break;
        };
        let kind = Kind::parse(&row.kind);
        let leased = match kind {
            // JetStream shares the work through its durable consumer: every instance runs it.
            Some(Kind::Jetstream) => true,
            _ => {
                let now = app.now();
                app.db
                    .lease_source(id, &owner, now, now + lease_ms)
                    .await
                    .unwrap_or(false)
            }
        };
        if !leased {
            if sleep_or_stop(&stop, renew_every).await {
                break;
            }
            continue;
        }
        let now = app.now();
        if kind.is_some_and(Kind::is_pull) {
            let wait_until = row.next_run_at.max(row.breaker_open_until.unwrap_or(0));
            if wait_until > now {
                let nap = Duration::from_millis((wait_until - now) as u64).min(renew_every);
                if sleep_or_stop(&stop, nap).await {
                    break;
                }
                continue;
            }
        }
        let ctx = match SourceCtx::from_row(&app, &row) {
            Ok(ctx) => ctx,
            Err(e) => {
                record_failure(&app, &row, &mut failures, &e.to_string()).await;
                if sleep_or_stop(&stop, backoff(&app, failures, row.interval_secs)).await {
                    break;
                }
                continue;
            }
        };
        // While the source runs, keep its lease; losing it stops the run.
        let run_stop = stop.child_token();
        let keeper = (kind != Some(Kind::Jetstream)).then(|| {
            tokio::spawn(keep_lease(
                app.clone(),
                id,
                owner.clone(),
                lease_ms,
                renew_every,
                run_stop.clone(),
            ))
        });
        let started = std::time::Instant::now();
        let result = run_source(&app, &ctx, run_stop.clone()).await;
        run_stop.cancel();
        if let Some(k) = keeper {
            let _ = k.await;
        }
        app.metrics
            .source_run_seconds
            .with_label_values(&[ctx.kind.as_str()])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Some(out)) => {
                failures = 0;
                let d = out.delivered;
                let next = app.now() + row.interval_secs.max(1) * 1000;
                let report = RunReport {
                    ok: true,
                    error: None,
                    applied: d.applied,
                    rejected: d.rejected,
                    newest_event_at: d.newest_event_at,
                    cursor: out.cursor,
                    next_run_at: Some(next),
                    breaker_open_until: None,
                };
                if let Err(e) = app.db.record_source_run(id, &report, app.now()).await {
                    tracing::warn!(source = %ctx.name, error = %e, "cannot record the source's run");
                }
                tracing::info!(source = %ctx.name, kind = ctx.kind.as_str(), applied = d.applied,
                    rejected = d.rejected, stale = d.stale, restocks = d.restocks, "source polled");
            }
            // A stream that ended because it was told to stop (or lost its lease).
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(source = %ctx.name, kind = ctx.kind.as_str(), error = %format!("{e:#}"), "source failed");
                record_failure(&app, &row, &mut failures, &format!("{e:#}")).await;
                if sleep_or_stop(&stop, backoff(&app, failures, row.interval_secs)).await {
                    break;
                }
            }
        }
    }
    if let Err(e) = app.db.release_source(id, &owner).await {
        tracing::debug!(error = %e, "cannot release the source's lease");
    }
}

/// One run of a pull source (`Some`), or a stream session until it stops (`None`).
async fn run_source(
    app: &App,
    ctx: &SourceCtx,
    stop: CancellationToken,
) -> anyhow::Result<Option<PullOutcome>> {
    match ctx.kind {
        Kind::Sql => super::poll_sql::run_once(app, ctx, stop).await.map(Some),
        Kind::Http => super::poll_http::run_once(app, ctx, stop).await.map(Some),
        Kind::Websocket => super::websocket::run(app, ctx, stop).await.map(|()| None),
        Kind::Jetstream => super::jetstream::run(app, ctx, stop).await.map(|()| None),
        other => anyhow::bail!("{} sources are not run by the workers", other.as_str()),
    }
}

async fn keep_lease(
    app: App,
    id: i64,
    owner: String,
    lease_ms: i64,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        if sleep_or_stop(&stop, every).await {
            return;
        }
        let now = app.now();
        match app.db.lease_source(id, &owner, now, now + lease_ms).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(source = id, "lost the source's lease; stopping its run");
                stop.cancel();
                return;
            }
            // The database is unreachable: keep running until the lease would lapse.
            Err(e) => tracing::warn!(source = id, error = %e, "cannot renew the source's lease"),
        }
    }
}

async fn record_failure(app: &App, row: &SourceRow, failures: &mut u32, error: &str) {
    *failures += 1;
    let now = app.now();
    let pull = Kind::parse(&row.kind).is_some_and(Kind::is_pull);
    let consecutive = row.consecutive_failures + 1;
    let threshold = i64::from(app.config.intake.breaker_failures.max(1));
    let breaker_open_until = (pull && consecutive >= threshold)
        .then(|| now + app.config.intake.breaker_open_secs.max(1) * 1000);
    if breaker_open_until.is_some() && consecutive == threshold {
        tracing::warn!(source = %row.name, failures = consecutive, "source's circuit breaker opened");
    }
    let report = RunReport {
        ok: false,
        error: Some(error.chars().take(2000).collect()),
        next_run_at: pull
            .then(|| now + backoff(app, *failures, row.interval_secs).as_millis() as i64),
        breaker_open_until,
        ..RunReport::default()
    };
    app.metrics
        .source_failures
        .with_label_values(&[&row.kind])
        .inc();
    if let Err(e) = app.db.record_source_run(row.id, &report, now).await {
        tracing::warn!(source = %row.name, error = %e, "cannot record the source's failure");
    }
}

/// How long to wait after the `n`th failure in a row: doubling from
/// `intake.retry_base_ms`, never more than the source's interval (pollers) or a
/// minute (streams), with up to a fifth of jitter so instances do not retry in step.
fn backoff(app: &App, n: u32, interval_secs: i64) -> Duration {
    let base = app.config.intake.retry_base_ms.max(10);
    let cap = if interval_secs > 0 {
        interval_secs * 1000
    } else {
        60_000
    }
    .max(base as i64) as u64;
    let ms = base
        .saturating_mul(1u64 << n.saturating_sub(1).min(20))
        .min(cap);
    let jitter = rand::rng().random_range(0..=ms / 5);
    Duration::from_millis(ms - ms / 10 + jitter)
}

/// True if `stop` fired before `d` passed.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Marks sources with no success within their limit stale, raising `source.stale`
/// once per episode (the mark is atomic, so one instance raises it).
async fn check_stale(app: &App) -> anyhow::Result<()> {
    let now = app.now();
    for row in app.db.all_sources().await? {
        if !row.enabled || row.stale_since.is_some() {
            continue;
        }
        let limit_ms = stale_after_ms(&app.config.intake, &row);
        let since = row.last_success_at.unwrap_or(row.created_at);
        if now - since <= limit_ms {
            continue;
        }
        if app.db.mark_source_stale(row.id, now).await? {
            tracing::warn!(source = %row.name, store = row.store_id, kind = %row.kind,
                last_success_at = ?row.last_success_at, "source is stale");
            app.metrics
                .source_stale_events
                .with_label_values(&[&row.kind])
                .inc();
            app.events.emit(
                "source.stale",
                Some(StoreId(row.store_id)),
                serde_json::json!({
                    "source": row.name,
                    "kind": row.kind,
                    "last_success_at": row.last_success_at,
                    "last_error": row.last_error,
                    "stale_since": now,
                }),
            );
        }
    }
    Ok(())
}

/// How long a source may go without a success before it is stale: three intervals
/// for a poller, `intake.stale_after_secs` for streams and push sources.
pub fn stale_after_ms(intake: &crate::config::IntakeConfig, row: &SourceRow) -> i64 {
    if Kind::parse(&row.kind).is_some_and(Kind::is_pull) {
        row.interval_secs.max(1) * 3 * 1000
    } else {
        intake.stale_after_secs.max(1) * 1000
    }
}
