//! Restock's domain core: the types and the policy, with no IO and no async.
//!
//! Everything here is a plain function over plain data so that property tests can
//! hammer it. The service crate (`restock`) wraps it with storage, HTTP and workers.
//!
//! - [`ids`]: one newtype per entity id.
//! - [`values`]: values parsed at the edge (`Email`, `Sku`, `Currency`, `HttpUrl`).
//! - [`stock`]: ordering of stock updates and the availability state machine.
//! - [`planner`]: who a restock notifies, and the plan's uniqueness rule.
//! - [`retry`]: the retry schedule and the classification of failures.
//! - [`token`]: HMAC-signed tokens for tracking and unsubscribe links.

pub mod ids;
pub mod planner;
pub mod policy;
pub mod retry;
pub mod schedule;
pub mod stock;
pub mod token;
pub mod values;
