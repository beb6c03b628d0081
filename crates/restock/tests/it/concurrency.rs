//! Several instances on one database: their workers race for the same outbox and
//! every notification is still sent exactly once.

use crate::common;

use common::{Backend, T0, TestApp};
use restock::App;
use restock::channels::{EmailChannel, MemoryOutbox};
use restock::util::Clock;
use restock_core::ids::StoreId;
use serde_json::json;

/// A store whose sold-out S-42 has `n` shoppers waiting and has just come back (50
/// in stock), with every alert planned.
async fn restock_with_waiters(t: &TestApp, name: &str, n: u64) -> common::StoreKeys {
    let store = t.create_store(name).await;
    t.seed_catalog(&store).await;
    t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
        .await;
    let variant = t
        .app
        .db
        .variant_by_sku(StoreId(store.id), "S-42")
        .await
        .expect("query")
        .expect("variant");
    t.app
        .db
        .bench_seed_waiting_list(StoreId(store.id), variant.product_id, variant.id, n)
        .await
        .expect("seed");
    t.advance(1_000);
    let body = t
        .stock(&store, json!([{"sku": "S-42", "available": 50}]))
        .await;
    assert_eq!(t.planned(&store, &body).await, n as i64);
    store
}

both_dbs!(
    racing_workers_send_each_notification_once,
    |backend: Backend| async move {
        const N: u64 = 600;
        let t = TestApp::spawn_with(backend, "[dispatch]\nbatch_size = 25\nconcurrency = 4").await;
        let store = restock_with_waiters(&t, "race", N).await;

        // Three more "instances": their own app on the same database, each with its own
        // channel so we can count what each one sent.
        let mut others = Vec::new();
        for _ in 0..3 {
            let memory = MemoryOutbox::default();
            let app = App::new(
                t.app.config.clone(),
                t.app.db.clone(),
                Clock::manual(T0 + 1_000),
                EmailChannel::Memory(memory.clone()),
            )
            .await
            .expect("app");
            others.push((app, memory));
        }
        let runs = others.iter().map(|(app, _)| {
            let app = app.clone();
            tokio::spawn(async move {
                restock::dispatch::run_pending(&app)
                    .await
                    .expect("dispatch")
            })
        });
        let first = t.run_pending();
        let (mine, theirs) = tokio::join!(first, futures::future::join_all(runs));
        let theirs: usize = theirs.into_iter().map(|r| r.expect("task")).sum();
        assert_eq!(
            mine + theirs,
            N as usize,
            "claims: mine {mine}, theirs {theirs}"
        );

        let mut recipients: Vec<String> = t.sent_recipients();
        for (_, memory) in &others {
            recipients.extend(memory.messages().await.into_iter().map(|m| m.to));
        }
        let total = recipients.len();
        recipients.sort();
        recipients.dedup();
        assert_eq!(total, N as usize, "some notification was sent twice");
        assert_eq!(recipients.len(), N as usize);
        let outbox = t.outbox(&store).await;
        assert_eq!(outbox["done"], N, "{outbox}");
        t.stop().await;
    }
);

/// A lease renewal and the reaper skip a row another transaction holds instead of
/// waiting for it. Waiting let a renewal and a group of outcomes (which hold their
/// rows until they commit) lock each other's rows in opposite orders; PostgreSQL
/// broke the deadlock after a second, and by then the leases being renewed had run
/// out and the rows went to a second attempt.
#[tokio::test]
async fn lease_renewal_and_reaping_skip_rows_another_transaction_holds() {
    const N: u64 = 5;
    let t = TestApp::spawn(Backend::Postgres).await;
    restock_with_waiters(&t, "locked", N).await;
    let now = t.now();
    let claimed = t.app.db.claim_due(now, 1_000, 100).await.expect("claim");
    assert_eq!(claimed.len(), N as usize);
    let held: Vec<(i64, i64)> = claimed.iter().map(|n| (n.id, n.attempts)).collect();

    // Another transaction holds the first row, as a group of outcomes does while it
    // is being written.
    let restock::storage::Db::Postgres(pool) = &t.app.db else {
        panic!("a PostgreSQL test app has a PostgreSQL pool")
    };
    let mut locker = pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM notifications WHERE id = $1 FOR UPDATE")
        .bind(held[0].0)
        .execute(&mut *locker)
        .await
        .expect("lock one row");

    let patience = std::time::Duration::from_secs(20);
    let renewed = tokio::time::timeout(patience, t.app.db.renew_leases(&held, now + 5_000))
        .await
        .expect("the renewal waited on the locked row")
        .expect("renew");
    assert_eq!(renewed, N - 1, "every row but the locked one is renewed");
    let reaped = tokio::time::timeout(patience, t.app.db.reap_expired_leases(now + 60_000))
        .await
        .expect("the reaper waited on the locked row")
        .expect("reap");
    assert_eq!(
        reaped,
        N - 1,
        "every expired row but the locked one is reaped"
    );
    locker.rollback().await.expect("rollback");

    // Released, the row is renewed and reaped like any other.
    assert_eq!(
        t.app
            .db
            .renew_leases(&held[..1], now + 5_000)
            .await
            .expect("renew"),
        1
    );
    assert_eq!(
        t.app
            .db
            .reap_expired_leases(now + 60_000)
            .await
            .expect("reap"),
        1
    );
    t.stop().await;
}
