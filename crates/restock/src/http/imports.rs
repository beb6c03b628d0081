//! CSV imports: `POST /v1/imports/{kind}` with the file as the body. The body is read
//! as a stream, chunk by chunk, and applied in batches as it arrives (see
//! [`crate::intake::csv`]); it is never held whole.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use futures::StreamExt;

use super::auth::Merchant;
use super::error::{ApiError, ApiPath, ApiResult, ErrorBody, ErrorCode};
use crate::app::App;
use crate::intake::csv::{API_ERROR_CAP, Import, ImportKind, ImportSummary};

/// Import a CSV file of catalog lines, stock levels or sign-ups. The first row names
/// the columns (see the README); each line is checked as the matching API checks it,
/// applied in batches of 1,000 as the body streams in, or kept as a dead letter of
/// the `csv` source (`GET /v1/rejections?source=csv`) with its line number. The
/// answer counts the lines and lists the first 1,000 refused ones.
#[utoipa::path(post, path = "/v1/imports/{kind}", tag = "intake", security(("api_key" = [])),
    params(("kind" = String, Path, description = "What the file holds: catalog, stock or signups", pattern = "^(catalog|stock|signups)$")),
    request_body(content = String, content_type = "text/csv", description = "The CSV file: a header row, then one record per line (UTF-8, a BOM is ignored)"),
    responses((status = 200, body = ImportSummary), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 408, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "invalid_csv: the header row (or a record too long to be a line)")))]
pub async fn post_import(
    State(app): State<App>,
    Merchant(store): Merchant,
    ApiPath(kind): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ImportSummary>> {
    let kind = ImportKind::parse(&kind).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "no such import kind: catalog, stock or signups",
        )
    })?;
    let limit = app.config.http.import_max_bytes;
    let too_large = |what: String| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("an import takes at most {limit} bytes; {what}"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(too_large(format!(
            "this one is {len}; split the file (nothing was applied)"
        )));
    }
    let idle = Duration::from_secs(app.config.http.request_timeout_secs);
    let mut stream = body.into_data_stream();
    let mut import = Import::new(app.clone(), store, kind, API_ERROR_CAP);
    let mut received: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!(
                        "the body stopped coming for {}s after line {}; the lines before it were applied",
                        idle.as_secs(),
                        import.summary().read
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, "an import's body could not be read");
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "the body could not be read after line {}; the lines before it were applied",
                        import.summary().read
                    ),
                ));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > limit {
            return Err(too_large(format!(
                "stopped after line {}: the lines before it were applied",
                import.summary().read
            )));
        }
        import.feed(&chunk).await?;
    }
    let summary = import.finish().await?;
    tracing::info!(
        kind = kind.as_str(),
        read = summary.read,
        applied = summary.applied,
        rejected = summary.rejected,
        "CSV import"
    );
    Ok(Json(summary))
}
