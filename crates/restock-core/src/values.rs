//! Values parsed at the edge. Fields are private and constructors fallible: past the
//! edge, a value of one of these types is valid.

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    #[error("not a valid email address: {0}")]
    Email(String),
    #[error("a SKU must be 1 to 128 printable characters without spaces at either end")]
    Sku,
    #[error("a currency must be a three-letter ISO 4217 code such as EUR")]
    Currency,
    #[error("not an amount of {currency}: {input:?} (digits, at most {digits} after the point)")]
    Amount {
        currency: String,
        digits: u32,
        input: String,
    },
    #[error("not an absolute http(s) URL: {0}")]
    Url(String),
    #[error("a URL must not carry a user name or password: {0}")]
    UrlUserinfo(String),
    #[error("not a web origin (scheme://host[:port]): {0}")]
    Origin(String),
    #[error("a market is 1 to 32 of a-z, 0-9, '-' and '_': {0}")]
    Market(String),
    #[error("not an IANA time zone such as Europe/Berlin: {0}")]
    TimeZone(String),
    #[error("a tier is 1 to 32 of a-z, 0-9, '-' and '_': {0}")]
    Tier(String),
    #[error("unknown channel {0:?}: one of email, sms, push, in_app, webhook")]
    Channel(String),
}

/// An email address, trimmed and with its domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let trimmed = input.trim();
        if trimmed.len() > 254 || !email_address::EmailAddress::is_valid(trimmed) {
            return Err(ValueError::Email(truncate(trimmed)));
        }
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or_else(|| ValueError::Email(truncate(trimmed)))?;
        // Bare hosts ("a@localhost") and display-name forms are valid RFC 5322 but are
        // never what a shopper means in a sign-up box.
        if !domain.contains('.') || trimmed.contains(['<', '>', ' ']) {
            return Err(ValueError::Email(truncate(trimmed)));
        }
        // Only a dot-atom local part: quoted ones ("john..doe"@x) are valid RFC 5322
        // but most mail software, our own mailer included, cannot address them, so a
        // sign-up with one could never be told its item is back.
        if !is_dot_atom(local) || local.len() > 64 {
            return Err(ValueError::Email(truncate(trimmed)));
        }
        Ok(Email(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address's identity for matching shoppers: case-insensitive as a whole, so
    /// `Ann@X.test` and `ann@x.test` are one person. The spelling given is what is
    /// sent to; this key is only for finding the person.
    pub fn identity_key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A lower-case code naming a slug-like value (market, tier).
fn parse_code(input: &str) -> Option<String> {
    let s = input.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ok.then_some(s)
}

/// A market (a region a store sells to, served by some of its locations), e.g. `eu`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Market(String);

impl Market {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        parse_code(input)
            .map(Market)
            .ok_or_else(|| ValueError::Market(truncate(input)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A shopper's loyalty tier as the merchant names it, e.g. `vip`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tier(String);

impl Tier {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        parse_code(input)
            .map(Tier)
            .ok_or_else(|| ValueError::Tier(truncate(input)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub const UTC: TimeZone = TimeZone(chrono_tz::Tz::UTC);

    pub fn parse(input: &str) -> Result<Self, ValueError> {
        input
            .trim()
            .parse::<chrono_tz::Tz>()
            .map(TimeZone)
            .map_err(|_| ValueError::TimeZone(truncate(input)))
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Every zone name [`TimeZone::parse`] accepts.
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        chrono_tz::TZ_VARIANTS.iter().map(|t| t.name())
    }
}

/// How a message reaches a shopper. Email is sent today; the others are the
/// contact points the channel modules add.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    InApp,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::InApp,
        Channel::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::InApp => "in_app",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(input: &str) -> Result<Self, ValueError> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == input.trim())
            .ok_or_else(|| ValueError::Channel(truncate(input)))
    }
}

/// RFC 5322 dot-atom: atext runs separated by single dots.
fn is_dot_atom(s: &str) -> bool {
    const SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b) || b >= 0x80)
        })
}

/// A merchant's stock-keeping unit, kept exactly as given (after trimming).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let s = input.trim();
        if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
            return Err(ValueError::Sku);
        }
        Ok(Sku(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 currency code, upper-cased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let b = input.trim().as_bytes();
        if b.len() != 3 || !b.iter().all(u8::is_ascii_alphabetic) {
            return Err(ValueError::Currency);
        }
        Ok(Currency([
            b[0].to_ascii_uppercase(),
            b[1].to_ascii_uppercase(),
            b[2].to_ascii_uppercase(),
        ]))
    }

    pub fn as_str(&self) -> &str {
        // The bytes are checked ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Minor units per major unit. ISO 4217 zero-decimal currencies keep whole units.
    pub fn minor_digits(&self) -> u32 {
        match self.as_str() {
            "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" | "PYG" => 0,
            "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
            _ => 2,
        }
    }

    /// An amount written as a decimal string ("19.99", "1000", "1000.00" for JPY) in
    /// minor units, exactly: no float is involved. Digits after the point beyond the
    /// currency's minor digits are accepted only when they are zeros (Shopify writes
    /// "1000.00" for yen); anything else that cannot be held exactly is an error, as
    /// are signs, exponents, spaces and amounts beyond `i64`.
    pub fn parse_amount(&self, input: &str) -> Result<i64, ValueError> {
        let digits = self.minor_digits();
        let err = || ValueError::Amount {
            currency: self.as_str().to_string(),
            digits,
            input: truncate(input),
        };
        let (whole, fraction) = input.split_once('.').unwrap_or((input, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(err());
        }
        if input.contains('.') && fraction.is_empty() {
            return Err(err());
        }
        let (kept, dropped) = fraction.split_at(fraction.len().min(digits as usize));
        if dropped.bytes().any(|b| b != b'0') {
            return Err(err());
        }
        let mut minor: i64 = 0;
        let padded = kept
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(digits as usize);
        for b in whole.bytes().chain(padded) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(err)?;
        }
        Ok(minor)
    }

    /// Formats an amount held in minor units, e.g. `EUR 49.90`.
    pub fn format(&self, minor: i64) -> String {
        let digits = self.minor_digits();
        if digits == 0 {
            return format!("{} {}", self.as_str(), minor);
        }
        let scale = 10_i64.pow(digits);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!(
            "{} {sign}{}.{:0width$}",
            self.as_str(),
            abs / scale as u64,
            abs % scale as u64,
            width = digits as usize
        )
    }
}

/// An absolute http or https URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let url = url::Url::parse(input.trim()).map_err(|_| ValueError::Url(truncate(input)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ValueError::Url(truncate(input)));
        }
        // "https://shop.example@evil.example/" reads as the shop but leads elsewhere.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ValueError::UrlUserinfo(truncate(input)));
        }
        if input.len() > 2048 {
            return Err(ValueError::Url(truncate(input)));
        }
        Ok(HttpUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A web origin as a browser sends it in the `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let url = url::Url::parse(input.trim()).map_err(|_| ValueError::Origin(truncate(input)))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.path() != "/"
            || url.query().is_some()
        {
            return Err(ValueError::Origin(truncate(input)));
        }
        Ok(Origin(url.origin().ascii_serialization()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn email_normalises_domain_and_rejects_junk() {
        assert_eq!(
            Email::parse(" Ann@Example.COM ").map(|e| e.as_str().to_string()),
            Ok("Ann@example.com".to_string())
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@x.com",
            "ann@localhost",
            "Ann <ann@x.com>",
            "a b@x.com",
            "\"john..doe\"@example.com",
            "\"ann\"@example.com",
            "john..doe@example.com",
            ".ann@example.com",
            "ann.@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn email_identity_ignores_case_but_keeps_the_spelling() {
        let a = Email::parse("Ann.Lee@X.test").expect("valid");
        let b = Email::parse("ann.lee@x.TEST").expect("valid");
        assert_eq!(a.identity_key(), b.identity_key());
        assert_eq!(a.as_str(), "Ann.Lee@x.test");
    }

    #[test]
    fn codes_zones_and_channels_parse() {
        assert_eq!(Market::parse(" EU ").map(|m| m.0), Ok("eu".into()));
        assert!(Market::parse("e u").is_err());
        assert!(Tier::parse("").is_err());
        assert_eq!(
            TimeZone::parse("America/New_York").map(|t| t.name()),
            Ok("America/New_York")
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert_eq!(Channel::parse("in_app"), Ok(Channel::InApp));
        assert!(Channel::parse("fax").is_err());
    }

    #[test]
    fn currency_formats_minor_units() {
        let eur = Currency::parse("eur").expect("valid");
        assert_eq!(eur.format(4990), "EUR 49.90");
        assert_eq!(eur.format(5), "EUR 0.05");
        assert_eq!(
            Currency::parse("JPY").expect("valid").format(1200),
            "JPY 1200"
        );
        assert!(Currency::parse("EU").is_err());
        assert!(Currency::parse("E1R").is_err());
    }

    #[test]
    fn amounts_parse_exactly_into_minor_units() {
        let eur = Currency::parse("EUR").expect("valid");
        let jpy = Currency::parse("JPY").expect("valid");
        let kwd = Currency::parse("KWD").expect("valid");
        assert_eq!(eur.parse_amount("19.99"), Ok(1999));
        assert_eq!(eur.parse_amount("19.9"), Ok(1990));
        assert_eq!(eur.parse_amount("199"), Ok(19900));
        assert_eq!(eur.parse_amount("0.10"), Ok(10));
        assert_eq!(eur.parse_amount("199.000"), Ok(19900));
        // 0.1 + 0.2 style float drift cannot happen: 0.29 is 29 cents exactly.
        assert_eq!(eur.parse_amount("0.29"), Ok(29));
        assert_eq!(eur.parse_amount("1234567.89"), Ok(123_456_789));
        assert_eq!(jpy.parse_amount("1000.00"), Ok(1000));
        assert_eq!(jpy.parse_amount("1000"), Ok(1000));
        assert_eq!(kwd.parse_amount("1.5"), Ok(1500));
        assert_eq!(kwd.parse_amount("1.234"), Ok(1234));
        for bad in [
            "",
            ".",
            "19.",
            ".99",
            "-1.00",
            "+1.00",
            "1e3",
            "1,00",
            " 1.00",
            "1.00 ",
            "19.999",
            "0x10",
            "１.00",
            "92233720368547758.08",
        ] {
            assert!(eur.parse_amount(bad).is_err(), "{bad:?}");
        }
        assert!(
            jpy.parse_amount("1000.50").is_err(),
            "yen has no minor unit"
        );
        assert!(kwd.parse_amount("1.2345").is_err());
        assert_eq!(eur.parse_amount("92233720368547758.07"), Ok(i64::MAX));
    }

    #[test]
    fn origin_is_scheme_host_port_only() {
        assert_eq!(
            Origin::parse("https://Shop.Example:8443").map(|o| o.as_str().to_string()),
            Ok("https://shop.example:8443".to_string())
        );
        assert!(Origin::parse("https://shop.example/path").is_err());
        assert!(Origin::parse("ftp://shop.example").is_err());
    }

    #[test]
    fn urls_with_userinfo_are_refused() {
        assert!(HttpUrl::parse("https://shop.example/p/1").is_ok());
        for bad in [
            "https://shop.example@evil.example/",
            "https://user:pw@shop.example/",
            "https://:pw@shop.example/",
        ] {
            assert!(
                matches!(HttpUrl::parse(bad), Err(ValueError::UrlUserinfo(_))),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn email_parse_never_panics_and_is_idempotent(s in ".{0,80}") {
            if let Ok(e) = Email::parse(&s) {
                let again = Email::parse(e.as_str());
                prop_assert_eq!(again, Ok(e));
            }
        }

        #[test]
        fn sku_parse_is_idempotent(s in ".{0,140}") {
            if let Ok(sku) = Sku::parse(&s) {
                prop_assert_eq!(Sku::parse(sku.as_str()), Ok(sku.clone()));
                prop_assert!(!sku.as_str().is_empty());
            }
        }

        #[test]
        fn amounts_round_trip_through_their_written_form(minor in 0_i64..1_000_000_000_000_000, code in prop::sample::select(vec!["EUR", "JPY", "KWD", "USD"])) {
            let c = Currency::parse(code).expect("valid");
            let written = c.format(minor);
            let number = written.split_once(' ').map(|(_, n)| n).unwrap_or_default();
            prop_assert_eq!(c.parse_amount(number), Ok(minor));
        }

        #[test]
        fn amount_parse_never_panics(s in "[0-9.+-e ]{0,30}") {
            let eur = Currency::parse("EUR").expect("valid");
            if let Ok(minor) = eur.parse_amount(&s) {
                prop_assert!(minor >= 0);
                prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
            }
        }

        #[test]
        fn url_parse_accepts_only_http(s in ".{0,60}") {
            if let Ok(u) = HttpUrl::parse(&s) {
                prop_assert!(u.as_str().starts_with("http://") || u.as_str().starts_with("https://"));
            }
        }
    }
}
