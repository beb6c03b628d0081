//! The API contract: the OpenAPI document passes an OpenAPI 3.1 validator, every
//! operation documents every status the server can answer, and the README and the
//! OpenAPI document list every error code with its status.

use restock::error_code::ErrorCode;
use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(restock::http::openapi_document()).expect("serialises")
}

#[test]
fn the_openapi_document_passes_an_openapi_3_1_validator() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec(&document()).expect("json")).expect("write");
    // openapi-spec-validator (PyPI), installed by scripts/test.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sys; from openapi_spec_validator import validate; \
             from openapi_spec_validator.validation import OpenAPIV31SpecValidator; \
             validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator); print('valid')",
        ])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(document()["openapi"], "3.1.0");
}

#[test]
fn every_operation_documents_the_errors_the_server_can_answer() {
    let doc = document();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            operations += 1;
            let responses = op["responses"].as_object().expect("responses");
            for (status, r) in responses {
                assert!(
                    r["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status}: no description"
                );
            }
            for status in ["408", "414", "500"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: no {status}"
                );
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            if op.get("security").is_some() {
                for status in ["401", "429", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
        }
    }
    assert!(operations >= 20, "{operations}");
}

#[test]
fn readme_and_openapi_list_every_error_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    let doc = document();
    let schema = &doc["components"]["schemas"]["ErrorCode"];
    let listed: Vec<&str> = schema["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect();
    let description = schema["description"].as_str().expect("description");
    for code in ErrorCode::ALL {
        let row = format!("| `{}` | {} |", code.as_str(), code.status().as_u16());
        assert!(readme.contains(&row), "README lacks {row}");
        assert!(listed.contains(&code.as_str()), "OpenAPI enum lacks {code}");
        assert!(
            description.contains(&format!("`{}` ({})", code.as_str(), code.status().as_u16())),
            "OpenAPI description lacks {code}"
        );
    }
    assert_eq!(listed.len(), ErrorCode::ALL.len());
}
