//! The middleware every request passes through, from tower-http where it has one:
//!
//! - a request id (`x-request-id`, taken from the client or made up) recorded in the
//!   request's log span and returned on the answer;
//! - a log span per request naming the matched route, never the raw path, so tokens
//!   in `/t/…` links and other path values stay out of the logs;
//! - gzip for answers over 2 KiB when the client accepts it (large JSON lists);
//! - one JSON error contract: every answer of 400 or more that a handler did not
//!   produce as JSON (router 404/405, body limits, timeouts) is rewritten to
//!   `{"code", "message", "detail"}`; over-long URLs get `414 uri_too_long`;
//! - a panic becomes `500 internal` (logged), never a dropped connection;
//! - a request timeout (`408 request_timeout`); CSV imports, which stream long
//!   bodies, have their own.
//!
//! Body limits are per route group (see [`super::router`]).

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::error::{ErrorCode, code_for_status, error_response};
use crate::config::HttpConfig;

/// Answers above this size are compressed when the client accepts gzip.
pub const COMPRESS_ABOVE_BYTES: u64 = 2048;

/// Wraps `router` (routes and fallbacks already set) in the common layers.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    config: &HttpConfig,
) -> Router<S> {
    let max_uri = config.max_uri_bytes;
    router
        .layer(axum::middleware::from_fn_with_state(
            Timeouts {
                request: Duration::from_secs(config.request_timeout_secs),
                import: Duration::from_secs(config.import_timeout_secs),
            },
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_answer))
        .layer(axum::middleware::from_fn_with_state(max_uri, json_errors))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .compress_when(SizeAbove::new(COMPRESS_ABOVE_BYTES).and(NotForContentType::IMAGES)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// How long a request may take: CSV imports stream large bodies and get their own
/// limit (their handler still refuses a body that stops coming).
#[derive(Clone, Copy)]
struct Timeouts {
    request: Duration,
    import: Duration,
}

async fn timeout(State(t): State<Timeouts>, req: Request, next: Next) -> Response {
    let limit = if req.uri().path().starts_with("/v1/imports/") {
        t.import
    } else {
        t.request
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => error_response(
            ErrorCode::RequestTimeout,
            "the request took too long".into(),
        ),
    }
}

fn request_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| redact_path(req.uri().path()));
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %req.method(), route = %route, request_id = %request_id, store = tracing::field::Empty)
}

/// A raw path fit for a log line: signed-link tokens replaced, and cut short.
pub fn redact_path(path: &str) -> String {
    let mut out = String::new();
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg);
        if out.len() > 120 {
            out.truncate(120);
            out.push('…');
            return out;
        }
        // /t/c/<token>, /t/u/<token>: keep the kind, drop the token.
        if (out == "/t/c" || out == "/t/u") && path.len() > out.len() {
            out.push_str("/…");
            return out;
        }
    }
    out
}

fn panic_answer(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(ErrorCode::Internal, "internal error".into())
}

async fn json_errors(State(max_uri): State<usize>, req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > max_uri {
        return error_response(
            ErrorCode::UriTooLong,
            format!("the URL is {uri_len} bytes; at most {max_uri} are accepted"),
        );
    }
    if let Some(pq) = req.uri().path_and_query()
        && has_encoded_control(pq.as_str())
    {
        // Ids and keys in paths and queries are text the databases look up; a NUL
        // is refused by PostgreSQL and stored by SQLite, so refuse it here for both.
        let code = if has_encoded_control(pq.path()) {
            ErrorCode::InvalidPath
        } else {
            ErrorCode::InvalidQuery
        };
        return error_response(code, "the URL contains an encoded control character".into());
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if status.as_u16() < 400 || is_json(&resp) {
        return resp;
    }
    let code = code_for_status(status);
    let message = match code {
        ErrorCode::NotFound => "no such route".to_string(),
        ErrorCode::MethodNotAllowed => "this route does not answer this method".to_string(),
        ErrorCode::PayloadTooLarge => "the body is larger than this route accepts".to_string(),
        ErrorCode::RequestTimeout => "the request took too long".to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let (mut parts, _) = resp.into_parts();
    let fresh = error_response(code, message);
    parts.status = fresh.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (k, v) in fresh.headers() {
        if k == header::RETRY_AFTER {
            parts.headers.insert(k, v.clone());
        }
    }
    Response::from_parts(parts, fresh.into_body())
}

/// Whether `s` percent-encodes a control character (%00-%1F, %7F).
fn has_encoded_control(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()),
                (b'0' | b'1', b'0'..=b'9' | b'A'..=b'F') | (b'7', b'F')
            )
    })
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The router's fallback for unknown routes.
pub async fn not_found() -> Response {
    error_response(ErrorCode::NotFound, "no such route".into())
}

/// The router's fallback for a known route called with another method.
pub async fn method_not_allowed() -> Response {
    error_response(
        ErrorCode::MethodNotAllowed,
        "this route does not answer this method".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    /// An empty-bodied error, as a layer below the handlers would produce.
    fn bare(status: StatusCode) -> Response {
        (status, Body::empty()).into_response()
    }

    fn config() -> HttpConfig {
        HttpConfig {
            header_read_timeout_secs: 10,
            request_timeout_secs: 1,
            max_connections: 10,
            max_uri_bytes: 64,
            client_ip_header: String::new(),
            auth_failures_per_minute: 20,
            import_max_bytes: 1024,
            import_timeout_secs: 1,
        }
    }

    async fn call(router: Router, uri: &str) -> (StatusCode, serde_json::Value, Option<String>) {
        let resp = router
            .oneshot(
                Request::builder()
                    .uri(uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let status = resp.status();
        let id = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ascii").to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_default(),
            id,
        )
    }

    /// The layers production uses turn a panic, a timeout and a bare error status
    /// into the JSON contract, each with a request id.
    #[tokio::test]
    async fn panics_timeouts_and_bare_errors_answer_json() {
        #[allow(clippy::unreachable)]
        async fn panics() -> &'static str {
            panic!("handler bug")
        }
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }
        let router = apply(
            Router::new()
                .route("/panic", get(panics))
                .route("/slow", get(slow))
                .route(
                    "/teapot",
                    get(|| async { bare(StatusCode::PAYLOAD_TOO_LARGE) }),
                )
                .fallback(not_found),
            &config(),
        );
        for (uri, status, code) in [
            ("/panic", 500, "internal"),
            ("/slow", 408, "request_timeout"),
            ("/teapot", 413, "payload_too_large"),
            ("/nowhere", 404, "not_found"),
            (&format!("/x?{}", "a".repeat(100)), 414, "uri_too_long"),
            ("/v1/products/a%00b", 400, "invalid_path"),
            ("/v1/products?after=%1f", 400, "invalid_query"),
        ] {
            let (got, body, id) = call(router.clone(), uri).await;
            assert_eq!(got.as_u16(), status, "{uri}: {body}");
            assert_eq!(body["code"], code, "{uri}: {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            assert!(id.is_some_and(|i| i.len() >= 32), "{uri}: no request id");
        }
    }

    #[test]
    fn tokens_never_reach_a_log_path() {
        assert_eq!(redact_path("/t/c/123.abcDEF"), "/t/c/…");
        assert_eq!(redact_path("/t/u/9.x"), "/t/u/…");
        assert_eq!(redact_path("/v1/store"), "/v1/store");
        assert!(redact_path(&"/a".repeat(200)).len() < 130);
    }
}
