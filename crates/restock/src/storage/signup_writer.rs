//! Sign-ups on SQLite go through one writer task that commits them in groups.
//!
//! SQLite has one writer at a time: with every sign-up its own write transaction,
//! concurrent shoppers queue on the busy handler and each pays a commit (an fsync of
//! the WAL). The writer takes every sign-up waiting when it is free, runs them in one
//! transaction ([`Db::subscribe_group`]) and answers each caller with its own
//! outcome; if one of them fails, the group is rolled back and each is written on
//! its own, so a bad sign-up fails nobody else. An idle writer takes the first sign-up at once,
//! so a lone shopper waits for nothing. PostgreSQL has row locks and concurrent
//! commits, so its sign-ups keep the direct path.

use restock_core::ids::StoreId;
use tokio::sync::{mpsc, oneshot};

use super::demand::{SignUp, SubscribeOutcome};
use super::write_turns::WriteTurns;
use super::{Db, Result};

/// Most sign-ups committed together: bounds how long the last of a group waits.
const MAX_GROUP: usize = 64;
/// Sign-ups waiting for the writer at most; past it callers wait to hand theirs over.
const QUEUE: usize = 1024;

struct Job {
    store: StoreId,
    signup: SignUp,
    now: i64,
    reply: oneshot::Sender<Result<SubscribeOutcome>>,
}

/// Where sign-ups are written: the group-committing writer on SQLite, the database
/// directly on PostgreSQL.
#[derive(Clone)]
pub struct SignUpWriter {
    db: Db,
    queue: Option<mpsc::Sender<Job>>,
}

impl SignUpWriter {
    /// Starts the writer task on SQLite (it ends when the last handle is dropped).
    pub fn start(db: Db, turns: WriteTurns) -> Self {
        let queue = match &db {
            Db::Sqlite(_) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(write_groups(db.clone(), turns, rx));
                Some(tx)
            }
            Db::Postgres(_) => None,
        };
        SignUpWriter { db, queue }
    }

    /// [`Db::subscribe`], grouped with other sign-ups on SQLite.
    pub async fn subscribe(
        &self,
        store: StoreId,
        signup: &SignUp,
        now: i64,
    ) -> Result<SubscribeOutcome> {
        let Some(queue) = &self.queue else {
            return self.db.subscribe(store, signup, now).await;
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            store,
            signup: signup.clone(),
            now,
            reply,
        };
        if queue.send(job).await.is_err() {
            return self.db.subscribe(store, signup, now).await;
        }
        match answer.await {
            Ok(result) => result,
            // The writer is gone (it stopped with the process): write it directly.
            Err(_) => self.db.subscribe(store, signup, now).await,
        }
    }
}

async fn write_groups(db: Db, turns: WriteTurns, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let _turn = turns.take().await;
        let group: Vec<(StoreId, &SignUp, i64)> =
            jobs.iter().map(|j| (j.store, &j.signup, j.now)).collect();
        match db.subscribe_group(&group).await {
            Ok(Some(outcomes)) => {
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            result => {
                // Nothing of the group was written (one sign-up failed, or the
                // transaction could not start or commit): each sign-up is tried on
                // its own, so each caller gets its own answer.
                if let Err(e) = result {
                    tracing::warn!(error = %e, size = jobs.len(), "a group of sign-ups failed; writing them one by one");
                }
                for job in jobs.drain(..) {
                    let result = db.subscribe(job.store, &job.signup, job.now).await;
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}
