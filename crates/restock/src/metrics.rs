//! Prometheus metrics, one registry per running app (so tests in one process do not
//! share counters). Outbox depth is read from the database at scrape time, so it is
//! right across several instances.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::storage::Db;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub sends: IntCounterVec,
    pub restock_to_send: HistogramVec,
    pub intake_rejects: IntCounterVec,
    pub restocks: IntCounterVec,
    /// Planning decisions: planned (to send) or held back.
    pub planned: IntCounterVec,
    outbox_depth: IntGaugeVec,
    /// From claiming a notification to starting its send.
    pub claim_wait: Histogram,
    /// Claims that waited longer than half their lease before their send started
    /// (the lease is renewed, but the worker is behind: too little concurrency).
    pub slow_claims: IntCounter,
    /// Lease renewals of claims held longer than a third of the lease.
    pub lease_renewals: IntCounter,
    /// Outcomes written per group commit.
    pub record_batch: Histogram,
    /// Items configured sources delivered, by kind and outcome (applied, rejected,
    /// stale: already applied; skipped: below a stream's cursor; redelivered: JetStream).
    pub source_items: IntCounterVec,
    /// Failed runs (or stream sessions) of configured sources, by kind.
    pub source_failures: IntCounterVec,
    /// Sources found stale, by kind.
    pub source_stale_events: IntCounterVec,
    /// Duration of pollers' runs, by kind.
    pub source_run_seconds: HistogramVec,
    /// Outbound events by outcome: published (acknowledged by JetStream), failed (a
    /// publish to retry), dropped (the buffer was full).
    pub events: IntCounterVec,
    /// Per source, read at scrape time: seconds since its newest change, failures in a
    /// row, and whether it is stale.
    source_lag: GaugeVec,
    source_consecutive_failures: IntGaugeVec,
    source_stale: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("restock".into()), None).unwrap_or_default();
        let sends = IntCounterVec::new(
            Opts::new("sends_total", "Delivery attempts by channel and outcome"),
            &["channel", "outcome"],
        );
        let restock_to_send = HistogramVec::new(
            HistogramOpts::new(
                "restock_to_send_seconds",
                "Time from the restock being recorded to the notification being handed to the channel",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["channel"],
        );
        let intake_rejects = IntCounterVec::new(
            Opts::new(
                "intake_rejects_total",
                "Rejected input by source and reason",
            ),
            &["source", "reason"],
        );
        let restocks = IntCounterVec::new(
            Opts::new("restock_events_total", "Restock events by source"),
            &["source"],
        );
        let planned = IntCounterVec::new(
            Opts::new(
                "planning_decisions_total",
                "Planning decisions: planned to send, or held back",
            ),
            &["decision"],
        );
        let outbox_depth = IntGaugeVec::new(
            Opts::new(
                "outbox_depth",
                "Notifications waiting (pending), in flight (running) or given up (dead)",
            ),
            &["state"],
        );
        let claim_wait = Histogram::with_opts(
            HistogramOpts::new(
                "dispatch_claim_wait_seconds",
                "Time from claiming a notification to starting its send",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
        );
        let slow_claims = IntCounter::new(
            "dispatch_slow_claims_total",
            "Claims that waited more than half their lease before their send started",
        );
        let lease_renewals = IntCounter::new(
            "dispatch_lease_renewals_total",
            "Leases extended because a claim was still being sent or recorded",
        );
        let record_batch = Histogram::with_opts(
            HistogramOpts::new(
                "dispatch_record_batch_size",
                "Outcomes written per group commit",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0]),
        );
        let counters = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|_| unreachable!("static metric definitions are valid"))
        };
        let source_items = counters(
            "source_items_total",
            "Items configured sources delivered, by kind and outcome",
            &["kind", "outcome"],
        );
        let events = counters(
            "outbound_events_total",
            "Outbound events by outcome (published, failed, dropped)",
            &["outcome"],
        );
        let source_failures = counters(
            "source_failures_total",
            "Failed runs or stream sessions of configured sources, by kind",
            &["kind"],
        );
        let source_stale_events = counters(
            "source_stale_total",
            "Sources found stale (no success within their limit), by kind",
            &["kind"],
        );
        let source_run_seconds = HistogramVec::new(
            HistogramOpts::new("source_run_seconds", "Duration of a poller's run").buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["kind"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definitions are valid"));
        let source_lag = GaugeVec::new(
            Opts::new(
                "source_lag_seconds",
                "Seconds since the newest change a source reported",
            ),
            &["store", "source"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definitions are valid"));
        let gauges = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["store", "source"])
                .unwrap_or_else(|_| unreachable!("static metric definitions are valid"))
        };
        let source_consecutive_failures = gauges(
            "source_consecutive_failures",
            "Failed runs in a row of a source",
        );
        let source_stale = gauges(
            "source_stale",
            "1 while a source has had no success within its limit",
        );
        let (claim_wait, slow_claims, lease_renewals, record_batch) =
            match (claim_wait, slow_claims, lease_renewals, record_batch) {
                (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
                _ => unreachable!("static metric definitions are valid"),
            };
        // The metric definitions above are static and valid; registration can only
        // fail on a duplicate name, which the tests would catch.
        let (sends, restock_to_send, intake_rejects, restocks, planned, outbox_depth) = match (
            sends,
            restock_to_send,
            intake_rejects,
            restocks,
            planned,
            outbox_depth,
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(p), Ok(e)) => (a, b, c, d, p, e),
            _ => unreachable!("static metric definitions are valid"),
        };
        for c in [
            Box::new(sends.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(restock_to_send.clone()),
            Box::new(intake_rejects.clone()),
            Box::new(restocks.clone()),
            Box::new(planned.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(claim_wait.clone()),
            Box::new(slow_claims.clone()),
            Box::new(lease_renewals.clone()),
            Box::new(record_batch.clone()),
            Box::new(source_items.clone()),
            Box::new(source_failures.clone()),
            Box::new(events.clone()),
            Box::new(source_stale_events.clone()),
            Box::new(source_run_seconds.clone()),
            Box::new(source_lag.clone()),
            Box::new(source_consecutive_failures.clone()),
            Box::new(source_stale.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        Metrics {
            registry,
            sends,
            restock_to_send,
            intake_rejects,
            restocks,
            planned,
            outbox_depth,
            claim_wait,
            slow_claims,
            lease_renewals,
            record_batch,
            source_items,
            source_failures,
            events,
            source_stale_events,
            source_run_seconds,
            source_lag,
            source_consecutive_failures,
            source_stale,
        }
    }

    /// The text exposition. The queue gauges count only live rows (pending, running,
    /// dead) through partial indexes; finished outcomes are the `sends_total`
    /// counters, so a scrape does not grow with history.
    pub async fn render(&self, db: &Db) -> String {
        match db.live_queue_depth().await {
            Ok(rows) => {
                for (state, n) in rows {
                    self.outbox_depth.with_label_values(&[state]).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading outbox depth for metrics"),
        }
        match db.all_sources().await {
            Ok(rows) => {
                let now = chrono::Utc::now().timestamp_millis();
                for r in rows {
                    let labels = [r.store_id.to_string(), r.name.clone()];
                    let labels = [labels[0].as_str(), labels[1].as_str()];
                    if let Some(at) = r.last_event_at {
                        self.source_lag
                            .with_label_values(&labels)
                            .set(((now - at).max(0) as f64) / 1000.0);
                    }
                    self.source_consecutive_failures
                        .with_label_values(&labels)
                        .set(r.consecutive_failures);
                    self.source_stale
                        .with_label_values(&labels)
                        .set(i64::from(r.stale_since.is_some()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading sources for metrics"),
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
