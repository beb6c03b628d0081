//! How storage connections are set up and kept: SQLite's write-ahead log is copied
//! back by the server's checkpointer, not by the commits of sign-ups, outcomes and
//! stock batches (which would wait for it; PostgreSQL has no checkpointer of ours);
//! PostgreSQL connections send without Nagle's delay; a pooled connection the
//! server dropped while it idled is replaced before anyone uses it; the server's
//! pool opens all its connections up front.

use std::time::Duration;

use crate::common;

use common::{Backend, TestApp, TestDb};
use restock::storage::{Db, Warmth};

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
    common::eventually(
        10,
        "the store in the database file (the WAL checkpointed)",
        || checkpointed(t.db.dir.path(), "walshop"),
    )
    .await;
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

/// The server's pool (`restock::build`, what `restock serve` runs) opens every
/// connection at start, so the first burst of work does not wait for connections
/// (and TLS handshakes) to be set up; a command-line job's pool opens them as it
/// needs them.
#[tokio::test]
async fn the_servers_pool_opens_all_its_connections_up_front() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let t = TestDb::new(backend).await;
        let config = restock::config::Config::from_defaults_and(&format!(
            "[database]\nurl = \"{}\"\nmax_connections = 5\n\
             [email]\ntransport = \"file\"\nfile_dir = \"{}\"\n",
            t.url,
            t.dir.path().join("outbox").display()
        ))
        .expect("config");
        let app = restock::build(config.clone()).await.expect("builds");
        let job = Db::connect(&config.database, Warmth::Lazy)
            .await
            .expect("connects");
        let sizes = |db: &Db| match db {
            Db::Sqlite(pool) => (pool.size(), pool.num_idle()),
            Db::Postgres(pool) => (pool.size(), pool.num_idle()),
        };
        common::eventually(10, "the server's pool holds 5 idle connections", || {
            let got = sizes(&app.db);
            async move { got == (5, 5) }
        })
        .await;
        assert_eq!(
            sizes(&job).0,
            1,
            "a job's pool opened only the connection it checked"
        );
        app.db.close().await;
        job.close().await;
        t.cleanup().await;
    }
}

/// A pooled connection is handed out without a check while it is in use, but one
/// that sat idle is checked first: a connection the server dropped while it idled
/// (a restart, an idle timeout, an operator's `pg_terminate_backend`) is replaced,
/// and the request that takes it out of the pool never sees the dead one.
#[tokio::test]
async fn a_connection_dropped_while_idle_in_the_pool_is_replaced_before_use() {
    let t = TestDb::new(Backend::Postgres).await;
    let db = Db::connect_url(&t.url, 2).await.expect("connects");
    let Db::Postgres(pool) = &db else {
        unreachable!("a PostgreSQL pool")
    };
    let (mut a, mut b) = (
        pool.acquire().await.expect("first"),
        pool.acquire().await.expect("second"),
    );
    let mut pids = Vec::new();
    for conn in [&mut a, &mut b] {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await
            .expect("pid");
        pids.push(pid);
    }
    drop((a, b));
    let admin = sqlx::PgPool::connect(&common::pg_url())
        .await
        .expect("admin");
    for pid in &pids {
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&admin)
            .await
            .expect("terminate");
        assert!(ended, "backend {pid} terminated");
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..4 {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(pool)
            .await
            .expect("a query after the pool's connections were dropped succeeds");
        assert!(!pids.contains(&pid), "a new connection, not a dropped one");
    }
    db.close().await;
    admin.close().await;
    t.cleanup().await;
}

/// Every pooled PostgreSQL connection, over TLS (the default `sslmode=prefer`, which
/// the local server accepts) and without, has `TCP_NODELAY`: a statement written in
/// more than one piece (each TLS record is one) does not wait for the server's
/// delayed acknowledgement.
#[tokio::test]
async fn postgres_connections_send_without_nagles_delay() {
    let url = common::pg_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    for url in [url.clone(), format!("{url}{sep}sslmode=disable")] {
        let db = Db::connect_url(&url, 2).await.expect("connects");
        let Db::Postgres(pool) = &db else {
            unreachable!("a PostgreSQL pool")
        };
        let (mut a, mut b) = (
            pool.acquire().await.expect("first"),
            pool.acquire().await.expect("second"),
        );
        for conn in [&mut a, &mut b] {
            let (local, peer, tls): (i32, i32, bool) = sqlx::query_as(
                "SELECT inet_client_port(), inet_server_port(), \
                        COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), FALSE)",
            )
            .fetch_one(&mut **conn)
            .await
            .expect("ports");
            assert_eq!(tls, !url.contains("sslmode=disable"), "{url}: TLS as asked");
            let set = restock::storage::nodelay::socket_by_ports(local as u16, peer as u16)
                .map(|s| s.nodelay().expect("getsockopt"));
            assert_eq!(set, Some(true), "{url}: connection from port {local}");
        }
        drop((a, b));
        db.close().await;
    }
}
