//! Planning: turns a restock into decisions, page by page and wave by wave, off the
//! intake path. The rules are `restock_core::planner`'s; this module fetches pages of
//! waiting shoppers (`storage::planning`), asks the planner, and writes what it
//! decided. A run resumes after a crash from the last page it committed.

use rand::SeedableRng;
use restock_core::planner::{PagePlan, Restock, Stop, Wave, in_early_access_window, plan_page};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::storage::planning::PlanJob;

/// The first page is small so the first messages go out at once; later pages are
/// larger so a long waiting list is planned at the database's pace: SQLite hands a
/// page over as one JSON document and gains from large ones; PostgreSQL's per-row
/// probes and array writes do best around 20,000 (measured, docs/benchmarks.md).
const FIRST_PAGE: i64 = 500;

fn page_size(app: &App) -> i64 {
    if app.db.is_postgres() { 20_000 } else { 50_000 }
}
/// A restock whose planning fails this many times in a row is marked failed.
const MAX_ATTEMPTS: i64 = 10;

/// How long a planning run may hold a restock before another worker takes it over
/// (renewed with every page): the dispatch lease.
fn lease_ms(app: &App) -> i64 {
    app.config.dispatch.lease_secs.saturating_mul(1000)
}

/// Plans every restock due now; returns how many planning runs were made.
pub async fn plan_due(app: &App) -> anyhow::Result<usize> {
    let mut runs = 0;
    while let Some(job) = app.db.claim_plan_job(app.now(), lease_ms(app)).await? {
        runs += 1;
        if let Err(e) = plan_run(app, &job).await {
            tracing::error!(error = ?e, restock = job.event.0, "planning failed");
            let msg = format!("{e:#}");
            if job.attempts >= MAX_ATTEMPTS {
                app.db
                    .finish_plan_run(&job, "failed", None, Some(&msg), app.now())
                    .await?;
            } else {
                app.db.plan_run_failed(&job, &msg).await?;
            }
            // Someone else's turn; this one is retried when its lease expires.
            break;
        }
    }
    Ok(runs)
}

/// One run: re-reads the stock, sizes the next wave, fills it from the early-access
/// shoppers and then the waiting list, and schedules what comes next.
async fn plan_run(app: &App, job: &PlanJob) -> anyhow::Result<()> {
    let db = &app.db;
    let now = app.now();
    let (in_stock, available) = db.scope_stock(job).await?;
    if !in_stock {
        // Sold out again: whoever is left keeps their place for the next restock.
        db.finish_plan_run(job, "sold_out", None, None, now).await?;
        return Ok(());
    }
    let policy = &job.policy;
    let restock = Restock {
        category: job.category.clone(),
        at_ms: job.created_at,
    };
    let wave_no = job.wave + 1;
    let capacity = Wave::capacity(policy, available);
    db.start_wave(job, wave_no, available, capacity, now)
        .await?;
    let needs = db.fact_needs(job, now).await?;
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut tally = job.tally;
    let mut cursor = job.cursor;
    let mut sends: u64 = 0;
    let mut stopped: Option<Stop> = None;
    let room = |sends: u64| capacity.map(|c| c.saturating_sub(sends));

    // Early-access shoppers first, tier by tier, wherever they stand in the list.
    'tiers: for tier in &policy.early_access_tiers {
        loop {
            let page = db
                .early_access_page(job, tier, needs, now, page_size(app))
                .await?;
            if page.is_empty() {
                break;
            }
            let wave = Wave {
                number: wave_no,
                now_ms: now,
                room: room(sends),
            };
            let plan = plan_page(&restock, policy, wave, &mut tally, page, &mut rng);
            write(app, job, wave_no, &plan, None, tally, now).await?;
            sends += plan.sends;
            if plan.stopped.is_some() || plan.decisions.is_empty() {
                stopped = plan.stopped;
                break 'tiers;
            }
        }
    }
    // Then the waiting list in sign-up order, from where the last run stopped.
    let mut limit = FIRST_PAGE;
    while stopped.is_none() {
        let page = db.waiting_page(job, cursor, needs, now, limit).await?;
        limit = page_size(app);
        if page.is_empty() {
            break;
        }
        let wave = Wave {
            number: wave_no,
            now_ms: now,
            room: room(sends),
        };
        let plan = plan_page(&restock, policy, wave, &mut tally, page, &mut rng);
        if plan.resume_after.is_some() {
            cursor = plan.resume_after;
        }
        write(app, job, wave_no, &plan, plan.resume_after, tally, now).await?;
        sends += plan.sends;
        stopped = plan.stopped;
        if stopped.is_none() && plan.resume_after.is_none() {
            break;
        }
    }
    match stopped {
        None => db.finish_plan_run(job, "done", None, None, now).await?,
        Some(Stop::WaveFull) => {
            let next = Wave::next_after(policy, now).unwrap_or(now);
            db.finish_plan_run(job, "waiting", Some(next), None, now)
                .await?;
        }
        Some(Stop::EarlyAccessOnly) => {
            let next = job.created_at.saturating_add(policy.early_access_window_ms);
            debug_assert!(in_early_access_window(policy, &restock, now));
            db.finish_plan_run(job, "waiting", Some(next.max(now + 1)), None, now)
                .await?;
        }
    }
    Ok(())
}

async fn write(
    app: &App,
    job: &PlanJob,
    wave: u32,
    plan: &PagePlan,
    cursor: Option<restock_core::planner::Position>,
    tally: restock_core::planner::Tally,
    now: i64,
) -> anyhow::Result<()> {
    if plan.decisions.is_empty() && cursor.is_none() {
        return Ok(());
    }
    let counts = {
        let _turn = app.write_turns.take().await;
        app.db
            .write_decisions(
                job,
                wave,
                &plan.decisions,
                cursor,
                tally,
                now,
                lease_ms(app),
            )
            .await?
    };
    app.metrics
        .planned
        .with_label_values(&["planned"])
        .inc_by(counts.planned);
    app.metrics
        .planned
        .with_label_values(&["held"])
        .inc_by(counts.held + counts.held_out);
    if counts.planned > 0 {
        app.work_ready.notify_one();
    }
    Ok(())
}

/// The planning worker: plans restocks as they happen (woken by intake) and waves as
/// they come due, until `shutdown`.
pub async fn run_worker(app: App, shutdown: CancellationToken) {
    tracing::info!("planning worker started");
    while !shutdown.is_cancelled() {
        if let Err(e) = plan_due(&app).await {
            tracing::warn!(error = %e, "planning");
        }
        let now = app.now();
        let wait_ms = match app.db.next_plan_due().await {
            Ok(Some(at)) if at > now => (at - now).min(app.config.dispatch.poll_interval_ms as i64),
            Ok(Some(_)) => 50,
            _ => app.config.dispatch.poll_interval_ms as i64,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = app.plan_ready.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait_ms.max(1) as u64)) => {}
        }
    }
    tracing::info!("planning worker stopped");
}
