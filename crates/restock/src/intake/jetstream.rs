//! The JetStream source is not part of this build yet: `check_config` refuses it, so
//! none can be connected, and the runner is never handed one.

use tokio_util::sync::CancellationToken;

use super::runner::SourceCtx;
use crate::app::App;

pub fn check_config(_config: &serde_json::Value) -> Result<(), String> {
    Err("JetStream sources are not available in this build yet".into())
}

pub async fn run(_app: &App, _ctx: &SourceCtx, _stop: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("JetStream sources are not available in this build yet")
}

pub fn reparse(
    _config: &serde_json::Value,
    _payload: &str,
    _received_at: i64,
) -> Result<Vec<restock_core::stock::StockUpdate>, (String, String)> {
    Err((
        "not_replayable".into(),
        "JetStream sources are not available in this build yet".into(),
    ))
}
