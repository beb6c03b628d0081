//! Existing databases upgrade in place: a database at the first schema, holding the
//! very cases the shopper model fixes (one person signed up twice in two spellings,
//! and sent two messages for one restock), is migrated, keeps its history, merges the
//! two into one shopper, and goes on working: its pending message is sent.

use crate::common;

use common::{Backend, TestDb};
use restock::App;
use restock::channels::{EmailChannel, MemoryOutbox};
use restock::config::Config;
use restock::storage::Db;
use restock::storage::demand::{ConsentInput, SignUp, SubscribeOutcome, Target};
use restock::util::Clock;
use restock_core::ids::{ProductId, StoreId, VariantId};
use restock_core::values::Email;

const OLD_DATA: &str = "
INSERT INTO stores (id, name, slug, publishable_key, created_at) VALUES (1, 'S', 's', 'pk_s', 0);
INSERT INTO products (id, store_id, external_id, title, url, price_minor, currency, updated_at)
    VALUES (1, 1, 'shoe', 'Shoe', 'https://shop.example/shoe', 100, 'EUR', 0);
INSERT INTO variants (id, store_id, product_id, sku, updated_at, available, in_stock)
    VALUES (1, 1, 1, 'S-42', 0, 5, TRUE), (2, 1, 1, 'S-43', 0, 0, FALSE);
INSERT INTO stock_levels (variant_id, location, store_id, available, observed_at, source, updated_at)
    VALUES (1, 'default', 1, 5, 10, 'api', 10);
INSERT INTO subscribers (id, store_id, email, created_at) VALUES
    (1, 1, 'ann@x.test', 1), (2, 1, 'ANN@X.test', 2), (3, 1, 'bob@x.test', 3);
INSERT INTO subscriptions (id, store_id, subscriber_id, product_id, variant_id, status, created_at, updated_at) VALUES
    (1, 1, 1, 1, 1, 'notified', 1, 1), (2, 1, 2, 1, 1, 'notified', 2, 2),
    (3, 1, 3, 1, 1, 'waiting', 3, 3), (4, 1, 1, 1, 2, 'waiting', 4, 4), (5, 1, 2, 1, 2, 'waiting', 5, 5);
INSERT INTO availability_transitions (id, store_id, variant_id, to_state, quantity, cause, at)
    VALUES (1, 1, 1, 'in_stock', 5, 'api', 10);
INSERT INTO restock_events (id, store_id, variant_id, product_id, transition_id, quantity, planned_count, created_at)
    VALUES (1, 1, 1, 1, 1, 5, 3, 10);
INSERT INTO notifications (id, subscription_id, restock_event_id, store_id, subscriber_id, variant_id, recipient,
                           state, due_at, planned_at, updated_at, sent_at) VALUES
    (1, 1, 1, 1, 1, 1, 'ann@x.test', 'done', 10, 10, 11, 11),
    (2, 2, 1, 1, 2, 1, 'ANN@X.test', 'done', 10, 10, 11, 11),
    (3, 3, 1, 1, 3, 1, 'bob@x.test', 'pending', 10, 10, 10, NULL);
INSERT INTO tracking_events (store_id, notification_id, kind, at) VALUES (1, 2, 'click', 12);
";

async fn exec_all(db: &Db, sql: &str) {
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        match db {
            Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                .execute(p)
                .await
                .map(|_| ()),
            Db::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                .execute(p)
                .await
                .map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

async fn rows(db: &Db, sql: &'static str) -> Vec<(i64, String)> {
    match db {
        Db::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
        Db::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
    }
    .expect(sql)
}

both_dbs!(
    a_first_schema_database_upgrades_in_place,
    |backend: Backend| async move {
        let t = TestDb::empty(backend).await;
        match &t.db {
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run_to(1, p).await,
            Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run_to(1, p).await,
        }
        .expect("first schema");
        exec_all(&t.db, OLD_DATA).await;
        if let Db::Postgres(p) = &t.db {
            // Ids were given explicitly above; move the sequences past them.
            for table in [
                "stores",
                "products",
                "variants",
                "subscribers",
                "subscriptions",
                "availability_transitions",
                "restock_events",
                "notifications",
            ] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
            )))
            .execute(p)
            .await
            .expect("setval");
            }
        }
        t.db.migrate().await.expect("upgrades");

        // Ann's two spellings are one shopper, reached at the first one.
        assert_eq!(
            rows(
                &t.db,
                "SELECT shopper_id, address FROM contact_points ORDER BY shopper_id"
            )
            .await,
            vec![(1, "ann@x.test".to_string()), (3, "bob@x.test".to_string())]
        );
        // Her two waiting sign-ups for S-43 are one now; history is kept.
        assert_eq!(
            rows(
                &t.db,
                "SELECT id, status FROM subscriptions WHERE shopper_id = 1 ORDER BY id"
            )
            .await,
            vec![
                (1, "notified".into()),
                (2, "notified".into()),
                (4, "waiting".into()),
                (5, "cancelled".into())
            ]
        );
        // The second message of the old double send stays as history, marked.
        assert_eq!(
            rows(&t.db, "SELECT id, purpose FROM notifications ORDER BY id").await,
            vec![
                (1, "alert".into()),
                (2, "duplicate".into()),
                (3, "alert".into())
            ]
        );
        assert_eq!(
            rows(&t.db, "SELECT notification_id, kind FROM tracking_events").await,
            vec![(2, "click".into())]
        );

        // It goes on working: the pending message is sent...
        let memory = MemoryOutbox::default();
        let config = Config::from_defaults_and("[dispatch]\nenabled = false").expect("config");
        let app = App::new(
            config,
            t.db.clone(),
            Clock::manual(1_000),
            EmailChannel::Memory(memory.clone()),
        )
        .await
        .expect("app");
        assert_eq!(
            restock::dispatch::run_pending(&app)
                .await
                .expect("dispatch"),
            1
        );
        let sent: Vec<String> = memory.messages().await.into_iter().map(|m| m.to).collect();
        assert_eq!(sent, vec!["bob@x.test"]);
        // ...and a sign-up in yet another spelling finds Ann's waiting one.
        let signup = SignUp {
            email: Email::parse("Ann@x.TEST").expect("email"),
            target: Target::Variant {
                product: ProductId(1),
                variant: VariantId(2),
            },
            market: None,
            source: "storefront".into(),
            consent: ConsentInput::default(),
            time_zone: None,
            anonymous: true,
        };
        let out =
            t.db.subscribe(StoreId(1), &signup, 2_000)
                .await
                .expect("subscribe");
        assert!(
            matches!(out, SubscribeOutcome::Merged(id, _) if id.0 == 4),
            "{out:?}"
        );
        t.cleanup().await;
    }
);

/// Restock's own PostgreSQL storage honours `sslmode` in its URL (managed services
/// refuse plain connections): with `require` every pooled connection is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_storage_connects_over_tls_when_the_url_requires_it() {
    let url = common::pg_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = Db::connect_url(&format!("{url}{sep}sslmode=require"), 2)
        .await
        .expect("connects over TLS");
    let Db::Postgres(pool) = &db else {
        panic!("a PostgreSQL URL gives a PostgreSQL pool")
    };
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the storage connection is encrypted");
    db.close().await;
}
