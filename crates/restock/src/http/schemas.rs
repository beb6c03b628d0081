//! Documented shapes for values whose rules live in the domain core, so the OpenAPI
//! document states exactly what the server accepts: IANA time zones, channels, and
//! the store's policy (`restock_core::policy`), which the handlers parse as such.

use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// An IANA time zone name, e.g. `Europe/Berlin`.
pub struct TimeZoneName;

impl utoipa::PartialSchema for TimeZoneName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An IANA time zone, e.g. Europe/Berlin"))
            .enum_values(Some(restock_core::values::TimeZone::all_names()))
            .into()
    }
}

impl ToSchema for TimeZoneName {}

/// A channel a message can go by.
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ChannelName {
    Email,
    Sms,
    Push,
    InApp,
    Webhook,
}

/// How a restock is released.
#[derive(serde::Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
pub enum ReleaseBody {
    /// Everyone waiting is told at once.
    AllAtOnce,
    /// At most `shoppers_per_unit` shoppers per available unit per wave; the next
    /// wave after `interval_secs`, only while stock remains.
    Waves {
        #[schema(minimum = 1, maximum = 10000)]
        shoppers_per_unit: u32,
        #[schema(minimum = 1, maximum = 31622400)]
        interval_secs: i64,
    },
}

/// Early access: shoppers of these tiers first, and alone for `window_secs`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EarlyAccessBody {
    #[schema(min_items = 1, max_items = 16, inline)]
    tiers: Vec<TierName>,
    #[schema(minimum = 1, maximum = 31622400)]
    window_secs: i64,
}

/// A loyalty tier name (compared case-insensitively).
#[derive(serde::Deserialize, ToSchema)]
#[schema(pattern = "^[A-Za-z0-9_-]{1,32}$")]
#[allow(dead_code)]
pub struct TierName(String);

/// A product's override of how its restocks are released.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ReleasePolicyBody {
    release: Option<ReleaseBody>,
    early_access: Option<EarlyAccessBody>,
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct QuietHoursBody {
    /// Local time the quiet period starts.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    start: String,
    /// Local time it ends; earlier than `start` when it crosses midnight.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    end: String,
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FrequencyCapBody {
    #[schema(minimum = 1, maximum = 1000)]
    max_messages: u32,
    #[schema(minimum = 1, maximum = 31622400)]
    window_secs: i64,
}

/// The store's rules for releasing restocks (every setting optional; absent is off).
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PolicyBody {
    release: Option<ReleaseBody>,
    early_access: Option<EarlyAccessBody>,
    #[schema(value_type = Option<TimeZoneName>)]
    time_zone: Option<String>,
    quiet_hours: Option<QuietHoursBody>,
    frequency_cap: Option<FrequencyCapBody>,
    #[schema(minimum = 1, maximum = 31622400)]
    recent_purchase_window_secs: Option<i64>,
    #[schema(minimum = 1, maximum = 31622400)]
    interest_window_secs: Option<i64>,
    #[schema(minimum = 0, maximum = 100)]
    holdout_percent: Option<f64>,
    #[schema(minimum = 1, maximum = 31622400)]
    reminder_after_secs: Option<i64>,
    #[schema(min_items = 1, max_items = 5)]
    channels: Option<Vec<ChannelName>>,
}
