//! SMTP connections kept open for throughput.
//!
//! What the general-purpose client does not do, and a notification burst needs:
//!
//! - `TCP_NODELAY` on every connection. A message's body and its terminating
//!   `\r\n.\r\n` are two writes; with Nagle's algorithm the second waits for the
//!   relay's delayed ACK, about 40 ms a message.
//! - `PIPELINING` (RFC 2920) where the relay offers it: `MAIL FROM`, `RCPT TO` and
//!   `DATA` go in one write and their answers are read together, two round trips a
//!   message instead of four.
//! - A connection taken from the pool is used at once, with no `NOOP` round trip.
//!   Only one that sat idle longer than [`VERIFY_AFTER_IDLE`] is checked first. If a
//!   reused connection turns out closed before the relay accepted anything (its
//!   `MAIL FROM` got no answer), the message goes over a fresh connection: nothing
//!   was accepted, so nothing can be delivered twice.
//! - Up to `size` connections, each used by one send at a time; a send beyond that
//!   waits for a connection rather than opening and closing extra ones.
//! - A send that must open a connection also watches for one coming free and takes
//!   whichever is ready first. A relay that caps its sessions below the pool size
//!   (Postfix's default process limit is 100) then leaves the extra sends reusing the
//!   sessions it did accept, instead of waiting out the connect timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::Error as RelayError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A connection idle for longer than this is checked with `NOOP` before use: relays
/// close idle sessions (Postfix after 300 s, some much sooner).
pub const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(10);

/// How a connection is secured.
pub enum Security {
    Plain,
    /// `STARTTLS`, required.
    StartTls(TlsParameters),
    /// TLS from the first byte (port 465).
    Implicit {
        connector: tokio_rustls::TlsConnector,
        server_name: rustls_pki_types::ServerName<'static>,
    },
}

/// Why a send did not go through.
#[derive(Debug)]
pub enum SendError {
    /// The relay answered with an error, or the session broke mid-exchange.
    Relay(RelayError),
    /// No session could be set up (connect, TLS, greeting timing out).
    Connect(std::io::Error),
    /// This message cannot go over this relay as configured.
    Unsendable(&'static str),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Relay(e) => write!(f, "{e}"),
            SendError::Connect(e) => write!(f, "connecting to the relay: {e}"),
            SendError::Unsendable(why) => f.write_str(why),
        }
    }
}

impl From<RelayError> for SendError {
    fn from(e: RelayError) -> Self {
        SendError::Relay(e)
    }
}

pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<Credentials>,
    /// Bounds connecting and the greeting.
    pub connect_timeout: Duration,
    pub size: usize,
}

pub struct SmtpPool {
    settings: SmtpSettings,
    hello: ClientId,
    idle: std::sync::Mutex<Vec<(Session, Instant)>>,
    /// Woken when a connection is parked.
    parked: tokio::sync::Notify,
    /// Connections in use; a connection is opened only when none is idle, so open
    /// connections never exceed `size`.
    in_use: Semaphore,
}

impl SmtpPool {
    pub fn new(settings: SmtpSettings) -> SmtpPool {
        let size = settings.size.max(1);
        SmtpPool {
            settings,
            hello: ClientId::default(),
            idle: std::sync::Mutex::new(Vec::with_capacity(size)),
            parked: tokio::sync::Notify::new(),
            in_use: Semaphore::new(size),
        }
    }

    /// Sends one message. Any failure drops the connection it happened on.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        // The semaphore is never closed.
        let _slot = self.in_use.acquire().await.ok();
        let (mut conn, reused) = match self.take_idle().await {
            Some(conn) => (conn, true),
            None => tokio::select! {
                opened = self.open() => (opened?, false),
                conn = self.next_parked() => (conn, true),
            },
        };
        let result = match transact(&mut conn, envelope, message).await {
            // No SMTP answer at all to MAIL FROM: nothing was accepted.
            Err(Stage::Mail(SendError::Relay(e))) if reused && e.status().is_none() => {
                // The relay closed this session while it sat in the pool.
                conn.conn.abort().await;
                conn = self.open().await?;
                transact(&mut conn, envelope, message).await
            }
            other => other,
        };
        match result {
            Ok(()) => {
                self.park(conn);
                Ok(())
            }
            Err(Stage::Mail(e) | Stage::Later(e)) => {
                conn.conn.abort().await;
                Err(e)
            }
        }
    }

    async fn take_idle(&self) -> Option<Session> {
        loop {
            let (mut session, since) = self.idle.lock().ok()?.pop()?;
            if since.elapsed() < VERIFY_AFTER_IDLE || session.conn.test_connected().await {
                return Some(session);
            }
            session.conn.abort().await;
        }
    }

    /// The next connection parked by another send.
    async fn next_parked(&self) -> Session {
        loop {
            self.parked.notified().await;
            if let Some(conn) = self.take_idle().await {
                return conn;
            }
        }
    }

    fn park(&self, session: Session) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((session, Instant::now()));
        }
        self.parked.notify_one();
    }

    async fn open(&self) -> Result<Session, SendError> {
        let s = &self.settings;
        let connect = async {
            let tcp = TcpStream::connect((s.host.as_str(), s.port))
                .await
                .map_err(SendError::Connect)?;
            tcp.set_nodelay(true).map_err(SendError::Connect)?;
            let stream: Box<dyn AsyncTokioStream> = match &s.security {
                Security::Implicit {
                    connector,
                    server_name,
                } => Box::new(TlsStream(
                    connector
                        .connect(server_name.clone(), tcp)
                        .await
                        .map_err(SendError::Connect)?,
                )),
                _ => Box::new(tcp),
            };
            let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
            if let Security::StartTls(params) = &s.security {
                conn.starttls(params.clone(), &self.hello).await?;
            }
            if let Some(credentials) = &s.credentials {
                conn.auth(DEFAULT_MECHANISMS, credentials).await?;
            }
            // lettre keeps only the EHLO keywords it uses; ask again for PIPELINING.
            let ehlo = conn.command(Ehlo::new(self.hello.clone())).await?;
            let pipelining = ehlo.message().any(|line| {
                line.split_whitespace()
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))
            });
            Ok::<_, SendError>(Session { conn, pipelining })
        };
        match tokio::time::timeout(s.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))),
        }
    }
}

/// Where a transaction failed: before the relay accepted the sender, or later.
enum Stage {
    Mail(SendError),
    Later(SendError),
}

/// An open SMTP session and whether the relay takes pipelined commands.
struct Session {
    conn: AsyncSmtpConnection,
    pipelining: bool,
}

/// Several commands written at once (RFC 2920 pipelining).
struct Pipelined(String);

impl std::fmt::Display for Pipelined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One mail transaction, as lettre's `send` runs it (pipelined where the relay
/// allows), with the stage of a failure. A failure leaves the session unusable.
async fn transact(session: &mut Session, envelope: &Envelope, message: &[u8]) -> Result<(), Stage> {
    let conn = &mut session.conn;
    let mut params = Vec::new();
    let non_ascii = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Stage::Mail(SendError::Unsendable(
                "the relay does not accept non-ASCII addresses (no SMTPUTF8)",
            )));
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(Stage::Mail(SendError::Unsendable(
                "the relay does not accept 8-bit messages (no 8BITMIME)",
            )));
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mail = Mail::new(envelope.from().cloned(), params);
    let later = |e: RelayError| Stage::Later(e.into());
    if session.pipelining {
        let mut commands = mail.to_string();
        for to in envelope.to() {
            commands.push_str(&Rcpt::new(to.clone(), vec![]).to_string());
        }
        commands.push_str(&Data.to_string());
        // The first answer is MAIL FROM's; then one per recipient, then DATA's.
        conn.command(Pipelined(commands))
            .await
            .map_err(|e| Stage::Mail(e.into()))?;
        for _ in envelope.to() {
            conn.read_response().await.map_err(later)?;
        }
        conn.read_response().await.map_err(later)?;
    } else {
        conn.command(mail)
            .await
            .map_err(|e| Stage::Mail(e.into()))?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), vec![]))
                .await
                .map_err(later)?;
        }
        conn.command(Data).await.map_err(later)?;
    }
    // The content and its terminating line in one write (no second small segment).
    match std::str::from_utf8(message) {
        Ok(text) => {
            conn.command(Pipelined(dot_stuffed(text)))
                .await
                .map_err(later)?;
        }
        Err(_) => {
            conn.message(message).await.map_err(later)?;
        }
    }
    Ok(())
}

/// The message as DATA content (RFC 5321 section 4.5.2): a line starting with "."
/// gets a second one; then the terminating `CRLF . CRLF`, as lettre sends it.
fn dot_stuffed(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 64);
    if message.starts_with('.') {
        out.push('.');
    }
    let mut rest = message;
    while let Some(at) = rest.find("\r\n.") {
        out.push_str(&rest[..at + 3]);
        out.push('.');
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out.push_str("\r\n.\r\n");
    out
}

/// A TLS session over TCP as lettre's stream type.
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsStream")
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The TLS client settings for implicit TLS: the public roots, plus a private CA.
pub fn implicit_tls(
    host: &str,
    extra_ca_pem: Option<&[u8]>,
) -> anyhow::Result<(
    tokio_rustls::TlsConnector,
    rustls_pki_types::ServerName<'static>,
)> {
    let config = crate::tls::client_config(extra_ca_pem)?;
    let server_name = rustls_pki_types::ServerName::try_from(host.to_string())?;
    Ok((
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    ))
}

#[cfg(test)]
mod tests {
    use super::dot_stuffed;

    #[test]
    fn lines_starting_with_a_dot_are_stuffed() {
        assert_eq!(
            dot_stuffed(".a\r\nb.\r\n..c\r\n"),
            "..a\r\nb.\r\n...c\r\n\r\n.\r\n"
        );
        // Only CRLF ends a line, as lettre's codec has it.
        assert_eq!(dot_stuffed("x\n.y\r.z"), "x\n.y\r.z\r\n.\r\n");
        assert_eq!(dot_stuffed(""), "\r\n.\r\n");
        assert_eq!(dot_stuffed(".\r\n.\r\n."), "..\r\n..\r\n..\r\n.\r\n");
    }

    proptest::proptest! {
        /// Against the rule as RFC 5321 states it, line by line.
        #[test]
        fn stuffing_doubles_the_dot_that_starts_each_line(
            message in "([.\r\nab]|é){0,40}"
        ) {
            let lines: Vec<String> = message
                .split("\r\n")
                .map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() })
                .collect();
            proptest::prop_assert_eq!(dot_stuffed(&message), lines.join("\r\n") + "\r\n.\r\n");
        }
    }
}
