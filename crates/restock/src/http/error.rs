//! The API's one error type and its one list of codes.
//!
//! Every error answer is JSON: `{"code": "...", "message": "...", "detail": "..."}`.
//! `code` is one of [`ErrorCode`] and never changes meaning; `message` is for people;
//! `detail` carries the same text as `message` and is kept for clients written before
//! `message` existed. Each code has one HTTP status ([`ErrorCode::status`]); the
//! OpenAPI document and the README list them all (a test keeps them in step).
//!
//! Unexpected errors are logged with their cause chain and answered as an opaque
//! `500 internal`; a database that cannot be reached is `503 database_unavailable`
//! with `Retry-After`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::error_code::ErrorCode;

/// The code a bare status maps to, for answers produced below the handlers (router
/// fallbacks, body limits, timeouts, panics).
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyAttempts,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::DatabaseUnavailable,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidValue,
        s if s.is_client_error() => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable error code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// The same text as `message`, kept for older clients.
    #[schema(deprecated)]
    pub detail: String,
}

/// Seconds a client should wait before retrying while the database is unreachable.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no such {what}"))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidValue, message)
    }

    /// Logs the cause chain and answers an opaque 500.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        tracing::error!(error = ?e, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The JSON answer for `code`, with `Retry-After` where the code calls for one.
pub fn error_response(code: ErrorCode, message: String) -> Response {
    let mut resp = (
        code.status(),
        Json(ErrorBody {
            code,
            detail: message.clone(),
            message,
        }),
    )
        .into_response();
    if matches!(
        code,
        ErrorCode::DatabaseUnavailable | ErrorCode::NotReady | ErrorCode::TooManyAttempts
    ) && !resp.headers().contains_key(header::RETRY_AFTER)
    {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.code, self.message)
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %crate::util::ErrorChain(&e), "database unavailable");
            ApiError::new(
                ErrorCode::DatabaseUnavailable,
                "the database cannot be reached right now; retry shortly",
            )
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            _ => ErrorCode::InvalidJson,
        };
        ApiError::new(code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(ErrorCode::InvalidQuery, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(ErrorCode::InvalidPath, r.body_text())
    }
}

/// A JSON body: `axum::Json` whose rejection is an [`ApiError`], and which refuses
/// text containing U+0000 (PostgreSQL cannot store it and SQLite would, so both
/// databases refuse it alike, at the edge).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = ItemsJson::<serde::de::IgnoredAny>::body_bytes(req, state).await?;
        if has_nul_escape(&bytes) {
            return Err(ApiError::invalid("text must not contain U+0000 (NUL)"));
        }
        let mut value: serde_json::Value = axum::Json::<serde_json::Value>::from_bytes(&bytes)?.0;
        if !value.is_object() {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "the body must be a JSON object",
            ));
        }
        integral_floats_as_integers(&mut value);
        serde_json::from_value(value).map(ApiJson).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
        })
    }
}

/// JSON has one number type: `9600.0` is the integer 9600 to a client generated from
/// the OpenAPI document, so integral floats are read as integers everywhere.
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= 9_007_199_254_740_992.0
            {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// A JSON body whose items are validated one by one later (a stock batch): like
/// [`ApiJson`] but without the body-wide NUL refusal, so one bad item is rejected on
/// its own.
#[derive(Debug)]
pub struct ItemsJson<T>(pub T);

impl<T> ItemsJson<T> {
    async fn body_bytes<S: Send + Sync>(
        req: axum::extract::Request,
        state: &S,
    ) -> Result<axum::body::Bytes, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a body with content-type: application/json",
            ));
        }
        <axum::body::Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map_err(|r| {
                let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::InvalidJson
                };
                ApiError::new(code, r.body_text())
            })
    }
}

impl<T, S> axum::extract::FromRequest<S> for ItemsJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Self::body_bytes(req, state).await?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(ItemsJson(value))
    }
}

/// Whether JSON text holds a `\u0000` escape (a raw NUL is not valid JSON at all).
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000".as_slice())
            {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// `application/json` or `application/*+json`, with or without parameters.
fn is_json_media_type(value: &str) -> bool {
    let m = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
}

/// `axum::extract::Query` whose rejection is an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` whose rejection is an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nul_escapes_only() {
        assert!(has_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(
            !has_nul_escape(br#"{"a":"x\\u0000y"}"#),
            "an escaped backslash"
        );
        assert!(has_nul_escape(br#"{"a":"\\\u0000"}"#));
    }

    #[test]
    fn codes_are_unique_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert!(!c.description().is_empty(), "{c} has no description");
            assert!(c.status().is_client_error() || c.status().is_server_error());
            // The serde name (what the OpenAPI enum lists) is the code itself.
            assert_eq!(
                serde_json::to_value(c).expect("serialises"),
                serde_json::json!(c.as_str())
            );
        }
    }
}
