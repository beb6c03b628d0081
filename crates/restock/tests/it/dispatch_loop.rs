//! The restock loop end to end through the HTTP API, on both databases.

use crate::common;

use common::{Backend, TestApp};
use serde_json::json;

both_dbs!(
    stock_out_signup_restock_delivers_once,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let store = t.create_store("acme").await;
        t.seed_catalog(&store).await;
        t.stock(
            &store,
            json!([{"sku": "S-42", "available": 3}, {"sku": "S-43", "available": 5}]),
        )
        .await;
        t.stock(
            &store,
            json!([{"sku": "S-42", "available": 0, "observed_at": "2026-03-01T12:00:01Z"}]),
        )
        .await;

        for email in ["ann@example.com", "bob@example.com"] {
            let (status, body) = t
                .subscribe(&store, json!({"email": email, "sku": "S-42"}))
                .await;
            assert_eq!(status, 201, "{body}");
        }
        let body = t
            .stock(
                &store,
                json!([{"sku": "S-42", "available": 4, "observed_at": "2026-03-01T12:00:02Z"}]),
            )
            .await;
        assert_eq!(t.planned(&store, &body).await, 2, "{body}");
        assert_eq!(t.outbox(&store).await["pending"], 2);

        assert_eq!(t.run_pending().await, 2);
        assert_eq!(
            t.sent_recipients(),
            vec!["ann@example.com", "bob@example.com"]
        );
        let outbox = t.outbox(&store).await;
        assert_eq!(
            (outbox["done"].as_i64(), outbox["pending"].as_i64()),
            (Some(2), Some(0)),
            "{outbox}"
        );

        // Sold out and back again: nobody is notified twice.
        t.stock(
            &store,
            json!([{"sku": "S-42", "available": 0, "observed_at": "2026-03-01T12:00:03Z"}]),
        )
        .await;
        let body = t
            .stock(
                &store,
                json!([{"sku": "S-42", "available": 6, "observed_at": "2026-03-01T12:00:04Z"}]),
            )
            .await;
        assert_eq!(t.planned(&store, &body).await, 0, "{body}");
        assert_eq!(t.run_pending().await, 0);
        assert_eq!(t.sent_files().len(), 2);
        t.stop().await;
    }
);
