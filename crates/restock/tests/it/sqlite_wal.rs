//! SQLite's write-ahead log is copied back by the server's checkpointer, not by the
//! commits of sign-ups, outcomes and stock batches (which would wait for it). Only
//! SQLite has a WAL of its own to manage; on PostgreSQL there is no checkpointer.

use std::time::{Duration, Instant};

use crate::common;

use common::{Backend, TestApp, TestDb};
use restock::storage::Db;

/// Whether the database file by itself, without its WAL, holds a store with `slug`:
/// a copy of the file alone shows only what has been checkpointed into it.
async fn checkpointed(dir: &std::path::Path, slug: &str) -> bool {
    let copy = dir.join(format!("copy-{}.db", restock::util::random_token(6)));
    if std::fs::copy(dir.join("restock.db"), &copy).is_err() {
        return false;
    }
    let url = format!("sqlite://{}", copy.display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
        return false;
    };
    let found: Option<i64> = sqlx::query_scalar("SELECT COUNT(*) FROM stores WHERE slug = $1")
        .bind(slug)
        .fetch_one(&pool)
        .await
        .ok();
    pool.close().await;
    found == Some(1)
}

#[tokio::test]
async fn the_server_checkpoints_the_wal_and_commits_leave_it_to_the_checkpointer() {
    let t = TestApp::spawn(Backend::Sqlite).await;
    let Db::Sqlite(pool) = &t.db.db else {
        unreachable!("a SQLite test app")
    };
    // A committing connection checkpoints only past the backstop, far above
    // SQLite's default of 1,000 pages.
    let backstop: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(pool)
        .await
        .expect("pragma");
    assert_eq!(backstop, 10_000);

    t.create_store("walshop").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !checkpointed(t.db.dir.path(), "walshop").await {
        assert!(
            Instant::now() < deadline,
            "the store never reached the database file: nothing checkpointed the WAL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.stop().await;
}

#[tokio::test]
async fn the_checkpointer_stops_when_told_and_postgres_has_none() {
    let sqlite = TestDb::new(Backend::Sqlite).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let task = sqlite
        .db
        .start_checkpointer(stop.clone())
        .expect("a checkpointer on SQLite");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the checkpointer ends when cancelled")
        .expect("and does not panic");

    let pg = TestDb::new(Backend::Postgres).await;
    assert!(pg.db.start_checkpointer(stop).is_none());
    pg.cleanup().await;
}
