//! Configuration: built-in defaults, then an optional file, then `RESTOCK_*`
//! environment variables. Validated once at start; errors name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use restock_core::retry::RetryPolicy;
use secrecy::SecretString;
use serde::Deserialize;

pub const DEFAULT_TOML: &str = include_str!("../restock.default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: String,
    pub admin_token: SecretString,
    pub database: DatabaseConfig,
    pub email: EmailConfig,
    pub dispatch: DispatchConfig,
    pub http: HttpConfig,
    pub retention: RetentionConfig,
    pub intake: IntakeConfig,
    pub secrets: SecretsConfig,
    pub events: EventsConfig,
}

/// Publishing Restock's own events to NATS JetStream (off unless `jetstream_url`
/// is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub jetstream_url: SecretString,
    pub stream: String,
    pub subject_prefix: String,
    pub create_stream: bool,
    pub buffer: usize,
}

/// Limits that keep slow and hostile clients from exhausting the server.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
    pub max_uri_bytes: usize,
    pub client_ip_header: String,
    pub auth_failures_per_minute: u32,
    pub import_max_bytes: u64,
    pub import_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    pub enabled: bool,
    pub tick_ms: u64,
    pub lease_secs: i64,
    pub retry_base_ms: u64,
    pub breaker_failures: u32,
    pub breaker_open_secs: i64,
    pub stale_after_secs: i64,
    pub log_max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub interval_secs: u64,
    pub batch_size: i64,
    pub intake_log_hours: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecretsConfig {
    pub key: SecretString,
    pub previous_keys: Vec<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransportKind {
    File,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmailConfig {
    pub transport: EmailTransportKind,
    pub file_dir: PathBuf,
    pub from: String,
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: PathBuf,
    pub username: String,
    pub password: SecretString,
    pub pool_size: u32,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DispatchConfig {
    pub enabled: bool,
    pub concurrency: usize,
    pub batch_size: i64,
    pub lease_secs: i64,
    pub poll_interval_ms: u64,
    pub retry: RetryPolicy,
}

/// The most sends a worker keeps in flight.
pub const MAX_CONCURRENCY: usize = 1024;

impl Config {
    /// SMTP connections to keep open: `email.smtp.pool_size`, or (0, the default) one
    /// per concurrent send.
    pub fn smtp_pool_size(&self) -> usize {
        match self.email.smtp.pool_size {
            0 => self.dispatch.concurrency,
            n => n as usize,
        }
    }

    /// Loads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("RESTOCK_").split("__"));
        Self::from_figment(fig)
    }

    /// Defaults with overrides given as TOML text (tests and the demo use this).
    pub fn from_defaults_and(overrides: &str) -> anyhow::Result<Config> {
        Self::from_layers(&[overrides])
    }

    /// Defaults, then each TOML text in turn, later ones winning.
    pub fn from_layers(layers: &[&str]) -> anyhow::Result<Config> {
        let fig = layers
            .iter()
            .fold(Figment::from(Toml::string(DEFAULT_TOML)), |fig, layer| {
                fig.merge(Toml::string(layer))
            });
        Self::from_figment(fig)
    }

    fn from_figment(fig: Figment) -> anyhow::Result<Config> {
        let config: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        {
            use secrecy::ExposeSecret;
            let e = &self.events;
            let url = e.jetstream_url.expose_secret();
            if !url.is_empty() {
                let ok = url::Url::parse(url).is_ok_and(|u| ["nats", "tls"].contains(&u.scheme()));
                if !ok {
                    anyhow::bail!(
                        "invalid configuration: events.jetstream_url must be a nats:// or tls:// URL"
                    );
                }
                if e.stream.is_empty()
                    || !e
                        .stream
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    anyhow::bail!(
                        "invalid configuration: events.stream must be letters, digits, '-' or '_'"
                    );
                }
                if e.subject_prefix.is_empty()
                    || e.subject_prefix.contains(['*', '>', ' '])
                    || e.subject_prefix.starts_with('.')
                    || e.subject_prefix.ends_with('.')
                {
                    anyhow::bail!(
                        "invalid configuration: events.subject_prefix must be a subject without wildcards"
                    );
                }
                if e.buffer < 1 {
                    anyhow::bail!("invalid configuration: events.buffer must be at least 1");
                }
            }
        }
        url::Url::parse(&self.public_url)
            .map_err(|e| anyhow::anyhow!("invalid configuration: public_url: {e}"))?;
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            anyhow::bail!(
                "invalid configuration: email.from is not a mailbox: {}",
                self.email.from
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.dispatch.concurrency) {
            anyhow::bail!(
                "invalid configuration: dispatch.concurrency must be between 1 and {MAX_CONCURRENCY}"
            );
        }
        let pool = self.email.smtp.pool_size as usize;
        if self.email.transport == EmailTransportKind::Smtp
            && pool != 0
            && pool < self.dispatch.concurrency
        {
            anyhow::bail!(
                "invalid configuration: email.smtp.pool_size ({pool}) is below dispatch.concurrency ({}): \
                 the sends beyond the pool would queue for a connection. Leave pool_size at 0 (one \
                 connection per concurrent send), or, if the relay allows only {pool} connections, \
                 set dispatch.concurrency = {pool}",
                self.dispatch.concurrency
            );
        }
        if self.dispatch.batch_size < 1 {
            anyhow::bail!("invalid configuration: dispatch.batch_size must be at least 1");
        }
        if self.dispatch.lease_secs < 1 {
            anyhow::bail!("invalid configuration: dispatch.lease_secs must be at least 1");
        }
        if self.dispatch.retry.max_attempts < 1 {
            anyhow::bail!("invalid configuration: dispatch.retry.max_attempts must be at least 1");
        }
        if self.http.max_connections == 0 {
            anyhow::bail!("invalid configuration: http.max_connections must be at least 1");
        }
        if self.http.import_max_bytes == 0 || self.http.import_timeout_secs == 0 {
            anyhow::bail!(
                "invalid configuration: http.import_max_bytes and http.import_timeout_secs must be at least 1"
            );
        }
        if self.http.header_read_timeout_secs == 0 || self.http.request_timeout_secs == 0 {
            anyhow::bail!(
                "invalid configuration: http.header_read_timeout_secs and http.request_timeout_secs must be at least 1"
            );
        }
        if self.database.acquire_timeout_ms == 0 {
            anyhow::bail!("invalid configuration: database.acquire_timeout_ms must be at least 1");
        }
        if !(1..=8760).contains(&self.retention.intake_log_hours) {
            anyhow::bail!("invalid configuration: retention.intake_log_hours must be 1 to 8760");
        }
        if self.intake.log_max_bytes > 64 * 1024 * 1024 {
            anyhow::bail!(
                "invalid configuration: intake.log_max_bytes must be at most 67108864 (64 MiB)"
            );
        }
        if self.retention.batch_size < 1 {
            anyhow::bail!("invalid configuration: retention.batch_size must be at least 1");
        }
        crate::secrets::SecretBox::from_config(&self.secrets)
            .map_err(|e| anyhow::anyhow!("invalid configuration: secrets: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_overrides_apply() {
        let c = Config::from_defaults_and("[dispatch]\nconcurrency = 3").expect("valid");
        assert_eq!(c.dispatch.concurrency, 3);
        assert_eq!(c.email.transport, EmailTransportKind::File);
    }

    #[test]
    fn the_smtp_pool_follows_the_concurrency_and_a_smaller_one_is_refused() {
        let smtp = "[email]\ntransport = \"smtp\"\n";
        let c = Config::from_defaults_and(&format!("{smtp}[dispatch]\nconcurrency = 40"))
            .expect("valid");
        assert_eq!(c.smtp_pool_size(), 40, "one connection per concurrent send");
        let c = Config::from_defaults_and(&format!(
            "{smtp}[email.smtp]\npool_size = 50\n[dispatch]\nconcurrency = 40"
        ))
        .expect("valid");
        assert_eq!(c.smtp_pool_size(), 50);
        let err = Config::from_defaults_and(&format!(
            "{smtp}[email.smtp]\npool_size = 4\n[dispatch]\nconcurrency = 16"
        ))
        .expect_err("a pool below the concurrency cannot work");
        let msg = err.to_string();
        assert!(
            msg.contains("pool_size (4)") && msg.contains("concurrency (16)"),
            "{msg}"
        );
        let err = Config::from_defaults_and(&format!(
            "[dispatch]\nconcurrency = {}",
            MAX_CONCURRENCY + 1
        ))
        .expect_err("too many");
        assert!(err.to_string().contains("dispatch.concurrency"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let err =
            Config::from_defaults_and("[dispatch]\nconcurrency = \"many\"").expect_err("invalid");
        assert!(err.to_string().contains("concurrency"), "{err}");
        let err = Config::from_defaults_and("[email.smtp]\ntls = \"maybe\"").expect_err("invalid");
        assert!(err.to_string().contains("tls"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = Config::from_defaults_and("[email.smtp]\npassword = \"hunter2\"").expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
