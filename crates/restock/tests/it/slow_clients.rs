//! Slow and idle clients against the real binary under the common 1,024-descriptor
//! limit: 2,000 idle connections do not stop it from accepting, health checks stay
//! fast, and a client that trickles its request head is cut off.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut cmd = Command::new("sh");
    // The limit many distributions ship; the server must live within it.
    cmd.args(["-c", "ulimit -n 1024 && exec \"$0\" serve"])
        .arg(env!("CARGO_BIN_EXE_restock"))
        .env(
            "RESTOCK_DATABASE__URL",
            format!("sqlite://{}/r.db", dir.path().display()),
        )
        .env("RESTOCK_LISTEN", format!("127.0.0.1:{port}"))
        .env("RESTOCK_DISPATCH__ENABLED", "false")
        .env("RESTOCK_EMAIL__FILE_DIR", dir.path().join("outbox"))
        .env("RESTOCK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start restock");
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(port).is_none() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// One health check on a fresh connection; its duration if it answered 200.
fn health(port: u16) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    buf.starts_with(b"HTTP/1.1 200").then(|| started.elapsed())
}

#[test]
fn two_thousand_idle_connections_do_not_lock_others_out() {
    // A long header timeout, so that it is the connection cap, not the timeout,
    // that keeps the server reachable within this test's few seconds.
    let server = start(&[("RESTOCK_HTTP__HEADER_READ_TIMEOUT_SECS", "60")]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let started = Instant::now();
    let mut idle = Vec::with_capacity(2000);
    while idle.len() < 2000 && started.elapsed() < Duration::from_secs(10) {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            continue;
        };
        // Half of them start a request head and never finish it.
        if idle.len() % 2 == 0 {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        }
        idle.push(s);
    }
    assert_eq!(
        idle.len(),
        2000,
        "connections accepted in {:?}",
        started.elapsed()
    );
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let took = health(server.port).expect("health check answered");
        worst = worst.max(took);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        worst < Duration::from_millis(100),
        "slowest health check {worst:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    assert!(health(server.port).is_some());
}

#[test]
fn a_trickled_request_head_is_cut_off() {
    let server = start(&[("RESTOCK_HTTP__HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut closed = false;
    for chunk in [&b"GET /hea"[..], b"lthz HT", b"TP/1.1\r\n", b"Host: x\r\n"] {
        if s.write_all(chunk).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    if !closed {
        let mut buf = [0u8; 64];
        // The server closes (0 bytes or a reset) instead of waiting for the rest.
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // An idle connection (nothing sent) is closed too.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
