//! CSV imports of the catalog, stock and sign-ups (`restock import` and
//! `POST /v1/imports/{kind}`), read incrementally: the caller feeds the file or the
//! request body in chunks of any size, records are parsed as their bytes arrive, and
//! lines are applied in batches of [`BATCH_LINES`], so a file of any length is never
//! held in memory.
//!
//! Each kind's lines go through the write path its API uses, not a copy of it: stock
//! lines become the stock API's items and go through [`super::apply`] as the built-in
//! `csv` source (so the store's `csv` profile decides about unknown SKUs, negative
//! quantities and duplicates); catalog lines go through
//! [`crate::http::catalog::save_product`]; sign-up lines through
//! [`crate::http::subscriptions::sign_up`]. A line that is refused is kept as a dead
//! letter of the `csv` source, with its line number, the raw line and the fields as
//! read, and can be replayed once its cause is fixed.

use std::collections::BTreeMap;

use restock_core::ids::StoreId;
use restock_core::stock::StockUpdate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::StockItem;
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::http::catalog::{ProductBody, VariantBody};
use crate::http::error::{ApiError, ApiResult};
use crate::http::subscriptions::CreateSubscription;
use crate::storage::rejections::{NewRejection, RejectionRow};

/// The source name every import's stock and dead letters are recorded under.
pub const SOURCE: &str = "csv";
/// Lines applied together: one stock batch (one delivery, for the profile's duplicate
/// rule), and how often progress is reported.
pub const BATCH_LINES: usize = 1000;
/// The longest record accepted. A longer one is almost always an unclosed quote
/// swallowing the rest of the file; stopping bounds the memory one import can take.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Errors an API answer lists at most (the total is always counted).
pub const API_ERROR_CAP: usize = 1000;

/// What an import carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportKind {
    /// Products and variants, one line per variant.
    Catalog,
    /// Stock levels, one line per SKU and location.
    Stock,
    /// Shoppers' sign-ups, one line per sign-up.
    Signups,
}

impl ImportKind {
    pub fn parse(s: &str) -> Option<ImportKind> {
        match s {
            "catalog" => Some(ImportKind::Catalog),
            "stock" => Some(ImportKind::Stock),
            "signups" => Some(ImportKind::Signups),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImportKind::Catalog => "catalog",
            ImportKind::Stock => "stock",
            ImportKind::Signups => "signups",
        }
    }

    /// The columns a file of this kind may have, and whether each is required.
    pub fn columns(self) -> &'static [(&'static str, bool)] {
        match self {
            ImportKind::Stock => &[
                ("sku", true),
                ("available", true),
                ("location", false),
                ("reserved", false),
                ("incoming", false),
                ("incoming_at", false),
                ("available_until", false),
                ("observed_at", false),
                ("sequence", false),
            ],
            ImportKind::Catalog => &[
                ("product_id", true),
                ("title", true),
                ("url", true),
                ("price", true),
                ("currency", true),
                ("description", false),
                ("image_url", false),
                ("category", false),
                ("min_stock", false),
                ("notify_threshold", false),
                ("sku", false),
                ("variant_title", false),
                ("options", false),
                ("variant_price", false),
                ("variant_image_url", false),
                ("variant_url", false),
                ("variant_min_stock", false),
                ("variant_notify_threshold", false),
                ("inventory_item_id", false),
                ("inventory_policy", false),
            ],
            ImportKind::Signups => &[
                ("email", true),
                ("sku", false),
                ("product", false),
                ("market", false),
                ("time_zone", false),
                ("consent_text", false),
            ],
        }
    }
}

/// One refused line.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LineError {
    /// Line of the file the record starts on (the header is line 1).
    pub line: u64,
    /// The column at fault, when one is.
    pub column: Option<String>,
    /// The reason code (the API's error codes; `invalid_line` for a line that cannot
    /// be read).
    pub code: String,
    pub reason: String,
    /// The dead letter keeping the line (`GET /v1/rejections`, source `csv`).
    pub rejection_id: Option<i64>,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportSummary {
    pub kind: ImportKind,
    /// Lines read, the header not counted.
    pub read: u64,
    /// Lines applied (for sign-ups, merged into a waiting sign-up counts too).
    pub applied: u64,
    /// Stock lines older than what is recorded: ignored.
    pub stale: u64,
    /// Lines refused, each kept as a dead letter.
    pub rejected: u64,
    /// Restocks the stock lines caused (their alerts are planned).
    pub restocks: u64,
    /// Batches applied.
    pub batches: u64,
    /// The refused lines in file order; an API answer lists the first 1,000.
    pub errors: Vec<LineError>,
    /// More lines were refused than `errors` lists.
    pub errors_truncated: bool,
}

/// The dead letter of a refused line: enough to read it and to apply it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LinePayload {
    import: ImportKind,
    line: u64,
    raw: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fields: Option<BTreeMap<String, String>>,
}

/// A record read, before it is applied.
struct Line {
    number: u64,
    raw: String,
    /// The fields by column (empty cells left out), or why the line cannot be read.
    fields: Result<BTreeMap<String, String>, (ErrorCode, String)>,
}

/// A line's failure: column, code, reason.
type Refusal = (Option<String>, String, String);

/// An import in progress: feed it chunks, then finish it.
pub struct Import {
    app: App,
    store: StoreId,
    kind: ImportKind,
    reader: csv_core::Reader,
    out: Vec<u8>,
    out_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    raw: Vec<u8>,
    lines_before: u64,
    /// Bytes held back until it is known whether the file starts with a BOM.
    head: Option<Vec<u8>>,
    header: Option<Vec<String>>,
    pending: Vec<Line>,
    summary: ImportSummary,
    error_cap: usize,
}

fn invalid_csv(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidCsv, message)
}

impl Import {
    /// An import into `store`, keeping at most `error_cap` line errors in the summary
    /// (the CLI takes them as they come with [`Import::take_errors`]).
    pub fn new(app: App, store: StoreId, kind: ImportKind, error_cap: usize) -> Import {
        Import {
            app,
            store,
            kind,
            reader: csv_core::Reader::new(),
            out: vec![0; 4096],
            out_len: 0,
            ends: vec![0; 64],
            ends_len: 0,
            raw: Vec::new(),
            lines_before: 0,
            head: Some(Vec::new()),
            header: None,
            pending: Vec::new(),
            summary: ImportSummary {
                kind,
                read: 0,
                applied: 0,
                stale: 0,
                rejected: 0,
                restocks: 0,
                batches: 0,
                errors: Vec::new(),
                errors_truncated: false,
            },
            error_cap,
        }
    }

    /// The counts so far.
    pub fn summary(&self) -> &ImportSummary {
        &self.summary
    }

    /// The line errors kept since the last call.
    pub fn take_errors(&mut self) -> Vec<LineError> {
        std::mem::take(&mut self.summary.errors)
    }

    /// Reads `chunk` (any length, cut anywhere) and applies every full batch.
    pub async fn feed(&mut self, chunk: &[u8]) -> ApiResult<()> {
        let held;
        let mut input = match &mut self.head {
            Some(head) => {
                head.extend_from_slice(chunk);
                if head.len() < 3 {
                    return Ok(());
                }
                held = self.head.take().unwrap_or_default();
                held.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&held)
            }
            None => chunk,
        };
        while !input.is_empty() {
            let n = self.read(input)?;
            input = &input[n..];
            if self.pending.len() >= BATCH_LINES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Reads the end of the input, applies what is left and answers the summary.
    pub async fn finish(mut self) -> ApiResult<ImportSummary> {
        if let Some(head) = self.head.take() {
            let mut input = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head);
            while !input.is_empty() {
                let n = self.read(input)?;
                input = &input[n..];
                if self.pending.len() >= BATCH_LINES {
                    self.flush().await?;
                }
            }
        }
        self.read(&[])?;
        if self.header.is_none() {
            return Err(invalid_csv(
                "the file is empty: a header row naming the columns is required".into(),
            ));
        }
        self.flush().await?;
        Ok(self.summary)
    }

    /// Parses records from `input` (empty input: the end of the file) until it is
    /// used up or a batch is full; answers how many bytes it took.
    fn read(&mut self, mut input: &[u8]) -> ApiResult<usize> {
        use csv_core::ReadRecordResult as R;
        let given = input.len();
        let at_end = input.is_empty();
        loop {
            let (res, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            self.raw.extend_from_slice(&input[..nin]);
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                R::InputEmpty => {
                    if self.raw.len() > MAX_RECORD_BYTES {
                        return Err(self.too_long());
                    }
                    if !at_end {
                        return Ok(given - input.len());
                    }
                }
                R::OutputFull => {
                    if self.out.len() > MAX_RECORD_BYTES {
                        return Err(self.too_long());
                    }
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                R::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                R::Record => {
                    self.record()?;
                    if self.pending.len() >= BATCH_LINES && !at_end {
                        return Ok(given - input.len());
                    }
                }
                R::End => return Ok(given - input.len()),
            }
        }
    }

    fn too_long(&self) -> ApiError {
        invalid_csv(format!(
            "line {}: a record longer than {MAX_RECORD_BYTES} bytes (an unclosed quote?); the lines before it were applied",
            self.lines_before + 1
        ))
    }

    /// Takes the record just read.
    fn record(&mut self) -> ApiResult<()> {
        let raw = std::mem::take(&mut self.raw);
        let leading = raw
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .filter(|b| **b == b'\n')
            .count() as u64;
        let number = self.lines_before + leading + 1;
        self.lines_before += raw.iter().filter(|b| **b == b'\n').count() as u64;
        let text = String::from_utf8_lossy(&raw)
            .trim_matches(['\r', '\n'])
            .replace('\0', "\u{FFFD}");
        let mut fields = Vec::with_capacity(self.ends_len);
        let mut bad = None;
        if raw.contains(&0) {
            bad = Some("the line contains a NUL byte".to_string());
        }
        let mut start = 0;
        for &end in &self.ends[..self.ends_len] {
            match std::str::from_utf8(&self.out[start..end]) {
                Ok(s) => fields.push(s.to_string()),
                Err(_) => {
                    bad.get_or_insert_with(|| "the line is not UTF-8 text".to_string());
                }
            }
            start = end;
        }
        self.out_len = 0;
        self.ends_len = 0;
        let Some(header) = &self.header else {
            if let Some(reason) = bad {
                return Err(invalid_csv(format!("the header row: {reason}")));
            }
            self.header = Some(self.check_header(fields)?);
            return Ok(());
        };
        self.summary.read += 1;
        let fields = match bad {
            Some(reason) => Err((ErrorCode::InvalidLine, reason)),
            None if fields.len() != header.len() => Err((
                ErrorCode::InvalidLine,
                format!(
                    "the line has {} field(s); the header names {} column(s)",
                    fields.len(),
                    header.len()
                ),
            )),
            None => Ok(header
                .iter()
                .zip(fields)
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(k, v)| (k.clone(), v))
                .collect()),
        };
        self.pending.push(Line {
            number,
            raw: text,
            fields,
        });
        Ok(())
    }

    /// The header's column names, checked against the kind's columns.
    fn check_header(&self, names: Vec<String>) -> ApiResult<Vec<String>> {
        let columns = self.kind.columns();
        let allowed = || {
            columns
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let names: Vec<String> = names
            .into_iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !columns.iter().any(|(c, _)| c == n))
            .map(|n| format!("{n:?}"))
            .collect();
        if !unknown.is_empty() {
            return Err(invalid_csv(format!(
                "unknown column(s) in the header: {}; a {} file has the columns {}",
                unknown.join(", "),
                self.kind.as_str(),
                allowed()
            )));
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(invalid_csv(format!(
                    "the header names the column {n} twice"
                )));
            }
        }
        let missing: Vec<&str> = columns
            .iter()
            .filter(|(c, required)| *required && !names.iter().any(|n| n == c))
            .map(|(c, _)| *c)
            .collect();
        if !missing.is_empty() {
            return Err(invalid_csv(format!(
                "the header lacks the required column(s) {}; a {} file has the columns {}",
                missing.join(", "),
                self.kind.as_str(),
                allowed()
            )));
        }
        Ok(names)
    }

    /// Applies the lines read so far.
    async fn flush(&mut self) -> ApiResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.pending);
        // Stock and catalog lines are a source's delivery: logged as they came.
        let logged = (self.kind != ImportKind::Signups).then(|| {
            let first = lines.first().map_or(0, |l| l.number);
            let last = lines.last().map_or(0, |l| l.number);
            let raw: Vec<&str> = lines.iter().map(|l| l.raw.as_str()).collect();
            (
                super::Received {
                    format: "csv",
                    payload: raw.join("\n"),
                    cursor: Some(format!("{} lines {first}-{last}", self.kind.as_str())),
                },
                (
                    self.summary.applied,
                    self.summary.stale,
                    self.summary.rejected,
                ),
            )
        });
        match self.kind {
            ImportKind::Stock => self.apply_stock(lines).await?,
            ImportKind::Catalog | ImportKind::Signups => {
                for line in lines {
                    match apply_line(&self.app, self.store, self.kind, line.fields.clone()).await? {
                        Ok(()) => self.summary.applied += 1,
                        Err((column, code, reason)) => {
                            let r = self.dead_letter(&line, &code, &reason);
                            let id = self.app.db.insert_rejection(&r, self.app.now()).await?;
                            self.count_reject(&code);
                            self.refused(line.number, column, code, reason, Some(id.0));
                        }
                    }
                }
            }
        }
        if let Some((received, (applied, stale, rejected))) = logged {
            let outcome = serde_json::json!({
                "applied": self.summary.applied - applied,
                "stale": self.summary.stale - stale,
                "rejected": self.summary.rejected - rejected,
            });
            super::log_delivery(&self.app, self.store, SOURCE, &received, outcome).await;
        }
        self.summary.batches += 1;
        Ok(())
    }

    async fn apply_stock(&mut self, lines: Vec<Line>) -> ApiResult<()> {
        let received = self.app.now();
        let mut updates: Vec<StockUpdate> = Vec::with_capacity(lines.len());
        let mut update_lines: Vec<u64> = Vec::with_capacity(lines.len());
        let mut failed: Vec<(u64, Option<String>, String, NewRejection)> = Vec::new();
        for line in &lines {
            let parsed = match &line.fields {
                Err((code, reason)) => Err((None, *code, reason.clone())),
                Ok(f) => stock_update(f, received),
            };
            match parsed {
                Ok(u) => {
                    updates.push(u);
                    update_lines.push(line.number);
                }
                Err((column, code, reason)) => {
                    let column = column.or_else(|| column_named(self.kind, &reason));
                    let r = self.dead_letter(line, code.as_str(), &reason);
                    failed.push((line.number, column, reason, r));
                }
            }
        }
        let parse: Vec<NewRejection> = failed.iter().map(|(_, _, _, r)| r.clone()).collect();
        let out = super::apply(&self.app, self.store, SOURCE, &updates, &parse).await?;
        self.summary.applied += out.applied;
        self.summary.stale += out.stale;
        self.summary.restocks += out.restocks.len() as u64;
        let (unknown_ids, rest) = out.rejection_ids.split_at(out.unknown_sku.len());
        let mut errors: Vec<LineError> = Vec::new();
        for ((line, column, reason, r), id) in failed.into_iter().zip(rest) {
            errors.push(LineError {
                line,
                column,
                code: r.reason_code,
                reason,
                rejection_id: Some(*id),
            });
        }
        for (i, id) in out.unknown_sku.iter().zip(unknown_ids) {
            errors.push(LineError {
                line: update_lines[*i],
                column: Some("sku".into()),
                code: ErrorCode::UnknownSku.as_str().into(),
                reason: format!(
                    "no variant with SKU {:?} in this store (kept as the csv source's profile says)",
                    updates[*i].sku.as_str()
                ),
                rejection_id: Some(*id),
            });
        }
        for (i, r, id) in out.refused {
            let column = match r.reason_code.as_str() {
                "negative_quantity" => Some("available".to_string()),
                _ => Some("sku".to_string()),
            };
            errors.push(LineError {
                line: update_lines[i],
                column,
                code: r.reason_code,
                reason: r.reason,
                rejection_id: Some(id),
            });
        }
        errors.sort_by_key(|e| e.line);
        // Intake kept these in the stock API's item shape (which is what parks and
        // replays them); their reason names the line they came from.
        let raw_of: std::collections::HashMap<u64, &str> =
            lines.iter().map(|l| (l.number, l.raw.as_str())).collect();
        for e in errors.iter().filter(|e| {
            matches!(
                e.code.as_str(),
                "unknown_sku" | "duplicate_line" | "negative_quantity"
            )
        }) {
            let Some(id) = e.rejection_id else { continue };
            let raw: String = raw_of
                .get(&e.line)
                .copied()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            self.app
                .db
                .set_rejection_reason(
                    restock_core::ids::RejectionId(id),
                    &format!("line {} ({raw}): {}", e.line, e.reason),
                )
                .await?;
        }
        for e in errors {
            self.refused(e.line, e.column, e.code, e.reason, e.rejection_id);
        }
        Ok(())
    }

    fn dead_letter(&self, line: &Line, code: &str, reason: &str) -> NewRejection {
        let payload = LinePayload {
            import: self.kind,
            line: line.number,
            raw: line.raw.clone(),
            fields: line.fields.as_ref().ok().cloned(),
        };
        NewRejection {
            store: Some(self.store),
            source: SOURCE.into(),
            reason_code: code.into(),
            reason: format!("line {}: {reason}", line.number),
            payload: serde_json::to_string(&payload).unwrap_or_default(),
        }
    }

    fn count_reject(&self, code: &str) {
        self.app
            .metrics
            .intake_rejects
            .with_label_values(&[SOURCE, code])
            .inc();
    }

    fn refused(
        &mut self,
        line: u64,
        column: Option<String>,
        code: String,
        reason: String,
        rejection_id: Option<i64>,
    ) {
        self.summary.rejected += 1;
        if self.summary.errors.len() < self.error_cap {
            self.summary.errors.push(LineError {
                line,
                column,
                code,
                reason,
                rejection_id,
            });
        } else {
            self.summary.errors_truncated = true;
        }
    }
}

/// The column a reason names first (reasons start with the field at fault).
fn column_named(kind: ImportKind, reason: &str) -> Option<String> {
    let first = reason
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| !w.is_empty())?;
    kind.columns()
        .iter()
        .find(|(c, _)| *c == first)
        .map(|(c, _)| c.to_string())
}

fn int(fields: &BTreeMap<String, String>, column: &str) -> Result<Option<i64>, Refusal> {
    fields
        .get(column)
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                (
                    Some(column.to_string()),
                    ErrorCode::InvalidValue.as_str().to_string(),
                    format!("{column} is not a whole number: {v:?}"),
                )
            })
        })
        .transpose()
}

fn text(fields: &BTreeMap<String, String>, column: &str) -> Option<String> {
    fields.get(column).map(|v| v.trim().to_string())
}

/// A stock line as the stock API's item, parsed by the API's own check.
fn stock_update(
    f: &BTreeMap<String, String>,
    received_at: i64,
) -> Result<StockUpdate, (Option<String>, ErrorCode, String)> {
    let int = |column: &str| {
        int(f, column).map_err(|(c, _, reason)| (c, ErrorCode::InvalidQuantity, reason))
    };
    let item = StockItem {
        sku: f.get("sku").cloned().unwrap_or_default(),
        location: text(f, "location"),
        available: int("available")?.unwrap_or_default(),
        reserved: int("reserved")?,
        incoming: int("incoming")?,
        incoming_at: text(f, "incoming_at"),
        available_until: text(f, "available_until"),
        observed_at: text(f, "observed_at"),
        sequence: int("sequence")?,
    };
    item.parse(received_at).map_err(|(code, reason)| {
        let column = match code {
            ErrorCode::InvalidSku => Some("sku".to_string()),
            ErrorCode::InvalidLocation => Some("location".to_string()),
            _ => None,
        };
        (column, code, reason)
    })
}

/// A catalog line as the product API's body: the product with the line's variant.
fn product_body(f: &BTreeMap<String, String>) -> Result<(String, ProductBody), Refusal> {
    let options = match f.get("options") {
        None => BTreeMap::new(),
        Some(s) => {
            let mut options = BTreeMap::new();
            for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((name, value)) = pair.split_once('=') else {
                    return Err((
                        Some("options".into()),
                        ErrorCode::InvalidValue.as_str().into(),
                        format!("options must be name=value pairs separated by ';': {pair:?}"),
                    ));
                };
                options.insert(name.trim().to_string(), value.trim().to_string());
            }
            options
        }
    };
    let variants = match f.get("sku") {
        None => Vec::new(),
        Some(sku) => vec![VariantBody {
            sku: sku.clone(),
            title: text(f, "variant_title").unwrap_or_default(),
            options,
            price: int(f, "variant_price")?,
            image_url: text(f, "variant_image_url"),
            url: text(f, "variant_url"),
            min_stock: int(f, "variant_min_stock")?,
            notify_threshold: int(f, "variant_notify_threshold")?,
            inventory_item_id: text(f, "inventory_item_id"),
            inventory_policy: text(f, "inventory_policy"),
        }],
    };
    let body = ProductBody {
        title: f.get("title").cloned().unwrap_or_default(),
        description: f.get("description").cloned().unwrap_or_default(),
        image_url: text(f, "image_url"),
        url: text(f, "url").unwrap_or_default(),
        category: text(f, "category"),
        price: int(f, "price")?.unwrap_or_default(),
        currency: text(f, "currency").unwrap_or_default(),
        min_stock: int(f, "min_stock")?,
        notify_threshold: int(f, "notify_threshold")?,
        release: None,
        variants,
    };
    Ok((f.get("product_id").cloned().unwrap_or_default(), body))
}

/// Applies one catalog or sign-up line through its API's write path: `Ok(Err(..))`
/// is the line's refusal; `Err` a failure of the server (the import stops).
async fn apply_line(
    app: &App,
    store: StoreId,
    kind: ImportKind,
    fields: Result<BTreeMap<String, String>, (ErrorCode, String)>,
) -> ApiResult<Result<(), Refusal>> {
    let fields = match fields {
        Ok(f) => f,
        Err((code, reason)) => return Ok(Err((None, code.as_str().into(), reason))),
    };
    let result = match kind {
        ImportKind::Catalog => {
            let (id, mut body) = match product_body(&fields) {
                Ok(b) => b,
                Err(refusal) => return Ok(Err(refusal)),
            };
            // The file has no release column: a product's release policy set through
            // the API is kept, not cleared.
            if let Some(existing) = app.db.product(store, &id).await? {
                body.release = existing
                    .product
                    .release_policy
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok());
            }
            crate::http::catalog::save_product(app, store, &id, body).await
        }
        ImportKind::Signups => {
            let req = CreateSubscription {
                email: fields.get("email").cloned().unwrap_or_default(),
                sku: text(&fields, "sku"),
                product: text(&fields, "product"),
                market: text(&fields, "market"),
                time_zone: text(&fields, "time_zone"),
                source: Some("import".into()),
                consent_text: fields.get("consent_text").cloned(),
                ip: None,
                user_agent: None,
            };
            crate::http::subscriptions::sign_up(app, store, req, false)
                .await
                .map(|_| ())
        }
        // Stock lines are applied in batches (`Import::apply_stock`) and replayed by
        // `apply_stock_replay`, never one by one here.
        ImportKind::Stock => Err(ApiError::internal(anyhow::anyhow!(
            "stock lines are applied in batches"
        ))),
    };
    match result {
        Ok(()) => Ok(Ok(())),
        Err(e) if matches!(e.code, ErrorCode::Internal | ErrorCode::DatabaseUnavailable) => Err(e),
        Err(e) => {
            let column = column_named(kind, &e.message).or_else(|| match e.code {
                ErrorCode::InvalidEmail | ErrorCode::AddressSuppressed => Some("email".into()),
                ErrorCode::ConfirmationRequired => Some("email".into()),
                ErrorCode::InvalidSku | ErrorCode::UnknownSku | ErrorCode::SkuTaken => {
                    Some("sku".into())
                }
                ErrorCode::UnknownProduct => Some("product".into()),
                ErrorCode::InvalidMarket | ErrorCode::UnknownMarket => Some("market".into()),
                ErrorCode::InvalidTimeZone => Some("time_zone".into()),
                _ => None,
            });
            Ok(Err((column, e.code.as_str().into(), e.message)))
        }
    }
}

/// Replays a dead letter of the `csv` source: a refused line is read again from its
/// fields and applied through its kind's write path; stock kept in the stock API's
/// item shape (an unknown SKU, a profile refusal) is applied as the `csv` source.
/// Answers the result ("applied", "stale", "rejected") and a detail.
pub async fn replay(app: &App, store: StoreId, row: &RejectionRow) -> ApiResult<(String, String)> {
    let rejected = |detail: String| Ok(("rejected".to_string(), detail));
    if let Ok(p) = serde_json::from_str::<LinePayload>(&row.payload) {
        let Some(fields) = p.fields else {
            return rejected(format!("line {} could not be read: {}", p.line, row.reason));
        };
        if p.import != ImportKind::Stock {
            // Boxed: a catalog line's write replays parked dead letters, which can
            // lead back here.
            return Ok(
                match Box::pin(apply_line(app, store, p.import, Ok(fields))).await? {
                    Ok(()) => ("applied".into(), format!("line {} applied", p.line)),
                    Err((_, code, reason)) => ("rejected".into(), format!("{code}: {reason}")),
                },
            );
        }
        return match stock_update(&fields, row.received_at) {
            Err((_, code, reason)) => rejected(format!("{code}: {reason}")),
            Ok(u) => apply_stock_replay(app, store, u).await,
        };
    }
    let item: StockItem = serde_json::from_str(&row.payload)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored payload is not JSON: {e}")))?;
    match item.parse(row.received_at) {
        Err((code, reason)) => rejected(format!("{code}: {reason}")),
        Ok(u) => apply_stock_replay(app, store, u).await,
    }
}

async fn apply_stock_replay(
    app: &App,
    store: StoreId,
    u: StockUpdate,
) -> ApiResult<(String, String)> {
    let profile = super::source::profile_of(app, store, SOURCE).await;
    // A still-unknown SKU would file a new dead letter: check first, so a replay
    // never multiplies them.
    if profile.unknown_sku != super::source::UnknownSku::Placeholder
        && app
            .db
            .variant_by_sku(store, u.sku.as_str())
            .await?
            .is_none()
    {
        return Ok((
            "rejected".into(),
            format!("no variant with SKU {:?} in this store", u.sku.as_str()),
        ));
    }
    let out = super::apply(app, store, SOURCE, &[u], &[]).await?;
    Ok(if !out.rejection_ids.is_empty() {
        (
            "rejected".into(),
            "refused again by the csv source's profile".into(),
        )
    } else if out.applied > 0 {
        (
            "applied".into(),
            format!("{} restock(s)", out.restocks.len()),
        )
    } else {
        ("stale".into(), "newer stock is already recorded".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_named_from_reasons() {
        assert_eq!(
            column_named(ImportKind::Stock, "available is not a whole number: \"x\""),
            Some("available".into())
        );
        assert_eq!(
            column_named(ImportKind::Stock, "SKU must not be empty"),
            None
        );
    }
}
