//! Entity ids. Each is a distinct type so a variant id can never be passed where a
//! product id is expected. The merchant's own identifiers (SKU, product external id)
//! are kept as given in [`crate::values`].

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($($name:ident),* $(,)?) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type!(
    StoreId,
    CategoryId,
    ProductId,
    VariantId,
    ShopperId,
    ContactPointId,
    SubscriptionId,
    RestockEventId,
    NotificationId,
    RejectionId,
);
