//! A real SMTP server with TLS and AUTH for tests: aiosmtpd, driven by
//! `tests/support/smtp_tls_server.py`. It makes a test CA (`ca_file()`), speaks
//! STARTTLS or implicit TLS, can require a login, and refuses chosen recipients with
//! `550 5.1.1`. Accepted messages land in its folder with their envelope.

use std::path::PathBuf;

use super::python_server::PythonServer;

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
