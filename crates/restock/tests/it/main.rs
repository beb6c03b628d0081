//! Restock's integration tests, as one test binary: one link step for the whole
//! suite instead of one per file. Each module boots the real server (on port 0) or
//! runs the real binary against real servers: PostgreSQL, SMTP, a throwaway
//! PostgreSQL cluster; `common` is the shared harness. A new test file goes here
//! as a module. Run one module with `cargo test --test it <module>::`.

#[macro_use]
mod common;

mod cli;
mod concurrency;
mod connections;
mod contract;
mod crash_recovery;
mod csv_import;
mod db_outage;
mod decisions;
mod demo;
mod dispatch_loop;
mod email_smtp;
mod email_tls;
mod hardening;
mod intake_log;
mod log_redaction;
mod migrations;
mod ops;
mod packaging;
mod planning_properties;
mod pollers;
mod schema_parity;
mod shopify_products;
mod shopify_webhook;
mod signup_groups;
mod slow_clients;
mod sources;
mod stock_and_planning;
mod stock_batches;
mod store_isolation;
mod storefront_api;
mod streams;
mod tracking;
mod woocommerce;
