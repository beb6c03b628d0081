//! Restock: a self-hosted back-in-stock notification engine.
//!
//! The modules follow the flow of a restock:
//!
//! `intake` (sources → canonical `StockUpdate` and orders) → `storage::stock` (levels,
//! state machine, restock events, one transaction) → `planning` (pages of waiting
//! shoppers through the core planner into the outbox, in waves) → `dispatch` (claim,
//! re-check, render, send, record) → `channels` (email) → `tracking` (signed links:
//! clicks, unsubscribes, cancelling a sign-up). `http` serves the API, webhooks, storefront and
//! tracking endpoints; `storage` runs on SQLite or PostgreSQL. Policy lives in the
//! `restock-core` crate, with no IO.
//!
//! [`run`] starts everything on a listener the caller bound, so tests can bind port 0.

pub mod app;
pub mod bench;
pub mod channels;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod error_code;
pub mod events;
pub mod http;
pub mod import;
pub mod intake;
pub mod metrics;
pub mod planning;
pub mod render;
pub mod secrets;
pub mod storage;
pub mod tls;
pub mod util;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::App;
use channels::EmailChannel;
use channels::email::EmailTransport;
use config::Config;
use storage::{Db, Warmth};
use util::Clock;

/// Connects, migrates and builds the app with the configured email transport.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let db = Db::connect(&config.database, Warmth::Warm).await?;
    db.migrate().await?;
    let email = EmailChannel::Transport(Arc::new(EmailTransport::from_config(&config)?));
    App::new(config, db, Clock::System, email).await
}

/// Serves HTTP on `listener` and, if enabled, runs the dispatch workers, until
/// `shutdown` is cancelled; then stops accepting, lets in-flight requests and sends
/// finish, and returns.
pub async fn run(
    app: App,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, db = app.db.backend(), email = app.email.name(), "restock serving");
    let worker = app
        .config
        .dispatch
        .enabled
        .then(|| tokio::spawn(dispatch::run_worker(app.clone(), shutdown.clone())));
    let planner = app
        .config
        .dispatch
        .enabled
        .then(|| tokio::spawn(planning::run_worker(app.clone(), shutdown.clone())));
    let checkpointer = app.db.start_checkpointer(shutdown.clone());
    let events = events::start_jetstream(&app, shutdown.clone());
    let intake = app
        .config
        .intake
        .enabled
        .then(|| tokio::spawn(intake::runner::run(app.clone(), shutdown.clone())));
    http::server::serve(
        listener,
        http::router(app.clone()),
        &app.config.http,
        shutdown.clone(),
    )
    .await?;
    if let Some(worker) = worker {
        worker.await?;
    }
    if let Some(planner) = planner {
        planner.await?;
    }
    if let Some(intake) = intake {
        intake.await?;
    }
    if let Some(events) = events {
        events.await?;
    }
    if let Some(checkpointer) = checkpointer {
        checkpointer.await?;
    }
    app.db.close().await;
    tracing::info!("restock stopped");
    Ok(())
}
