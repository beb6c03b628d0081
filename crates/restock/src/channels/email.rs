//! Email over SMTP (any relay, pooled connections) or, as the embedded default,
//! readable `.eml` files in a local folder.

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use restock_core::retry::Failure;
use secrecy::ExposeSecret;

use super::EmailMessage;
use crate::config::{EmailConfig, EmailTransportKind, TlsMode};

pub enum EmailTransport {
    File {
        transport: AsyncFileTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        timeout: Duration,
    },
}

impl EmailTransport {
    pub fn from_config(c: &EmailConfig) -> anyhow::Result<EmailTransport> {
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid configuration: email.from: {e}"))?;
        match c.transport {
            EmailTransportKind::File => {
                std::fs::create_dir_all(&c.file_dir).map_err(|e| {
                    anyhow::anyhow!("cannot create email.file_dir {}: {e}", c.file_dir.display())
                })?;
                Ok(EmailTransport::File {
                    transport: AsyncFileTransport::new(&c.file_dir),
                    from,
                })
            }
            EmailTransportKind::Smtp => {
                let s = &c.smtp;
                let tls_params = || {
                    TlsParameters::new(s.host.clone()).map_err(|e| {
                        anyhow::anyhow!("invalid configuration: email.smtp.host for TLS: {e}")
                    })
                };
                let tls = match s.tls {
                    TlsMode::None => Tls::None,
                    TlsMode::Starttls => Tls::Required(tls_params()?),
                    TlsMode::Tls => Tls::Wrapper(tls_params()?),
                };
                let timeout = Duration::from_secs(s.timeout_secs.max(1));
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    .port(s.port)
                    .tls(tls)
                    .timeout(Some(timeout))
                    .pool_config(PoolConfig::new().max_size(s.pool_size));
                if !s.username.is_empty() {
                    builder = builder.credentials(Credentials::new(
                        s.username.clone(),
                        s.password.expose_secret().to_string(),
                    ));
                }
                Ok(EmailTransport::Smtp {
                    transport: builder.build(),
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
            EmailTransport::File { transport, .. } => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| Failure::Retryable {
                    reason: format!("writing message file: {e}"),
                }),
            EmailTransport::Smtp {
                transport, timeout, ..
            } => {
                // The transport's own timeout covers each command; this bounds the
                // whole exchange so a stalled relay cannot hold a worker slot.
                match tokio::time::timeout(*timeout * 4, transport.send(message)).await {
                    Err(_) => Err(Failure::Retryable {
                        reason: "SMTP exchange timed out".into(),
                    }),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(classify_smtp(&e)),
                }
            }
        }
    }
}

/// 4xx replies, timeouts and connection trouble are worth retrying; 5xx replies
/// are the relay's final word about this message or address.
pub fn classify_smtp(e: &lettre::transport::smtp::Error) -> Failure {
    let reason = format!("{e}");
    if e.is_permanent() {
        Failure::Permanent { reason }
    } else {
        Failure::Retryable { reason }
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
