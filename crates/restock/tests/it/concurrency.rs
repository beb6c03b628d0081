//! Several instances on one database: their workers race for the same outbox and
//! every notification is still sent exactly once.

use crate::common;

use common::{Backend, T0, TestApp};
use restock::App;
use restock::channels::{EmailChannel, MemoryOutbox};
use restock::util::Clock;
use restock_core::ids::StoreId;
use serde_json::json;

both_dbs!(
    racing_workers_send_each_notification_once,
    |backend: Backend| async move {
        const N: u64 = 600;
        let t = TestApp::spawn_with(backend, "[dispatch]\nbatch_size = 25\nconcurrency = 4").await;
        let store = t.create_store("race").await;
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
            .bench_seed_waiting_list(StoreId(store.id), variant.product_id, variant.id, N)
            .await
            .expect("seed");
        t.advance(1_000);
        let body = t
            .stock(&store, json!([{"sku": "S-42", "available": 50}]))
            .await;
        assert_eq!(t.planned(&store, &body).await, N as i64);

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
