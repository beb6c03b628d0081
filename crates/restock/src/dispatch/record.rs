//! Recording outcomes through database outages.
//!
//! Once a message has reached the relay, its outcome must be recorded or the row's
//! lease expires and it is sent again. While the database is unreachable the
//! outcome is kept in memory and the write retried with backoff until the database
//! returns; the write is fenced by the attempt number (see `storage::outbox`), so a
//! late record never overwrites a newer attempt. A process that dies while holding
//! unrecorded outcomes loses them, and those messages go out again once: the relay
//! can recognise them by their stable Message-ID.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::app::App;
use crate::storage::StorageError;

/// Longest a worker keeps retrying one outcome before giving up (logged).
const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);

/// Runs `write` until it succeeds or fails for a reason other than the database
/// being unreachable.
pub async fn durably<T, F, Fut>(notification: i64, mut write: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut warned = false;
    loop {
        match write().await {
            Ok(v) => {
                if warned {
                    tracing::info!(
                        notification,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "database back: outcome recorded"
                    );
                }
                return Ok(v);
            }
            Err(e) if e.is_unavailable() && started.elapsed() < GIVE_UP_AFTER => {
                if !warned {
                    tracing::warn!(
                        notification,
                        error = %crate::util::ErrorChain(&e),
                        "database unreachable: keeping the outcome to record when it returns"
                    );
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Purges expired history when `retention.interval_secs` has passed since the last
/// purge by this process.
pub async fn purge_if_due(app: &App, now: i64) {
    let r = &app.config.retention;
    let last = app.last_purge_ms.load(Ordering::SeqCst);
    if last != 0 && now - last < (r.interval_secs as i64) * 1000 {
        return;
    }
    app.last_purge_ms.store(now, Ordering::SeqCst);
    match app.db.purge_expired(now, r.batch_size).await {
        Ok(p) if p != Default::default() => tracing::info!(
            notifications = p.notifications,
            tracking_events = p.tracking_events,
            webhook_deliveries = p.webhook_deliveries,
            "purged expired history"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging expired history"),
    }
    let cutoff = now - r.intake_log_hours * 3_600_000;
    match app.db.purge_intake_log(cutoff, r.batch_size).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(intake_log = n, "purged expired intake log entries"),
        Err(e) => tracing::warn!(error = %e, "purging the intake log"),
    }
}
