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
    server: PythonServer,
}

#[derive(Debug)]
pub struct Received {
    pub envelope: serde_json::Value,
    pub message: Vec<u8>,
}

impl TlsSmtp {
    pub fn start(tls: Tls, auth: Option<(&str, &str)>, reject: &[&str]) -> TlsSmtp {
        let mut args = vec![
            "--tls".to_string(),
            match tls {
                Tls::None => "none",
                Tls::Starttls => "starttls",
                Tls::Implicit => "implicit",
            }
            .to_string(),
        ];
        if let Some((user, password)) = auth {
            args.push("--auth".into());
            args.push(format!("{user}:{password}"));
        }
        if !reject.is_empty() {
            args.push("--reject".into());
            args.extend(reject.iter().map(|r| r.to_string()));
        }
        let server = PythonServer::start("smtp_tls_server.py", &args, "aiosmtpd");
        TlsSmtp {
            port: server.port,
            server,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.server.ca_file()
    }

    pub fn messages(&self) -> Vec<Received> {
        let mut names: Vec<_> = std::fs::read_dir(self.server.dir.path())
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

/// A test server written in Python (`tests/support/<script>`), on a free port, in a
/// temporary folder of its own where it writes the test CA (`ca.pem`). It runs until
/// dropped.
pub struct PythonServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    _stdin: ChildStdin,
}

impl PythonServer {
    /// Starts `script` with `--dir DIR --port PORT` and `args`; waits for its READY.
    /// `needs` names what it needs installed, for the message when it cannot start.
    pub fn start(script: &str, args: &[String], needs: &str) -> PythonServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = format!("{}/tests/support/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(path)
            .arg("--dir")
            .arg(dir.path())
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 with {needs} (scripts/test installs it): {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read server output");
        assert_eq!(
            line.trim(),
            "READY",
            "{script} did not start (is {needs} installed?)"
        );
        PythonServer {
            port,
            dir,
            child,
            _stdin: stdin,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
