//! Makes the generated OpenAPI document a contract: every operation lists every
//! status the server's common layers can answer (not only what its handler returns),
//! every response has a description, and the error-code schema documents each code
//! with its status.

use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Content, HeaderBuilder, Object, RefOr, Schema, Type};

use super::error::ErrorCode;

pub struct Contract;

/// Statuses an operation can answer besides its own, and when.
fn common_statuses(op: &Operation, path: &str) -> Vec<u16> {
    let mut s = vec![408, 414, 500];
    if path != "/healthz" {
        s.push(503);
    }
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_params || op.request_body.is_some() {
        s.push(400);
    }
    if op.request_body.is_some() {
        s.extend([413, 415]);
    }
    if op.security.as_ref().is_some_and(|reqs| !reqs.is_empty()) {
        s.extend([401, 429]);
    }
    s
}

fn error_response(status: u16) -> Response {
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .filter(|c| c.status().as_u16() == status)
        .map(|c| format!("`{c}`"))
        .collect();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut b = ResponseBuilder::new()
        .description(format!("{reason}: {}", codes.join(", ")))
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ErrorBody",
            )))),
        );
    if matches!(status, 429 | 503) {
        b = b.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::Integer)))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    b.build()
}

fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<&mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in operations(item) {
                for status in common_statuses(op, path) {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(error_response(status)));
                }
                for (status, resp) in op.responses.responses.iter_mut() {
                    if let RefOr::T(r) = resp
                        && r.description.trim().is_empty()
                    {
                        r.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Answer")
                            .to_string();
                    }
                }
            }
        }
        let table: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("- `{c}` ({}): {}", c.status().as_u16(), c.description()))
            .collect();
        if let Some(components) = openapi.components.as_mut()
            && let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut("ErrorCode")
        {
            o.description = Some(format!(
                "Stable error codes, each with its one HTTP status:\n\n{}",
                table.join("\n")
            ));
        }
    }
}
