//! The running application: its parts, shared by the HTTP server and the workers.

use std::sync::Arc;

use restock_core::token::Signer;
use tokio::sync::Notify;

use crate::channels::EmailChannel;
use crate::config::Config;
use crate::http::auth::AuthThrottle;
use crate::metrics::Metrics;
use crate::render::Renderer;
use crate::secrets::SecretBox;
use crate::storage::Db;
use crate::storage::signup_writer::SignUpWriter;
use crate::storage::stores::StoreRow;
use crate::storage::write_turns::WriteTurns;
use crate::util::Clock;

#[derive(Clone)]
pub struct App {
    pub inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Config,
    pub db: Db,
    /// Where sign-ups are written (grouped on SQLite).
    pub signups: SignUpWriter,
    /// Turns at SQLite's write lock for the busiest writers.
    pub write_turns: WriteTurns,
    pub clock: Clock,
    pub signer: Signer,
    pub metrics: Metrics,
    pub renderer: Renderer,
    pub email: EmailChannel,
    pub secrets: SecretBox,
    /// Failed authentications per client address.
    pub auth_throttle: AuthThrottle,
    /// Random id of this installation (its database), part of every Message-ID so
    /// two installations never mint the same one.
    pub installation_id: String,
    /// The host of `public_url`, the domain part of every Message-ID.
    pub public_host: String,
    /// When the workers last purged expired history (ms; 0: not yet).
    pub last_purge_ms: std::sync::atomic::AtomicI64,
    /// Woken when this process plans notifications, so sends start at once.
    pub work_ready: Notify,
    /// Woken when this process records a restock, so planning starts at once.
    pub plan_ready: Notify,
    /// This process's name among the instances sharing the database (host and a
    /// random suffix): the owner of the source leases it holds.
    pub instance_name: String,
    /// Outbound events (logged, and published when a publisher is connected).
    pub events: crate::events::Events,
    /// Stores by publishable key, as the storefront reads them on every request.
    pub storefront_stores: StoreCache,
}

/// Stores by publishable key for the storefront, each kept for [`StoreCache::TTL`]:
/// every sign-up and preflight names its store, and the row rarely changes. A change
/// made through this process clears the cache at once; one made elsewhere (another
/// instance, the command line) shows within the TTL. Unknown keys are not kept, so
/// forged keys cannot fill it.
#[derive(Default)]
pub struct StoreCache {
    rows: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, StoreRow)>>,
}

impl StoreCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(1);
    /// Entries kept at most; past it the cache starts over.
    const MAX: usize = 10_000;

    pub fn get(&self, key: &str) -> Option<StoreRow> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.get(key)
            .filter(|(at, _)| at.elapsed() < Self::TTL)
            .map(|(_, row)| row.clone())
    }

    pub fn put(&self, key: &str, row: StoreRow) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if rows.len() >= Self::MAX {
            rows.clear();
        }
        rows.insert(key.to_string(), (std::time::Instant::now(), row));
    }

    pub fn clear(&self) {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

impl App {
    /// Builds the app on a migrated database.
    pub async fn new(
        config: Config,
        db: Db,
        clock: Clock,
        email: EmailChannel,
    ) -> anyhow::Result<App> {
        let secrets = SecretBox::from_config(&config.secrets)?;
        if secrets.is_plaintext() {
            tracing::warn!(
                "secrets.key is not set: Shopify secrets and the link-signing key are stored in clear"
            );
        }
        let key = link_signing_key(&db, &secrets).await?;
        let installation_id = db
            .instance_secret("installation_id", &crate::util::random_token(9))
            .await?;
        let public_host = url::Url::parse(&config.public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "restock.local".into());
        let metrics = Metrics::new();
        let events = crate::events::Events::default();
        events.count_with(metrics.events.clone());
        let write_turns = WriteTurns::for_db(&db);
        Ok(App {
            inner: Arc::new(AppInner {
                public_host,
                config,
                signups: SignUpWriter::start(db.clone(), write_turns.clone()),
                write_turns,
                db,
                clock,
                signer: Signer::new(key.as_bytes()),
                secrets,
                auth_throttle: AuthThrottle::default(),
                installation_id,
                last_purge_ms: std::sync::atomic::AtomicI64::new(0),
                metrics,
                renderer: Renderer::new(),
                email,
                work_ready: Notify::new(),
                plan_ready: Notify::new(),
                instance_name: format!(
                    "{}-{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "restock".into()),
                    crate::util::random_token(6)
                ),
                events,
                storefront_stores: StoreCache::default(),
            }),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("{}{}", self.config.public_url.trim_end_matches('/'), path)
    }
}

/// The key that signs links in messages: created on first start, stored sealed with
/// the configured secrets key (and re-sealed at start when that key changed).
async fn link_signing_key(db: &Db, secrets: &SecretBox) -> anyhow::Result<String> {
    const NAME: &str = "link_signing_key";
    let fresh = crate::util::random_token(32);
    let stored = db
        .instance_secret(NAME, &secrets.seal(NAME, &fresh))
        .await?;
    let key = secrets
        .open(NAME, &stored)
        .map_err(|e| anyhow::anyhow!("opening the stored {NAME}: {e}"))?;
    if !secrets.is_current(&stored) {
        db.set_instance_secret(NAME, &secrets.seal(NAME, &key))
            .await?;
    }
    Ok(key)
}
