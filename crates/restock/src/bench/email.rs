//! Email at the speed of the wire: Restock's sending rate with default settings
//! beside the raw limit of the same machine, measured in the same run.
//!
//! - SMTP: Postfix's `smtp-source` sending Restock's own rendered message to
//!   `smtp-sink` on loopback over 16 sessions, both as it runs by default (a new
//!   connection per message) and with `-d` (connections reused), against Restock's
//!   dispatch worker sending a restock's notifications to the same sink.
//! - A small restock end to end (stock update to the last message accepted) against
//!   `smtp-source` sending the same number.
//! - The file outbox against a plain loop of write + fsync + rename.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{fresh_db, seed_store, stock};
use crate::App;
use crate::channels::email::{EmailTransport, build_message};
use crate::channels::{EmailChannel, MemoryOutbox};
use crate::config::Config;
use crate::util::Clock;

/// Sessions `smtp-source` runs, and Restock's default concurrency.
const SESSIONS: usize = 16;

pub async fn run(db: &str, emails: u64, small: u64, files: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let work = tempfile_dir()?;
    let sample = sample_message(db).await?;
    let message_file = work.0.join("message.eml");
    std::fs::write(&message_file, &sample)?;
    println!(
        "\nEmail over SMTP to smtp-sink on loopback (message of {} bytes, Restock's own rendering):",
        sample.len()
    );

    let raw = smtp_source(sink.port, SESSIONS, emails, &message_file, false)?;
    let reused = smtp_source(sink.port, SESSIONS, emails, &message_file, true)?;
    let ours = restock_dispatch(db, &smtp_to(sink.port), emails).await?;
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "  raw smtp-source, {SESSIONS} sessions, {emails} messages: {:.2} s ({:.0} /s); with -d (connections reused): {:.2} s ({:.0} /s)",
        raw.as_secs_f64(),
        rate(emails, raw),
        reused.as_secs_f64(),
        rate(emails, reused)
    );
    println!(
        "  Restock dispatch, default settings, {emails} notifications of one restock: {:.2} s ({:.0} /s), {:.0} % of raw, {:.0} % of raw with -d",
        ours.as_secs_f64(),
        rate(emails, ours),
        100.0 * rate(emails, ours) / rate(emails, raw),
        100.0 * rate(emails, ours) / rate(emails, reused)
    );

    let raw_small = smtp_source(sink.port, SESSIONS, small, &message_file, false)?;
    let reused_small = smtp_source(sink.port, SESSIONS, small, &message_file, true)?;
    let ours_small = restock_end_to_end(db, sink.port, small).await?;
    println!(
        "  a restock of {small} waiting, stock update to the last message accepted: {:.3} s; raw smtp-source {small}: {:.3} s ({:.2}x), with -d {:.3} s ({:.2}x)",
        ours_small.as_secs_f64(),
        raw_small.as_secs_f64(),
        ours_small.as_secs_f64() / raw_small.as_secs_f64(),
        reused_small.as_secs_f64(),
        ours_small.as_secs_f64() / reused_small.as_secs_f64()
    );

    println!("\nFile outbox (the embedded default), {files} messages:");
    let raw_files = write_fsync_rename(&work.0.join("raw"), &sample, files)?;
    let file_outbox = format!(
        "[email]\ntransport = \"file\"\nfile_dir = \"{}\"\n",
        work.0.join("outbox").display()
    );
    let ours_files = restock_dispatch(db, &file_outbox, files).await?;
    println!(
        "  raw loop write + fsync + rename: {:.2} s ({:.0} /s)",
        raw_files.as_secs_f64(),
        rate(files, raw_files)
    );
    println!(
        "  Restock dispatch to the file outbox: {:.2} s ({:.0} /s), {:.0} % of raw",
        ours_files.as_secs_f64(),
        rate(files, ours_files),
        100.0 * rate(files, ours_files) / rate(files, raw_files)
    );
    Ok(())
}

/// `smtp-sink` on a free loopback port, not keeping what it receives.
struct Sink {
    port: u16,
    child: Child,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postfix_tool(name: &str) -> anyhow::Result<PathBuf> {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .with_context(|| format!("{name} not found: install Debian's postfix package"))
}

impl Sink {
    fn start() -> anyhow::Result<Sink> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(postfix_tool("smtp-sink")?);
        if is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let sink = Sink { port, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sink)
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// `smtp-source`: `messages` over `sessions` parallel sessions, a new connection per
/// message as it runs by default, or (`reuse`, `-d`) connections kept open.
fn smtp_source(
    port: u16,
    sessions: usize,
    messages: u64,
    file: &Path,
    reuse: bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut cmd = Command::new(postfix_tool("smtp-source")?);
    if reuse {
        cmd.arg("-d");
    }
    let status = cmd
        .args(["-s", &sessions.to_string(), "-m", &messages.to_string()])
        .arg("-F")
        .arg(file)
        .args([
            "-f",
            "alerts@restock.invalid",
            "-t",
            "shopper@bench.example",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "smtp-source failed: {status}");
    Ok(start.elapsed())
}

/// One notification rendered and formatted as Restock sends it (LF line ends, as
/// `smtp-source -F` reads a file).
async fn sample_message(db: &str) -> anyhow::Result<Vec<u8>> {
    let b = fresh_db(db).await?;
    let (store, product, variant) = seed_store(&b.db, "sample").await?;
    b.db.bench_seed_waiting_list(store, product, variant, 1)
        .await?;
    let memory = MemoryOutbox::default();
    let config = Config::from_defaults_and("")?;
    let app = App::new(
        config.clone(),
        b.db.clone(),
        Clock::System,
        EmailChannel::Memory(memory.clone()),
    )
    .await?;
    restock(&app, store).await?;
    crate::dispatch::run_pending(&app).await?;
    let msg = memory.messages().await.pop().context("no message")?;
    let from = config.email.from.parse()?;
    let formatted = build_message(&from, &msg)
        .map_err(|e| anyhow::anyhow!("{}", e.reason()))?
        .formatted();
    b.drop_schema().await?;
    Ok(String::from_utf8(formatted)?
        .replace("\r\n", "\n")
        .into_bytes())
}

/// Takes the bench variant out of stock, then back: a restock.
async fn restock(app: &App, store: restock_core::ids::StoreId) -> anyhow::Result<()> {
    let at = app.now();
    crate::intake::apply(app, store, "bench", &[stock("B-1", 0, at - 2)], &[]).await?;
    let out =
        crate::intake::apply(app, store, "bench", &[stock("B-1", 50_000, at - 1)], &[]).await?;
    anyhow::ensure!(out.restocks.len() == 1, "expected a restock");
    Ok(())
}

/// An app on `db` with the default settings, sending through `email`.
async fn app_with(db: &crate::storage::Db, email: &str) -> anyhow::Result<App> {
    let config = Config::from_defaults_and(email)?;
    let channel = EmailChannel::Transport(Arc::new(EmailTransport::from_config(&config)?));
    App::new(config, db.clone(), Clock::System, channel).await
}

fn sent(app: &App) -> u64 {
    app.metrics
        .sends
        .with_label_values(&[app.email.name(), "sent"])
        .get()
}

async fn wait_sent(app: &App, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while sent(app) < n {
        anyhow::ensure!(Instant::now() < deadline, "only {} of {n} sent", sent(app));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// `n` notifications of one restock, planned beforehand, sent through `email` (a
/// configuration section): the dispatch worker's time to send them all.
async fn restock_dispatch(db: &str, email: &str, n: u64) -> anyhow::Result<Duration> {
    let b = fresh_db(db).await?;
    let (store, product, variant) = seed_store(&b.db, "email").await?;
    b.db.bench_seed_waiting_list(store, product, variant, n)
        .await?;
    let app = app_with(&b.db, email).await?;
    restock(&app, store).await?;
    crate::planning::plan_due(&app).await?;
    let stop = CancellationToken::new();
    let start = Instant::now();
    let worker = tokio::spawn(crate::dispatch::run_worker(app.clone(), stop.clone()));
    wait_sent(&app, n).await?;
    let took = start.elapsed();
    stop.cancel();
    worker.await?;
    b.drop_schema().await?;
    Ok(took)
}

fn smtp_to(port: u16) -> String {
    format!("[email]\ntransport = \"smtp\"\n[email.smtp]\nport = {port}\n")
}

/// A restock of `n` waiting, with the planner and the dispatch worker running: from
/// the stock update to the last message accepted by the relay.
async fn restock_end_to_end(db: &str, port: u16, n: u64) -> anyhow::Result<Duration> {
    let b = fresh_db(db).await?;
    let (store, product, variant) = seed_store(&b.db, "small").await?;
    b.db.bench_seed_waiting_list(store, product, variant, n)
        .await?;
    let app = app_with(&b.db, &smtp_to(port)).await?;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(crate::dispatch::run_worker(app.clone(), stop.clone()));
    let planner = tokio::spawn(crate::planning::run_worker(app.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    restock(&app, store).await?;
    wait_sent(&app, n).await?;
    let took = start.elapsed();
    stop.cancel();
    worker.await?;
    planner.await?;
    b.drop_schema().await?;
    Ok(took)
}

/// The plain loop: each message written to a new file, fsynced, renamed.
fn write_fsync_rename(dir: &Path, message: &[u8], n: u64) -> anyhow::Result<Duration> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let start = Instant::now();
    for i in 0..n {
        let partial = dir.join(format!("{i}.eml.partial"));
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(message)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&partial, dir.join(format!("{i}.eml")))?;
    }
    Ok(start.elapsed())
}

/// A scratch directory removed on drop.
fn tempfile_dir() -> anyhow::Result<super::tempfile_dir::TempDir> {
    let dir = std::env::temp_dir().join(format!(
        "restock-bench-email-{}",
        crate::util::random_token(6)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(super::tempfile_dir::TempDir(dir))
}
