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
    #[error("not an absolute http(s) URL: {0}")]
    Url(String),
    #[error("a URL must not carry a user name or password: {0}")]
    UrlUserinfo(String),
    #[error("not a web origin (scheme://host[:port]): {0}")]
    Origin(String),
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
        fn url_parse_accepts_only_http(s in ".{0,60}") {
            if let Ok(u) = HttpUrl::parse(&s) {
                prop_assert!(u.as_str().starts_with("http://") || u.as_str().starts_with("https://"));
            }
        }
    }
}
