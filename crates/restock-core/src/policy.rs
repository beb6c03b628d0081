//! The merchant's rules for releasing a restock: the store's policy, a product's
//! override of how it is released, and their validation. Stored as JSON; every
//! timed setting is in seconds so short windows can be tried end to end.

use serde::{Deserialize, Serialize};

use crate::schedule::{FrequencyCap, QuietHours};
use crate::values::{Channel, Tier, TimeZone};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyError {
    pub field: &'static str,
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        field,
        reason: reason.into(),
    }
}

/// How a restock is released to its waiting list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "mode", deny_unknown_fields)]
pub enum Release {
    /// Everyone waiting is told at once.
    #[default]
    AllAtOnce,
    /// At most `shoppers_per_unit` shoppers per available unit per wave; the next
    /// wave after `interval_secs`, only while stock remains (re-read before each).
    Waves {
        shoppers_per_unit: u32,
        interval_secs: i64,
    },
}

/// Early access: during the first `window_secs` after a restock only shoppers of
/// these tiers are told (in this order of precedence), even if a wave has room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyAccess {
    pub tiers: Vec<String>,
    pub window_secs: i64,
}

/// How a product's restocks are released: the store's, or the product's override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReleasePolicy {
    #[serde(default, deserialize_with = "or_default")]
    pub release: Release,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_access: Option<EarlyAccess>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursSetting {
    /// Local time the quiet period starts, "HH:MM".
    pub start: String,
    /// Local time it ends, "HH:MM"; earlier than `start` when it crosses midnight.
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCapSetting {
    pub max_messages: u32,
    pub window_secs: i64,
}

/// A store's rules. Absent settings are off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorePolicy {
    #[serde(default, deserialize_with = "or_default")]
    pub release: Release,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_access: Option<EarlyAccess>,
    /// The store's time zone: quiet hours apply in it for shoppers with none.
    #[serde(default = "utc", deserialize_with = "or_utc")]
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHoursSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_cap: Option<FrequencyCapSetting>,
    /// Shoppers who bought the variant or product this recently are not told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_purchase_window_secs: Option<i64>,
    /// A sign-up expires this long after it was last made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interest_window_secs: Option<i64>,
    /// Share of each restock's eligible shoppers held out (never sent) to measure lift, 0–100.
    #[serde(default, deserialize_with = "or_default")]
    pub holdout_percent: f64,
    /// One reminder this long after an alert, if still in stock and neither clicked nor bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder_after_secs: Option<i64>,
    /// Channels in order of preference when a shopper has several (a shopper's own
    /// preferred channel comes first).
    #[serde(default = "default_channels", deserialize_with = "or_email")]
    pub channels: Vec<Channel>,
}

fn utc() -> String {
    "UTC".into()
}

/// `null` means the same as leaving the setting out.
fn or_default<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

fn or_utc<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(d).map(|o| o.unwrap_or_else(utc))
}

fn or_email<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Channel>, D::Error> {
    Option::<Vec<Channel>>::deserialize(d).map(|o| o.unwrap_or_else(default_channels))
}

fn default_channels() -> Vec<Channel> {
    vec![Channel::Email]
}

impl Default for StorePolicy {
    fn default() -> Self {
        StorePolicy {
            release: Release::default(),
            early_access: None,
            time_zone: utc(),
            quiet_hours: None,
            frequency_cap: None,
            recent_purchase_window_secs: None,
            interest_window_secs: None,
            holdout_percent: 0.0,
            reminder_after_secs: None,
            channels: default_channels(),
        }
    }
}

/// The largest timed setting: a year.
const MAX_SECS: i64 = 366 * 24 * 3600;

fn secs(field: &'static str, v: i64, min: i64) -> Result<(), PolicyError> {
    if v < min || v > MAX_SECS {
        return Err(err(field, format!("must be {min} to {MAX_SECS} seconds")));
    }
    Ok(())
}

impl ReleasePolicy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Release::Waves {
            shoppers_per_unit,
            interval_secs,
        } = &self.release
        {
            if !(1..=10_000).contains(shoppers_per_unit) {
                return Err(err("shoppers_per_unit", "must be 1 to 10000"));
            }
            secs("interval_secs", *interval_secs, 1)?;
        }
        if let Some(ea) = &self.early_access {
            if ea.tiers.is_empty() || ea.tiers.len() > 16 {
                return Err(err("early_access.tiers", "name 1 to 16 tiers"));
            }
            for t in &ea.tiers {
                Tier::parse(t).map_err(|e| err("early_access.tiers", e.to_string()))?;
            }
            secs("early_access.window_secs", ea.window_secs, 1)?;
        }
        Ok(())
    }

    /// Early-access tiers in canonical (lower-case) form.
    pub fn early_access_tiers(&self) -> Vec<String> {
        self.early_access
            .iter()
            .flat_map(|e| e.tiers.iter())
            .filter_map(|t| Tier::parse(t).ok())
            .map(|t| t.as_str().to_string())
            .collect()
    }
}

impl StorePolicy {
    /// The store's own release policy (what products without an override use).
    pub fn release_policy(&self) -> ReleasePolicy {
        ReleasePolicy {
            release: self.release.clone(),
            early_access: self.early_access.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        self.release_policy().validate()?;
        TimeZone::parse(&self.time_zone).map_err(|e| err("time_zone", e.to_string()))?;
        if let Some(q) = &self.quiet_hours
            && QuietHours::parse(&q.start, &q.end).is_none()
        {
            return Err(err("quiet_hours", "start and end must be HH:MM"));
        }
        if let Some(c) = &self.frequency_cap {
            if c.max_messages == 0 || c.max_messages > 1000 {
                return Err(err("frequency_cap.max_messages", "must be 1 to 1000"));
            }
            secs("frequency_cap.window_secs", c.window_secs, 1)?;
        }
        for (field, v) in [
            (
                "recent_purchase_window_secs",
                self.recent_purchase_window_secs,
            ),
            ("interest_window_secs", self.interest_window_secs),
            ("reminder_after_secs", self.reminder_after_secs),
        ] {
            if let Some(v) = v {
                secs(field, v, 1)?;
            }
        }
        if !(0.0..=100.0).contains(&self.holdout_percent) || self.holdout_percent.is_nan() {
            return Err(err("holdout_percent", "must be 0 to 100"));
        }
        if self.channels.is_empty() || self.channels.len() > Channel::ALL.len() {
            return Err(err("channels", "name 1 to 5 channels"));
        }
        Ok(())
    }

    /// The policy a restock of a product runs under: the store's, with the product's
    /// release override if it has one.
    pub fn for_product(&self, product_release: Option<&ReleasePolicy>) -> Policy {
        let own = self.release_policy();
        let release = product_release.unwrap_or(&own);
        Policy {
            release: release.release.clone(),
            early_access_tiers: release.early_access_tiers(),
            early_access_window_ms: release
                .early_access
                .as_ref()
                .map_or(0, |e| e.window_secs.saturating_mul(1000)),
            time_zone: TimeZone::parse(&self.time_zone).unwrap_or(TimeZone::UTC),
            quiet_hours: self
                .quiet_hours
                .as_ref()
                .and_then(|q| QuietHours::parse(&q.start, &q.end)),
            frequency_cap: self.frequency_cap.as_ref().map(|c| FrequencyCap {
                max_messages: c.max_messages,
                window_ms: c.window_secs.saturating_mul(1000),
            }),
            recent_purchase_window_ms: self
                .recent_purchase_window_secs
                .map(|s| s.saturating_mul(1000)),
            interest_window_ms: self.interest_window_secs.map(|s| s.saturating_mul(1000)),
            holdout_bps: (self.holdout_percent * 100.0).round().clamp(0.0, 10_000.0) as u32,
            reminder_after_ms: self.reminder_after_secs.map(|s| s.saturating_mul(1000)),
            channels: self.channels.clone(),
        }
    }
}

/// The resolved rules one restock runs under, snapshotted when it happens so a
/// policy edited mid-release does not change the rules halfway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub release: Release,
    pub early_access_tiers: Vec<String>,
    pub early_access_window_ms: i64,
    pub time_zone: TimeZone,
    pub quiet_hours: Option<QuietHours>,
    pub frequency_cap: Option<FrequencyCap>,
    pub recent_purchase_window_ms: Option<i64>,
    pub interest_window_ms: Option<i64>,
    /// Holdout share in basis points (1/100 of a percent).
    pub holdout_bps: u32,
    pub reminder_after_ms: Option<i64>,
    pub channels: Vec<Channel>,
}

impl Default for Policy {
    fn default() -> Self {
        StorePolicy::default().for_product(None)
    }
}

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TimeZone::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_round_trips_and_validates() {
        let json = r#"{"release":{"mode":"waves","shoppers_per_unit":2,"interval_secs":30},
            "early_access":{"tiers":["VIP"],"window_secs":3600},
            "time_zone":"Europe/Berlin","quiet_hours":{"start":"22:00","end":"08:00"},
            "frequency_cap":{"max_messages":2,"window_secs":86400},"holdout_percent":10}"#;
        let p: StorePolicy = serde_json::from_str(json).expect("parses");
        p.validate().expect("valid");
        let r = p.for_product(None);
        assert_eq!(r.early_access_tiers, vec!["vip".to_string()]);
        assert_eq!(r.holdout_bps, 1000);
        assert_eq!(r.quiet_hours.map(|q| q.start_minute), Some(22 * 60));
        let again: StorePolicy =
            serde_json::from_str(&serde_json::to_string(&p).expect("ser")).expect("de");
        assert_eq!(again, p);
        let resolved: Policy =
            serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
        assert_eq!(resolved, r);
    }

    #[test]
    fn null_settings_are_off() {
        let p: StorePolicy = serde_json::from_str(
            r#"{"release": null, "early_access": null, "time_zone": null, "quiet_hours": null,
                "frequency_cap": null, "holdout_percent": null, "channels": null}"#,
        )
        .expect("parses");
        assert_eq!(p, StorePolicy::default());
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let bad = StorePolicy {
            holdout_percent: 120.0,
            ..StorePolicy::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.field), Err("holdout_percent"));
        let bad = StorePolicy {
            time_zone: "Nowhere/Land".into(),
            ..StorePolicy::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.field), Err("time_zone"));
        let bad: Result<StorePolicy, _> = serde_json::from_str(r#"{"colour":"red"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn a_product_override_replaces_the_release_only() {
        let store = StorePolicy {
            holdout_percent: 5.0,
            ..StorePolicy::default()
        };
        let waves = ReleasePolicy {
            release: Release::Waves {
                shoppers_per_unit: 3,
                interval_secs: 60,
            },
            early_access: None,
        };
        let p = store.for_product(Some(&waves));
        assert_eq!(p.release, waves.release);
        assert_eq!(p.holdout_bps, 500);
    }
}
