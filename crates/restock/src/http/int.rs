//! Integers in JSON bodies. JSON Schema counts `9600.0` as an integer, and so do
//! clients whose numbers are all floats (JavaScript); serde does not. These accept
//! any JSON number with no fractional part within ±2^53.

use serde::{Deserialize, Deserializer};

fn to_i64<E: serde::de::Error>(n: serde_json::Number) -> Result<i64, E> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Ok(f as i64),
        _ => Err(E::custom(format!("expected an integer, found {n}"))),
    }
}

pub fn req<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    to_i64(serde_json::Number::deserialize(d)?)
}

pub fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(to_i64)
        .transpose()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::req")]
        a: i64,
        #[serde(default, deserialize_with = "super::opt")]
        b: Option<i64>,
    }

    #[test]
    fn integral_floats_are_integers() {
        let t: T = serde_json::from_str(r#"{"a": 9600.0, "b": null}"#).expect("parses");
        assert_eq!((t.a, t.b), (9600, None));
        let t: T = serde_json::from_str(r#"{"a": -3, "b": 2e3}"#).expect("parses");
        assert_eq!((t.a, t.b), (-3, Some(2000)));
        assert!(serde_json::from_str::<T>(r#"{"a": 1.5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": "1"}"#).is_err());
    }
}
