//! Sign-ups on SQLite go through one writer task that commits them in groups.
//!
//! SQLite has one writer at a time: with every sign-up its own write transaction,
//! concurrent shoppers queue on the busy handler and each pays a commit (an fsync of
//! the WAL). The writer takes every sign-up waiting when it is free, runs them in one
//! transaction ([`Db::subscribe_group`]) and answers each caller with its own
//! outcome; if one of them fails, the group is rolled back and each is written on
//! its own, so a bad sign-up fails nobody else. An idle writer takes the first sign-up at once,
//! so a lone shopper waits for nothing. A storefront sign-up by SKU hands its SKU
//! over unread: the writer reads the variants of the whole group in one statement,
//! in the group's transaction on a connection it keeps between groups, and applies
//! the same rule ([`SkuFacts::target`]) to each, instead of each request
//! making a read of its own first (a hand-off to a connection's thread and back,
//! and another to return it to the pool). PostgreSQL has row locks and concurrent
//! commits, so its sign-ups keep the direct path: the variant's read and the
//! sign-up's one or two statements on one connection.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Sqlite};

use restock_core::ids::StoreId;
use tokio::sync::{mpsc, oneshot};

use super::catalog::{sku_facts_of, sku_facts_pg};
use super::demand::{
    SignUp, SkuFacts, SkuRefusal, SubscribeOutcome, Target, subscribe_group_in, subscribe_pg,
};
use super::write_turns::WriteTurns;
use super::{Db, Result};

/// Most sign-ups committed together: bounds how long the last of a group waits.
const MAX_GROUP: usize = 64;
/// Sign-ups waiting for the writer at most; past it callers wait to hand theirs over.
const QUEUE: usize = 1024;

/// A sign-up's fields but its target, made into the sign-up once the target is known.
pub type WithTarget = Arc<dyn Fn(Target) -> SignUp + Send + Sync>;

/// An answer to a sign-up by SKU: its outcome, or why the SKU cannot be signed up for.
pub type SkuAnswer = std::result::Result<SubscribeOutcome, SkuRefusal>;

enum Job {
    /// A sign-up whose target is known.
    Given {
        store: StoreId,
        signup: SignUp,
        now: i64,
        reply: oneshot::Sender<Result<SubscribeOutcome>>,
    },
    /// A sign-up for the variant a SKU names, without a market: the variant is read
    /// with the rest of its group, and [`SkuFacts::target`] decides.
    Sku {
        store: StoreId,
        sku: String,
        signup: WithTarget,
        now: i64,
        reply: oneshot::Sender<Result<SkuAnswer>>,
    },
}

/// Where a written sign-up's outcome goes.
enum Reply {
    Given(oneshot::Sender<Result<SubscribeOutcome>>),
    Sku(oneshot::Sender<Result<SkuAnswer>>),
}

impl Reply {
    fn send(self, result: Result<SubscribeOutcome>) {
        match self {
            Reply::Given(tx) => {
                let _ = tx.send(result);
            }
            Reply::Sku(tx) => {
                let _ = tx.send(result.map(Ok));
            }
        }
    }
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
        let job = Job::Given {
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

    /// A sign-up for the variant `sku` names (no market): refused as
    /// [`SkuFacts::target`] says, otherwise [`Db::subscribe`]d. On SQLite the
    /// variant is read once for the SKUs of the whole group, instead of a read of
    /// its own before each sign-up.
    pub async fn subscribe_sku(
        &self,
        store: StoreId,
        sku: &str,
        signup: WithTarget,
        now: i64,
    ) -> Result<SkuAnswer> {
        let Some(queue) = &self.queue else {
            return subscribe_sku_alone(&self.db, store, sku, signup, now).await;
        };
        let (reply, answer) = oneshot::channel();
        let job = Job::Sku {
            store,
            sku: sku.to_owned(),
            signup: signup.clone(),
            now,
            reply,
        };
        if queue.send(job).await.is_err() {
            return subscribe_sku_alone(&self.db, store, sku, signup, now).await;
        }
        match answer.await {
            Ok(result) => result,
            // The writer is gone (it stopped with the process): write it directly.
            Err(_) => subscribe_sku_alone(&self.db, store, sku, signup, now).await,
        }
    }
}

/// A sign-up by SKU on its own: its variant read, the rule applied, the sign-up
/// written. On PostgreSQL all of it on one connection: one checkout from the pool,
/// and one check of the connection on its way back.
async fn subscribe_sku_alone(
    db: &Db,
    store: StoreId,
    sku: &str,
    signup: WithTarget,
    now: i64,
) -> Result<SkuAnswer> {
    if let Db::Postgres(pool) = db {
        let mut conn = pool.acquire().await?;
        return match SkuFacts::target(sku_facts_pg(&mut conn, store, sku).await?) {
            Ok(target) => Ok(Ok(
                subscribe_pg(&mut conn, store, &signup(target), now).await?
            )),
            Err(refusal) => Ok(Err(refusal)),
        };
    }
    match SkuFacts::target(db.sku_facts(store, sku).await?) {
        Ok(target) => Ok(Ok(db.subscribe(store, &signup(target), now).await?)),
        Err(refusal) => Ok(Err(refusal)),
    }
}

/// A sign-up the writer's group could not write, left to be written on its own.
enum Alone {
    Job(Job),
    SignUp(StoreId, SignUp, i64, Reply),
}

async fn write_groups(db: Db, turns: WriteTurns, mut rx: mpsc::Receiver<Job>) {
    let Db::Sqlite(pool) = &db else { return };
    // The writer keeps a connection of its own between groups: a group is then one
    // transaction on it, with no pool checkout, and no round trip to check the
    // connection when it would go back to the pool.
    // It gives it back when the pool closes, which waits for every connection.
    let mut conn: Option<PoolConnection<Sqlite>> = None;
    let mut closed = std::pin::pin!(pool.close_event());
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    loop {
        let taken = tokio::select! {
            biased;
            _ = &mut closed, if conn.is_some() => {
                conn = None;
                continue;
            }
            taken = rx.recv_many(&mut jobs, MAX_GROUP) => taken,
        };
        if taken == 0 {
            break;
        }
        let _turn = turns.take().await;
        let alone = match &mut conn {
            Some(c) => write_group(c, std::mem::take(&mut jobs)).await,
            None => match pool.acquire().await {
                Ok(c) => write_group(conn.insert(c), std::mem::take(&mut jobs)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "the sign-up writer has no connection; writing the sign-ups one by one");
                    jobs.drain(..).map(Alone::Job).collect()
                }
            },
        };
        if alone.is_empty() {
            continue;
        }
        // Something failed (the connection, or one sign-up of the group, which
        // rolled the group back). The connection is given back before each sign-up
        // is written on its own from the pool, so each caller gets its own answer.
        conn = None;
        for a in alone {
            match a {
                Alone::Job(Job::Given {
                    store,
                    signup,
                    now,
                    reply,
                }) => {
                    let _ = reply.send(db.subscribe(store, &signup, now).await);
                }
                Alone::Job(Job::Sku {
                    store,
                    sku,
                    signup,
                    now,
                    reply,
                }) => {
                    let _ = reply.send(subscribe_sku_alone(&db, store, &sku, signup, now).await);
                }
                Alone::SignUp(store, signup, now, reply) => {
                    reply.send(db.subscribe(store, &signup, now).await);
                }
            }
        }
    }
}

/// Writes a group in one transaction on the writer's connection: reads the
/// variants its sign-ups by SKU name, answers those the rule refuses, and writes
/// the rest. Returns the sign-ups left to be written on their own (none when the
/// group committed).
async fn write_group(conn: &mut PoolConnection<Sqlite>, jobs: Vec<Job>) -> Vec<Alone> {
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::warn!(error = %e, "a group of sign-ups could not begin; writing them one by one");
            return jobs.into_iter().map(Alone::Job).collect();
        }
    };
    let skus: Vec<(StoreId, &str)> = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Sku { store, sku, .. } => Some((*store, sku.as_str())),
            Job::Given { .. } => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let facts: HashMap<(StoreId, String), SkuFacts> = if skus.is_empty() {
        HashMap::new()
    } else {
        let read = sku_facts_of(&mut tx, &skus).await;
        match read {
            Ok(facts) => facts,
            Err(e) => {
                tracing::warn!(error = %e, "reading the variants of a group of sign-ups failed; writing them one by one");
                drop(tx);
                return jobs.into_iter().map(Alone::Job).collect();
            }
        }
    };
    let mut group: Vec<(StoreId, SignUp, i64, Reply)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        match job {
            Job::Given {
                store,
                signup,
                now,
                reply,
            } => group.push((store, signup, now, Reply::Given(reply))),
            Job::Sku {
                store,
                sku,
                signup,
                now,
                reply,
            } => match SkuFacts::target(facts.get(&(store, sku)).copied()) {
                Ok(target) => group.push((store, signup(target), now, Reply::Sku(reply))),
                Err(refusal) => {
                    let _ = reply.send(Ok(Err(refusal)));
                }
            },
        }
    }
    let signups: Vec<(StoreId, &SignUp, i64)> = group
        .iter()
        .map(|(store, signup, now, _)| (*store, signup, *now))
        .collect();
    let (tx, outcomes) = subscribe_group_in(tx, &signups).await;
    let written = match outcomes {
        Some(outcomes) => match tx.commit().await {
            Ok(()) => Some(outcomes),
            Err(e) => {
                tracing::warn!(error = %e, size = group.len(), "a group of sign-ups failed to commit; writing them one by one");
                None
            }
        },
        None => {
            let _ = tx.rollback().await;
            None
        }
    };
    match written {
        Some(outcomes) => {
            for ((_, _, _, reply), outcome) in group.into_iter().zip(outcomes) {
                reply.send(Ok(outcome));
            }
            Vec::new()
        }
        None => group
            .into_iter()
            .map(|(store, signup, now, reply)| Alone::SignUp(store, signup, now, reply))
            .collect(),
    }
}
