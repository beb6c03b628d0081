//! The running application: its parts, shared by the HTTP server and the workers.

use std::sync::Arc;

use restock_core::token::Signer;
use tokio::sync::Notify;

use crate::channels::EmailChannel;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::render::Renderer;
use crate::storage::Db;
use crate::util::Clock;

#[derive(Clone)]
pub struct App {
    pub inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Config,
    pub db: Db,
    pub clock: Clock,
    pub signer: Signer,
    pub metrics: Metrics,
    pub renderer: Renderer,
    pub email: EmailChannel,
    /// Woken when this process plans notifications, so sends start at once.
    pub work_ready: Notify,
    /// Woken when this process records a restock, so planning starts at once.
    pub plan_ready: Notify,
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
        let key = db.instance_secret("link_signing_key").await?;
        Ok(App {
            inner: Arc::new(AppInner {
                config,
                db,
                clock,
                signer: Signer::new(key.as_bytes()),
                metrics: Metrics::new(),
                renderer: Renderer::new(),
                email,
                work_ready: Notify::new(),
                plan_ready: Notify::new(),
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
