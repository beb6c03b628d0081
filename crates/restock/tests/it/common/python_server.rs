//! Test servers written in Python (`tests/support/`): started on a free port in a
//! temporary folder of their own, where the TLS ones write the test CA.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

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
