//! The operator's commands: migrate, store create/list, notifications, and config
//! errors that name the key.

use std::process::{Command, Output};

fn restock(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_restock"));
    cmd.args(args).current_dir(dir).env(
        "RESTOCK_DATABASE__URL",
        format!("sqlite://{}/cli.db", dir.display()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run restock")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn migrate_create_store_and_keys_are_stored_hashed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = restock(dir.path(), &["migrate"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "migrations applied (sqlite)");

    let out = restock(
        dir.path(),
        &[
            "store",
            "create",
            "--name",
            "My Shop",
            "--slug",
            "my-shop",
            "--origin",
            "https://my-shop.example",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api key:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("api key printed")
        .to_string();
    assert!(key.starts_with("rk_") && key.len() > 20, "{key}");

    // Only the key's hash is stored.
    let db =
        restock::storage::Db::connect_url(&format!("sqlite://{}/cli.db", dir.path().display()), 2)
            .await
            .expect("db");
    let store = db.store_for_api_key(&key).await.expect("lookup");
    assert!(store.is_some(), "the printed key authenticates");
    let raw = std::fs::read(dir.path().join("cli.db")).expect("db file");
    let wal = std::fs::read(dir.path().join("cli.db-wal")).unwrap_or_default();
    let needle = key.as_bytes();
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(&raw) && !contains(&wal),
        "the API key must not be stored in clear"
    );
    db.close().await;

    let out = restock(dir.path(), &["store", "list"], &[]);
    assert!(
        text(&out.stdout).contains("my-shop\tMy Shop"),
        "{}",
        text(&out.stdout)
    );
    let out = restock(
        dir.path(),
        &["store", "create", "--name", "Again", "--slug", "my-shop"],
        &[],
    );
    assert!(!out.status.success(), "a taken slug is refused");
    let out = restock(
        dir.path(),
        &["store", "create", "--name", "Bad", "--slug", "Not A Slug"],
        &[],
    );
    assert!(!out.status.success());

    let out = restock(
        dir.path(),
        &["notifications", "replay", "--store", "my-shop", "999"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no notification 999"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = restock(
        dir.path(),
        &["migrate"],
        &[("RESTOCK_DISPATCH__CONCURRENCY", "lots")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .to_lowercase()
            .contains("dispatch.concurrency"),
        "{}",
        text(&out.stderr)
    );
    let out = restock(
        dir.path(),
        &["migrate"],
        &[("RESTOCK_DATABASE__URL", "mysql://nope")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("database.url"),
        "{}",
        text(&out.stderr)
    );
    let out = restock(
        dir.path(),
        &["--config", "/nonexistent/restock.toml", "migrate"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/restock.toml"),
        "{}",
        text(&out.stderr)
    );
}
