//! Planning policy: who a restock event notifies.
//!
//! A restock of a variant notifies every subscription that is still waiting and
//! targets that variant, or targets its product without naming a variant, unless the
//! subscriber's address is suppressed or the subscription already has a notification
//! in flight (a product-level subscription whose sibling variant restocked a moment
//! ago gets one message, not two). Each plan is keyed by (subscription, restock
//! event): planning the same event twice adds nothing.
//!
//! Storage runs this rule as one set-based statement over the indexes of that
//! variant's waiting list, so the cost grows with the waiting list and not with the
//! catalog; [`eligible`] is the same rule over plain data, which the storage tests use
//! as the reference model.

use crate::ids::{ProductId, RestockEventId, SubscriptionId, VariantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    /// Waiting for a restock.
    Waiting,
    /// A notification went out; the subscription is fulfilled.
    Notified,
    /// The shopper unsubscribed.
    Unsubscribed,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Waiting => "waiting",
            SubscriptionStatus::Notified => "notified",
            SubscriptionStatus::Unsubscribed => "unsubscribed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "waiting" => Some(SubscriptionStatus::Waiting),
            "notified" => Some(SubscriptionStatus::Notified),
            "unsubscribed" => Some(SubscriptionStatus::Unsubscribed),
            _ => None,
        }
    }
}

/// What the planner needs to know of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: SubscriptionId,
    pub product: ProductId,
    /// `None` for a product-level subscription (any variant).
    pub variant: Option<VariantId>,
    pub status: SubscriptionStatus,
    pub subscriber_suppressed: bool,
    pub has_notification_in_flight: bool,
}

/// The restock being planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestockView {
    pub id: RestockEventId,
    pub product: ProductId,
    pub variant: VariantId,
}

pub fn eligible(sub: &SubscriptionView, restock: &RestockView) -> bool {
    let targets =
        sub.product == restock.product && sub.variant.is_none_or(|v| v == restock.variant);
    targets
        && sub.status == SubscriptionStatus::Waiting
        && !sub.subscriber_suppressed
        && !sub.has_notification_in_flight
}

/// The uniqueness key of a plan.
pub fn plan_key(sub: SubscriptionId, restock: RestockEventId) -> (SubscriptionId, RestockEventId) {
    (sub, restock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(variant: Option<i64>) -> SubscriptionView {
        SubscriptionView {
            id: SubscriptionId(1),
            product: ProductId(10),
            variant: variant.map(VariantId),
            status: SubscriptionStatus::Waiting,
            subscriber_suppressed: false,
            has_notification_in_flight: false,
        }
    }

    const R: RestockView = RestockView {
        id: RestockEventId(7),
        product: ProductId(10),
        variant: VariantId(100),
    };

    #[test]
    fn variant_and_product_level_subscriptions_match() {
        assert!(eligible(&sub(Some(100)), &R));
        assert!(eligible(&sub(None), &R));
        assert!(!eligible(&sub(Some(101)), &R));
        let other_product = SubscriptionView {
            product: ProductId(11),
            ..sub(None)
        };
        assert!(!eligible(&other_product, &R));
    }

    #[test]
    fn suppressed_notified_and_in_flight_are_skipped() {
        assert!(!eligible(
            &SubscriptionView {
                subscriber_suppressed: true,
                ..sub(None)
            },
            &R
        ));
        assert!(!eligible(
            &SubscriptionView {
                status: SubscriptionStatus::Notified,
                ..sub(None)
            },
            &R
        ));
        assert!(!eligible(
            &SubscriptionView {
                status: SubscriptionStatus::Unsubscribed,
                ..sub(None)
            },
            &R
        ));
        assert!(!eligible(
            &SubscriptionView {
                has_notification_in_flight: true,
                ..sub(None)
            },
            &R
        ));
    }
}
