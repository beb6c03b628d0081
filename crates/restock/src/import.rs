//! `restock import <catalog|stock|signups> FILE --store STORE`: the CSV import of
//! [`crate::intake::csv`] run from the command line against the configured database.
//! The file is read in chunks (never whole); progress goes to stderr (a bar on a
//! terminal, a line every 10,000 lines otherwise), each refused line to stdout as it
//! is found (and to `--report` as CSV), the summary last.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use restock_core::ids::StoreId;
use tokio::io::AsyncReadExt;

use crate::app::App;
use crate::intake::csv::{Import, ImportKind, ImportSummary, LineError};

/// Bytes read from the file at a time.
const CHUNK: usize = 64 * 1024;
/// Without a terminal, a progress line every this many lines.
const PROGRESS_EVERY: u64 = 10_000;

/// Imports `file` into `store`; answers the summary (refused lines included).
pub async fn run(
    app: &App,
    store: StoreId,
    kind: ImportKind,
    file: &Path,
    report: Option<&Path>,
) -> anyhow::Result<ImportSummary> {
    let mut input = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let size = input.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut report = match report {
        Some(path) => {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            writeln!(f, "line,column,code,reason,rejection_id")?;
            Some(f)
        }
        None => None,
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut import = Import::new(app.clone(), store, kind, usize::MAX);
    let mut buf = vec![0u8; CHUNK];
    let mut done: u64 = 0;
    let mut next_line = PROGRESS_EVERY;
    let mut out = std::io::stdout().lock();
    loop {
        let n = input
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        done += n as u64;
        import
            .feed(&buf[..n])
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
        let errors = import.take_errors();
        let s = import.summary();
        let print = |out: &mut std::io::StdoutLock<'_>| print_errors(out, &errors);
        match &bar {
            Some(bar) => {
                bar.suspend(|| print(&mut out))?;
                bar.set_position(done);
                bar.set_message(format!(
                    "{} lines: {} applied, {} rejected",
                    s.read, s.applied, s.rejected
                ));
            }
            None => {
                print(&mut out)?;
                if s.read >= next_line {
                    eprintln!(
                        "{} lines read: {} applied, {} stale, {} rejected",
                        s.read, s.applied, s.stale, s.rejected
                    );
                    next_line = (s.read / PROGRESS_EVERY + 1) * PROGRESS_EVERY;
                }
            }
        }
        if let Some(f) = &mut report {
            write_report(f, &errors)?;
        }
    }
    let mut summary = import
        .finish()
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let errors = std::mem::take(&mut summary.errors);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    print_errors(&mut out, &errors)?;
    if let Some(f) = &mut report {
        write_report(f, &errors)?;
        f.flush()?;
    }
    Ok(summary)
}

fn print_errors(out: &mut impl Write, errors: &[LineError]) -> std::io::Result<()> {
    for e in errors {
        let column = e
            .column
            .as_deref()
            .map(|c| format!(" column {c}"))
            .unwrap_or_default();
        writeln!(out, "line {}{column}: {}: {}", e.line, e.code, e.reason)?;
    }
    Ok(())
}

fn write_report(out: &mut impl Write, errors: &[LineError]) -> std::io::Result<()> {
    for e in errors {
        writeln!(
            out,
            "{},{},{},{},{}",
            e.line,
            quoted(e.column.as_deref().unwrap_or("")),
            quoted(&e.code),
            quoted(&e.reason),
            e.rejection_id.map(|i| i.to_string()).unwrap_or_default()
        )?;
    }
    Ok(())
}

/// A CSV field, quoted when it must be.
fn quoted(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
