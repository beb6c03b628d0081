//! The SQLite and PostgreSQL migrations define the same tables, columns (name,
//! type, nullability) and indexes, so one set of queries means the same on both.

use crate::common;

use std::collections::BTreeSet;

use common::{Backend, TestDb};
use restock::storage::Db;

type Shape = (
    BTreeSet<(String, String, String, bool)>,
    BTreeSet<(String, String)>,
);

fn normal_type(t: &str) -> String {
    match t.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer".into(),
        "text" => "text".into(),
        "boolean" => "boolean".into(),
        other => other.into(),
    }
}

async fn shape(db: &Db) -> Shape {
    let mut columns = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    match db {
        Db::Sqlite(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
            )
            .fetch_all(pool)
            .await
            .expect("tables");
            for t in tables {
                let cols: Vec<(String, String, bool, i64)> =
                    sqlx::query_as("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
                        .bind(&t)
                        .fetch_all(pool)
                        .await
                        .expect("columns");
                for (name, ty, not_null, pk) in cols {
                    columns.insert((t.clone(), name, normal_type(&ty), not_null || pk > 0));
                }
            }
            let idx: Vec<(String, String)> = sqlx::query_as(
                "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' \
                 AND name NOT LIKE 'sqlite_autoindex%'",
            )
            .fetch_all(pool)
            .await
            .expect("indexes");
            indexes.extend(idx);
        }
        Db::Postgres(pool) => {
            let cols: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name NOT LIKE '_sqlx%'",
            )
            .fetch_all(pool)
            .await
            .expect("columns");
            for (t, name, ty, nullable) in cols {
                columns.insert((t, name, normal_type(&ty), nullable == "NO"));
            }
            // Indexes created with CREATE INDEX, not those backing a primary key or
            // a UNIQUE constraint (SQLite names those automatically).
            let idx: Vec<(String, String)> = sqlx::query_as(
                "SELECT tablename::text, indexname::text FROM pg_indexes \
                 WHERE schemaname = current_schema() AND tablename NOT LIKE '_sqlx%' \
                 AND indexname NOT IN (SELECT conname FROM pg_constraint \
                   WHERE connamespace = current_schema()::regnamespace)",
            )
            .fetch_all(pool)
            .await
            .expect("indexes");
            indexes.extend(idx);
        }
    }
    (columns, indexes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_migrations_define_the_same_schema() {
    let lite = TestDb::new(Backend::Sqlite).await;
    let pg = TestDb::new(Backend::Postgres).await;
    let (lite_cols, lite_idx) = shape(&lite.db).await;
    let (pg_cols, pg_idx) = shape(&pg.db).await;
    assert!(lite_cols.len() > 50, "{}", lite_cols.len());
    assert!(lite_idx.len() > 10, "{lite_idx:?}");
    let only_lite: Vec<_> = lite_cols.difference(&pg_cols).collect();
    let only_pg: Vec<_> = pg_cols.difference(&lite_cols).collect();
    assert!(
        only_lite.is_empty() && only_pg.is_empty(),
        "columns only on SQLite: {only_lite:#?}\ncolumns only on PostgreSQL: {only_pg:#?}"
    );
    let only_lite: Vec<_> = lite_idx.difference(&pg_idx).collect();
    let only_pg: Vec<_> = pg_idx.difference(&lite_idx).collect();
    assert!(
        only_lite.is_empty() && only_pg.is_empty(),
        "indexes only on SQLite: {only_lite:#?}\nindexes only on PostgreSQL: {only_pg:#?}"
    );
    pg.cleanup().await;
}
