//! The `restock` binary: role subcommands over the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use restock::config::Config;
use restock::storage::outbox::Replay;
use restock::storage::stores::NewStore;
use restock::storage::{Db, Warmth};
use tokio_util::sync::CancellationToken;

/// Sending a message allocates and frees many short strings (rendering, MIME
/// encoding, SMTP lines) on every worker thread; with glibc's allocator, malloc and
/// free took about 8 % of the CPU while sending.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "restock",
    version,
    about = "Self-hosted back-in-stock notifications"
)]
struct Cli {
    /// Configuration file (TOML); RESTOCK_* environment variables override it.
    #[arg(long, short, global = true, env = "RESTOCK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server and the delivery workers.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Run a self-contained demo on SQLite: a store, shoppers, a stock-out and a restock.
    Demo,
    /// Manage stores.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Inspect and replay notifications.
    Notifications {
        #[command(subcommand)]
        command: NotificationCommand,
    },
    /// Measure planning throughput and restock-to-send latency.
    Bench(restock::bench::BenchArgs),
    /// Show every source (pollers, streams, built-in push sources) with its health.
    Sources {
        /// Only this store's sources.
        #[arg(long)]
        store: Option<String>,
    },
    /// Import a CSV file of catalog lines, stock levels or sign-ups into a store, with
    /// the API's checks; refused lines are listed and kept as dead letters (source
    /// csv). Exits 0 even when lines were refused, unless --strict.
    Import {
        /// What the file holds.
        kind: ImportKindArg,
        /// The CSV file (a header row naming the columns, then one record per line).
        file: PathBuf,
        /// The store's slug.
        #[arg(long)]
        store: String,
        /// Also write the refused lines to this file, as CSV (line, column, code,
        /// reason, rejection_id).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Exit with status 2 when any line was refused.
        #[arg(long)]
        strict: bool,
    },
    /// Manage secrets at rest.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Write a consistent copy of a SQLite database to a file while it is in use
    /// (PostgreSQL: use pg_dump, see the README).
    Backup {
        /// The file to write; must not exist.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportKindArg {
    Catalog,
    Stock,
    Signups,
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-seal every stored secret with the current secrets.key (after rotating it).
    Rotate,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Create a store; prints its API key once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: String,
        /// Origin allowed to call the storefront API from a browser (repeatable).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Shopify webhook shared secret.
        #[arg(long)]
        shopify_secret: Option<String>,
        /// WooCommerce webhook secret.
        #[arg(long)]
        woocommerce_secret: Option<String>,
    },
    /// List stores.
    List,
}

#[derive(Subcommand)]
enum NotificationCommand {
    /// List a store's dead (retries exhausted) or failed notifications.
    Dead {
        #[arg(long)]
        store: String,
        /// Also list failed (permanently rejected) ones.
        #[arg(long)]
        failed: bool,
    },
    /// Queue a dead or failed notification again.
    Replay {
        #[arg(long)]
        store: String,
        id: i64,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("RESTOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("RESTOCK_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    restock::tls::install_crypto_provider();
    init_tracing();
    match cli.command {
        Command::Serve => {
            let config = Config::load(cli.config.as_deref())?;
            let listen = config.listen;
            let app = restock::build(config).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_on_signal(shutdown.clone()));
            restock::run(app, listener, shutdown).await
        }
        Command::Migrate => {
            let config = Config::load(cli.config.as_deref())?;
            let db = Db::connect(&config.database, Warmth::Lazy).await?;
            db.migrate().await?;
            println!("migrations applied ({})", db.backend());
            Ok(())
        }
        Command::Demo => restock::demo::run().await,
        Command::Store { command } => {
            let config = Config::load(cli.config.as_deref())?;
            let db = Db::connect(&config.database, Warmth::Lazy).await?;
            db.migrate().await?;
            let now = chrono::Utc::now().timestamp_millis();
            match command {
                StoreCommand::Create {
                    name,
                    slug,
                    origins,
                    shopify_secret,
                    woocommerce_secret,
                } => {
                    if !restock::http::admin::valid_slug(&slug) {
                        anyhow::bail!("--slug must be 1-64 of a-z, 0-9 and -");
                    }
                    let origins = restock::http::admin::parse_origins(&origins)
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                    let secrets = restock::secrets::SecretBox::from_config(&config.secrets)?;
                    let sealed = shopify_secret
                        .as_deref()
                        .filter(|s| !s.is_empty())
                        .map(|s| secrets.seal("shopify_secret", s));
                    let woocommerce = woocommerce_secret
                        .as_deref()
                        .filter(|s| !s.is_empty())
                        .map(|s| secrets.seal("woocommerce_secret", s));
                    let created = db
                        .create_store(
                            NewStore {
                                name: &name,
                                slug: &slug,
                                allowed_origins: &origins,
                                shopify_secret: sealed.as_deref(),
                                woocommerce_secret: woocommerce.as_deref(),
                            },
                            now,
                        )
                        .await
                        .context("creating the store (is the slug taken?)")?;
                    println!(
                        "store:           {} (id {})",
                        created.store.slug, created.store.id
                    );
                    println!(
                        "api key:         {}   (shown once; keep it secret)",
                        created.api_key
                    );
                    println!("publishable key: {}", created.store.publishable_key);
                }
                StoreCommand::List => {
                    for s in db.list_stores().await? {
                        println!("{}\t{}\t{}", s.id, s.slug, s.name);
                    }
                }
            }
            Ok(())
        }
        Command::Notifications { command } => {
            let config = Config::load(cli.config.as_deref())?;
            let db = Db::connect(&config.database, Warmth::Lazy).await?;
            let slug = match &command {
                NotificationCommand::Dead { store, .. }
                | NotificationCommand::Replay { store, .. } => store,
            };
            let store = db
                .store_by_slug(slug)
                .await?
                .with_context(|| format!("no store {slug:?}"))?
                .store_id();
            match command {
                NotificationCommand::Dead { failed, .. } => {
                    let mut states = vec!["dead"];
                    if failed {
                        states.push("failed");
                    }
                    for state in states {
                        let mut after = 0;
                        loop {
                            let rows = db.notifications(store, Some(state), after, 500).await?;
                            for n in &rows {
                                println!(
                                    "{}\t{}\t{}\t{}\tattempts={}\t{}",
                                    n.id,
                                    n.state,
                                    n.sku,
                                    n.recipient,
                                    n.attempts,
                                    n.last_error.as_deref().unwrap_or("")
                                );
                            }
                            match rows.last() {
                                Some(last) if rows.len() == 500 => after = last.id,
                                _ => break,
                            }
                        }
                    }
                }
                NotificationCommand::Replay { id, .. } => {
                    let now = chrono::Utc::now().timestamp_millis();
                    match db
                        .replay_notification(store, restock_core::ids::NotificationId(id), now)
                        .await?
                    {
                        None => anyhow::bail!("store {slug} has no notification {id}"),
                        Some(Replay::Queued) => println!("notification {id} queued again"),
                        Some(Replay::NotReplayable(s)) => anyhow::bail!(
                            "notification {id} is {s}; only dead or failed ones can be replayed"
                        ),
                    }
                }
            }
            Ok(())
        }
        Command::Bench(args) => restock::bench::run(args).await,
        Command::Sources { store } => {
            let config = Config::load(cli.config.as_deref())?;
            let db = Db::connect(&config.database, Warmth::Lazy).await?;
            db.migrate().await?;
            let only = match &store {
                Some(slug) => Some(
                    db.store_by_slug(slug)
                        .await?
                        .with_context(|| format!("no store {slug:?}"))?
                        .store_id(),
                ),
                None => None,
            };
            let now = chrono::Utc::now().timestamp_millis();
            let ago = |t: Option<i64>| match t {
                Some(t) => format!("{}s ago", (now - t).max(0) / 1000),
                None => "never".into(),
            };
            println!(
                "STORE\tNAME\tKIND\tSTATUS\tLAST SUCCESS\tLAG\tFAILURES\tERROR RATE\tAPPLIED\tREJECTED\tLAST ERROR"
            );
            for r in db.all_sources().await? {
                if only.is_some_and(|s| s.0 != r.store_id) {
                    continue;
                }
                let h = restock::http::sources::health_of(&config.intake, &r, now);
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.0}%\t{}\t{}\t{}",
                    r.store_id,
                    r.name,
                    r.kind,
                    h.status,
                    ago(h.last_success_at),
                    h.lag_seconds
                        .map(|l| format!("{l:.0}s"))
                        .unwrap_or_else(|| "-".into()),
                    h.consecutive_failures,
                    h.error_rate * 100.0,
                    h.applied,
                    h.rejected,
                    h.last_error.unwrap_or_default().replace(['\t', '\n'], " ")
                );
            }
            Ok(())
        }
        Command::Import {
            kind,
            file,
            store,
            report,
            strict,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let app = restock::build(config).await?;
            let store_id = app
                .db
                .store_by_slug(&store)
                .await?
                .with_context(|| format!("no store {store:?}"))?
                .store_id();
            let kind = match kind {
                ImportKindArg::Catalog => restock::intake::csv::ImportKind::Catalog,
                ImportKindArg::Stock => restock::intake::csv::ImportKind::Stock,
                ImportKindArg::Signups => restock::intake::csv::ImportKind::Signups,
            };
            let s = restock::import::run(&app, store_id, kind, &file, report.as_deref()).await?;
            println!(
                "{} lines read: {} applied, {} stale, {} rejected (kept as dead letters of source csv), {} restock(s)",
                s.read, s.applied, s.stale, s.rejected, s.restocks
            );
            app.db.close().await;
            if strict && s.rejected > 0 {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Secrets {
            command: SecretsCommand::Rotate,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let db = Db::connect(&config.database, Warmth::Lazy).await?;
            db.migrate().await?;
            let secrets = restock::secrets::SecretBox::from_config(&config.secrets)?;
            let n = restock::secrets::rotate(&db, &secrets).await?;
            println!("{n} secret(s) re-sealed with the current key");
            Ok(())
        }
        Command::Backup { to } => {
            let config = Config::load(cli.config.as_deref())?;
            let db = Db::connect(&config.database, Warmth::Lazy).await?;
            db.backup_to(&to).await?;
            println!("backup written to {}", to.display());
            Ok(())
        }
    }
}

async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}
