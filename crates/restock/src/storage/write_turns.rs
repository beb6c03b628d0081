//! Turns at SQLite's write lock for the process's busiest writers.
//!
//! SQLite lets one transaction write at a time, and a writer that finds the lock
//! taken is not woken when it is released: SQLite's busy handler sleeps (1, 2, 5,
//! 10 ms and longer) and tries again. The dispatch worker's claims and its group
//! commits of outcomes write back to back, so each kept finding the other's lock
//! and sleeping through the moment it was freed (186 such sleeps in two seconds of
//! sending 20,000 messages). Writers that take a turn here first queue in order and
//! start the moment the turn before them ends, so they meet SQLite's lock free:
//! the dispatch worker's writes, the sign-up writer's groups, the planner's pages
//! of decisions and stock batches, which all run at once when a restock lands.
//! Rarer writes (the merchant API, tracking) still meet the lock in SQLite's busy
//! handler. PostgreSQL locks rows, not the database: no turns there.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use super::Db;

#[derive(Clone)]
pub struct WriteTurns(Option<Arc<Mutex<()>>>);

impl WriteTurns {
    pub fn for_db(db: &Db) -> WriteTurns {
        WriteTurns(match db {
            Db::Sqlite(_) => Some(Arc::new(Mutex::new(()))),
            Db::Postgres(_) => None,
        })
    }

    /// Waits for this writer's turn (at once on PostgreSQL); the turn ends when the
    /// guard is dropped, after the write has committed.
    pub async fn take(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.0 {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }
}
