//! The operator's commands: migrate, store create/list, notifications, and config
//! errors that name the key.

use crate::common;

use common::{Backend, TestDb};
use std::process::{Command, Output};

fn restock_at(dir: &std::path::Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_restock"));
    cmd.args(args)
        .current_dir(dir)
        .env("RESTOCK_DATABASE__URL", url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run restock")
}

fn restock(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    restock_at(
        dir,
        &format!("sqlite://{}/cli.db", dir.display()),
        args,
        env,
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

both_dbs!(
    migrate_create_store_and_keys_are_stored_hashed,
    |backend: Backend| async move {
        // An empty database for the binary to migrate.
        let t = TestDb::empty(backend).await;
        let (dir, url) = (&t.dir, t.url.clone());
        let restock = |dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]| {
            restock_at(dir, &url, args, env)
        };
        let out = restock(dir.path(), &["migrate"], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let engine = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        assert_eq!(
            text(&out.stdout).trim(),
            format!("migrations applied ({engine})")
        );
        // Migrating again is a no-op, not an error.
        let out = restock(dir.path(), &["migrate"], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));

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
        let db = &t.db;
        let store = db.store_for_api_key(&key).await.expect("lookup");
        assert!(store.is_some(), "the printed key authenticates");
        match db {
            restock::storage::Db::Sqlite(_) => {
                let raw = std::fs::read(dir.path().join("restock.db")).expect("db file");
                let wal = std::fs::read(dir.path().join("restock.db-wal")).unwrap_or_default();
                let needle = key.as_bytes();
                let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
                assert!(
                    !contains(&raw) && !contains(&wal),
                    "the API key must not be stored in clear"
                );
            }
            restock::storage::Db::Postgres(pool) => {
                let rows_containing = |needle: String| {
                    sqlx::query_scalar::<_, i64>(
                    "SELECT (SELECT count(*) FROM stores s WHERE s::text LIKE '%' || $1 || '%') \
                          + (SELECT count(*) FROM api_keys k WHERE k::text LIKE '%' || $1 || '%')",
                )
                .bind(needle)
                .fetch_one(pool)
                };
                let clear = rows_containing(key.clone()).await.expect("search rows");
                assert_eq!(clear, 0, "the API key must not be stored in clear");
                // The same search does find what is stored: the key's hash, once.
                let hashed = rows_containing(restock::util::sha256_hex(&key))
                    .await
                    .expect("search rows");
                assert_eq!(hashed, 1, "the key is stored as its hash");
            }
        }

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
        t.cleanup().await;
    }
);

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
