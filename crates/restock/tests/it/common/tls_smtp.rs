//! A real SMTP server with TLS and AUTH for tests: aiosmtpd, driven by
//! `tests/support/smtp_tls_server.py`. It makes a test CA (`ca_file()`), speaks
//! STARTTLS or implicit TLS, can require a login, and refuses chosen recipients with
//! `550 5.1.1`. Accepted messages land in its folder with their envelope.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

#[derive(Debug, Clone, Copy)]
pub enum Tls {
    None,
    Starttls,
    Implicit,
}

pub struct TlsSmtp {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    _stdin: ChildStdin,
}

#[derive(Debug)]
pub struct Received {
    pub envelope: serde_json::Value,
    pub message: Vec<u8>,
}

impl TlsSmtp {
    pub fn start(tls: Tls, auth: Option<(&str, &str)>, reject: &[&str]) -> TlsSmtp {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/smtp_tls_server.py"
        );
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg("--dir")
            .arg(dir.path())
            .arg("--port")
            .arg(port.to_string())
            .arg("--tls")
            .arg(match tls {
                Tls::None => "none",
                Tls::Starttls => "starttls",
                Tls::Implicit => "implicit",
            });
        if let Some((user, password)) = auth {
            cmd.arg("--auth").arg(format!("{user}:{password}"));
        }
        if !reject.is_empty() {
            cmd.arg("--reject").args(reject);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs it)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read server output");
        assert_eq!(
            line.trim(),
            "READY",
            "the aiosmtpd server did not start (is aiosmtpd installed?)"
        );
        TlsSmtp {
            port,
            dir,
            child,
            _stdin: stdin,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn messages(&self) -> Vec<Received> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| Received {
                envelope: serde_json::from_slice(
                    &std::fs::read(p.with_extension("json")).expect("envelope"),
                )
                .expect("json"),
                message: std::fs::read(&p).expect("message"),
            })
            .collect()
    }
}

impl Drop for TlsSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
