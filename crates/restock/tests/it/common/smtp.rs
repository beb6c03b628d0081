//! A real SMTP server for tests: Postfix's `smtp-sink`, started per test on a free
//! loopback port, dumping each received message to a file (`-d`). It can be told to
//! answer a command with a temporary (4xx, `-r`) or permanent (5xx, `-f`) error.
//!
//! Dump format (observed with Postfix 3.7): envelope lines first (`X-Client-Addr:`,
//! `X-Client-Proto:`, `X-Helo-Args:`, `X-Mail-Args: <from>`, one `X-Rcpt-Args: <to>`
//! per recipient), then a `Received:` header smtp-sink adds (with tab-indented
//! continuation lines), then the message as sent, with LF line endings. The file is
//! complete before smtp-sink answers the final "." with 250, so reading after a send
//! returned is safe.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Accept,
    /// 450 to RCPT TO.
    TempFailRcpt,
    /// 500 to RCPT TO.
    PermFailRcpt,
    /// 450 to DATA.
    TempFailData,
    /// Accepts, but waits two seconds before answering DATA (sends stay in flight).
    SlowData,
}

pub struct SmtpSink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as the client sent it (headers and body).
    pub message: Vec<u8>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn binary() -> &'static str {
    for path in ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"] {
        if Path::new(path).exists() {
            return path;
        }
    }
    panic!("smtp-sink not found: install Debian's postfix package (scripts/test does)");
}

impl SmtpSink {
    pub fn start(behaviour: Behaviour) -> SmtpSink {
        Self::start_on(free_port(), behaviour)
    }

    /// Starts on a given port (to replace a sink with one that behaves differently).
    pub fn start_on(port: u16, behaviour: Behaviour) -> SmtpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        // smtp-sink drops privileges to -u's user, which must be able to write here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        let mut cmd = Command::new(binary());
        let is_root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if is_root {
            cmd.args(["-u", "nobody"]);
        }
        match behaviour {
            Behaviour::Accept => {}
            Behaviour::TempFailRcpt => {
                cmd.args(["-r", "RCPT"]);
            }
            Behaviour::PermFailRcpt => {
                cmd.args(["-f", "RCPT"]);
            }
            Behaviour::TempFailData => {
                cmd.args(["-r", "DATA"]);
            }
            Behaviour::SlowData => {
                cmd.args(["-w", "2"]);
            }
        }
        cmd.arg("-d")
            .arg(format!("{}/msg-%s.", dir.path().display()));
        // A listen backlog large enough for a worker opening hundreds of sessions at once.
        cmd.arg(format!("127.0.0.1:{port}")).arg("1024");
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("start smtp-sink");
        let sink = SmtpSink { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtp-sink did not start listening on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    /// Every message received so far, oldest file name first. smtp-sink opens a
    /// session's dump file at `MAIL FROM` and leaves it behind for a while when the
    /// transaction goes no further (a rejected `RCPT`, a dropped session), empty or
    /// holding the envelope only: a message is a dump with a recipient and content.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        let mut paths: Vec<_> = std::fs::read_dir(self.dir.path())
            .expect("read dump dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("msg-"))
            })
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| parse_dump(&std::fs::read(p).expect("read dump")))
            .filter(|m| !m.rcpt_to.is_empty() && !m.message.is_empty())
            .collect()
    }

    /// Stops the server now (the port is free again afterwards).
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_dump(raw: &[u8]) -> ReceivedMessage {
    let text = String::from_utf8_lossy(raw);
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut rest = &text[..];
    // Envelope lines.
    while let Some((line, tail)) = rest.split_once('\n') {
        if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
            mail_from = v
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or_default()
                .to_string();
        } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
            rcpt_to.push(
                v.trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        } else if !line.starts_with("X-Client-") && !line.starts_with("X-Helo-Args:") {
            break;
        }
        rest = tail;
    }
    // smtp-sink's own Received header and its continuation lines.
    if rest.starts_with("Received:") {
        let mut lines = rest.split_inclusive('\n');
        let mut skip = lines.next().map_or(0, str::len);
        for l in lines {
            if l.starts_with('\t') || l.starts_with(' ') {
                skip += l.len();
            } else {
                break;
            }
        }
        rest = &rest[skip..];
    }
    ReceivedMessage {
        mail_from,
        rcpt_to,
        message: rest.replace('\n', "\r\n").into_bytes(),
    }
}
