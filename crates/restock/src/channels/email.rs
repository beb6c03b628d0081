//! Email over SMTP (any relay, pooled connections) or, as the embedded default,
//! readable `.eml` files in a local folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use restock_core::retry::Failure;
use secrecy::ExposeSecret;

use super::EmailMessage;
use super::smtp::{self, Security, SendError, SmtpPool, SmtpSettings};
use crate::config::{Config, EmailTransportKind, TlsMode};

pub enum EmailTransport {
    File {
        dir: PathBuf,
        from: Mailbox,
    },
    Smtp {
        pool: Box<SmtpPool>,
        from: Mailbox,
        timeout: Duration,
    },
}

impl EmailTransport {
    pub fn from_config(config: &Config) -> anyhow::Result<EmailTransport> {
        let c = &config.email;
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid configuration: email.from: {e}"))?;
        match c.transport {
            EmailTransportKind::File => {
                std::fs::create_dir_all(&c.file_dir).map_err(|e| {
                    anyhow::anyhow!("cannot create email.file_dir {}: {e}", c.file_dir.display())
                })?;
                remove_stale_partials(&c.file_dir);
                Ok(EmailTransport::File {
                    dir: c.file_dir.clone(),
                    from,
                })
            }
            EmailTransportKind::Smtp => {
                let s = &c.smtp;
                let ca_pem = if s.ca_file.as_os_str().is_empty() {
                    None
                } else {
                    Some(std::fs::read(&s.ca_file).map_err(|e| {
                        anyhow::anyhow!(
                            "invalid configuration: email.smtp.ca_file {}: {e}",
                            s.ca_file.display()
                        )
                    })?)
                };
                let starttls_params = || -> anyhow::Result<TlsParameters> {
                    let mut builder = TlsParameters::builder(s.host.clone());
                    if let Some(pem) = &ca_pem {
                        let cert = Certificate::from_pem(pem).map_err(|e| {
                            anyhow::anyhow!("invalid configuration: email.smtp.ca_file is not a PEM certificate: {e}")
                        })?;
                        builder = builder.add_root_certificate(cert);
                    }
                    builder.build_rustls().map_err(|e| {
                        anyhow::anyhow!("invalid configuration: email.smtp TLS settings: {e}")
                    })
                };
                let security = match s.tls {
                    TlsMode::None => Security::Plain,
                    TlsMode::Starttls => Security::StartTls(starttls_params()?),
                    TlsMode::Tls => {
                        let (connector, server_name) =
                            smtp::implicit_tls(&s.host, ca_pem.as_deref()).map_err(|e| {
                                anyhow::anyhow!(
                                    "invalid configuration: email.smtp TLS settings: {e}"
                                )
                            })?;
                        Security::Implicit {
                            connector,
                            server_name,
                        }
                    }
                };
                let timeout = Duration::from_secs(s.timeout_secs.max(1));
                let credentials = (!s.username.is_empty()).then(|| {
                    Credentials::new(s.username.clone(), s.password.expose_secret().to_string())
                });
                Ok(EmailTransport::Smtp {
                    pool: Box::new(SmtpPool::new(SmtpSettings {
                        host: s.host.clone(),
                        port: s.port,
                        security,
                        credentials,
                        connect_timeout: timeout,
                        size: config.smtp_pool_size(),
                    })),
                    from,
                    timeout,
                })
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            EmailTransport::File { .. } => "file",
            EmailTransport::Smtp { .. } => "smtp",
        }
    }

    fn from(&self) -> &Mailbox {
        match self {
            EmailTransport::File { from, .. } | EmailTransport::Smtp { from, .. } => from,
        }
    }

    pub fn build(&self, msg: &EmailMessage) -> Result<Message, Failure> {
        build_message(self.from(), msg)
    }

    pub async fn send(&self, msg: &EmailMessage) -> Result<(), Failure> {
        let message = self.build(msg)?;
        match self {
            EmailTransport::File { dir, .. } => {
                write_eml(dir, message.formatted())
                    .await
                    .map_err(|e| Failure::Retryable {
                        reason: format!("writing message file in {}: {e}", dir.display()),
                    })
            }
            EmailTransport::Smtp { pool, timeout, .. } => {
                // Bounds the whole exchange so a stalled relay cannot hold a slot.
                let bytes = message.formatted();
                match tokio::time::timeout(*timeout, pool.send(message.envelope(), &bytes)).await {
                    Err(_) => Err(Failure::Retryable {
                        reason: "SMTP exchange timed out".into(),
                    }),
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(SendError::Relay(e))) => Err(classify_smtp(&e)),
                    Ok(Err(e)) => Err(Failure::Retryable {
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }
}

/// What a relay's answer means for the notification.
///
/// - 4xx replies, timeouts and connection trouble are temporary: retry.
/// - 550, 551 and 553 (and their 5.1.x enhanced codes) say this recipient does not
///   exist or is not accepted: permanent, and the address is suppressed.
/// - Any other 5xx (authentication refused, TLS required, a command the relay does
///   not accept, a policy rejection of the whole message) is about the relay or our
///   configuration, not the shopper's address. Suppressing every address because a
///   password is wrong would lose the whole waiting list, so these are retried and,
///   if they persist, end dead — visible and replayable once the relay is fixed.
pub fn classify_smtp(e: &lettre::transport::smtp::Error) -> Failure {
    let reason = format!("{e}");
    if !e.is_permanent() {
        return Failure::Retryable { reason };
    }
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    if matches!(code.as_str(), "550" | "551" | "553") {
        Failure::Permanent { reason }
    } else {
        Failure::Retryable {
            reason: format!("relay refused ({code}): {reason}"),
        }
    }
}

/// Suffix of a message file still being written; never a finished message.
const PARTIAL: &str = ".eml.partial";

/// Writes one message so that the folder only ever holds whole ones: the bytes go to
/// a partial file, reach the disk, and only then is it renamed to `.eml` (a rename is
/// atomic) and the folder synced. A crash mid-write leaves at most a `.eml.partial`,
/// and the notification, not yet recorded as sent, is sent again.
async fn write_eml(dir: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        let name = format!("{millis}-{}", hex::encode(id));
        let partial = dir.join(format!("{name}{PARTIAL}"));
        let done = dir.join(format!("{name}.eml"));
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&partial, &done)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Removes partial files a crash left behind (older than a minute, so a second
/// process writing to the same folder is not disturbed). Their notifications were
/// never recorded as sent and go out again.
fn remove_stale_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let stale = e.file_name().to_string_lossy().ends_with(PARTIAL)
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
        if stale && let Err(err) = std::fs::remove_file(e.path()) {
            tracing::warn!(path = %e.path().display(), error = %err, "cannot remove partial message file");
        }
    }
}

pub fn build_message(from: &Mailbox, msg: &EmailMessage) -> Result<Message, Failure> {
    let to: Mailbox = msg.to.parse().map_err(|e| Failure::Permanent {
        reason: format!("recipient address {:?}: {e}", msg.to),
    })?;
    let permanent = |e: String| Failure::Permanent { reason: e };
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&msg.subject)
        .message_id(Some(msg.message_id.clone()))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            format!("<{}>", msg.list_unsubscribe),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click".to_string(),
        ))
        .multipart(MultiPart::alternative_plain_html(
            msg.text.clone(),
            msg.html.clone(),
        ))
        .map_err(|e| permanent(format!("building message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_written_message_is_one_whole_eml_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_eml(dir.path(), b"Subject: hi\r\n\r\nbody\r\n".to_vec())
            .await
            .expect("write");
        let files = names(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].ends_with(".eml"), "{files:?}");
        let raw = std::fs::read(dir.path().join(&files[0])).expect("read");
        assert_eq!(raw, b"Subject: hi\r\n\r\nbody\r\n");
    }

    #[test]
    fn only_stale_partials_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = std::time::SystemTime::now() - Duration::from_secs(300);
        for (name, modified) in [
            ("1-old.eml.partial", Some(old)),
            ("2-fresh.eml.partial", None),
            ("3-old.eml", Some(old)),
        ] {
            let f = std::fs::File::create(dir.path().join(name)).expect("create");
            if let Some(t) = modified {
                f.set_modified(t).expect("set mtime");
            }
        }
        remove_stale_partials(dir.path());
        assert_eq!(names(dir.path()), ["2-fresh.eml.partial", "3-old.eml"]);
    }
}
