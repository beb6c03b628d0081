//! Who is calling: a merchant (API key, bearer), or the operator (admin token).
//!
//! Failed attempts are logged (client address and at most the key's public prefix,
//! never the key) and counted per client address: past
//! `http.auth_failures_per_minute` in a minute the client is answered
//! `429 too_many_attempts` with `Retry-After` until the minute is over, without the
//! key being looked up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use restock_core::ids::StoreId;
use secrecy::ExposeSecret;

use super::error::{ApiError, ErrorCode};
use crate::app::App;

/// The store whose API key authenticated the request. Every merchant handler takes
/// this and scopes every query by it.
pub struct Merchant(pub StoreId);

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The client's address: the configured proxy header's first entry, else the peer.
pub fn client_ip(parts: &Parts, header_name: &str) -> Option<IpAddr> {
    if !header_name.is_empty()
        && let Some(ip) = parts
            .headers
            .get(header_name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Counts failed authentications per client address in fixed one-minute windows.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

/// Entries kept at most; older windows are dropped first when full.
const MAX_TRACKED: usize = 100_000;

impl AuthThrottle {
    /// Seconds until `ip` may try again, if it is over `limit` in this minute.
    pub fn blocked_for(&self, ip: IpAddr, limit: u32, now_ms: i64) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = windows.get(&ip)?;
        let left = start + 60_000 - now_ms;
        (left > 0 && *count >= limit).then(|| (left as u64).div_ceil(1000))
    }

    /// Records one failure; returns the failures counted in this window.
    pub fn fail(&self, ip: IpAddr, now_ms: i64) -> u32 {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| *start + 60_000 > now_ms);
        }
        let entry = windows.entry(ip).or_insert((now_ms, 0));
        if entry.0 + 60_000 <= now_ms {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
        entry.1
    }
}

/// Why authentication was refused.
pub enum AuthRejection {
    Error(ApiError),
    Throttled(u64),
}

impl From<ApiError> for AuthRejection {
    fn from(e: ApiError) -> Self {
        AuthRejection::Error(e)
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Error(e) => e.into_response(),
            AuthRejection::Throttled(secs) => {
                let mut resp = ApiError::new(
                    ErrorCode::TooManyAttempts,
                    format!("too many failed attempts from this address; retry in {secs} s"),
                )
                .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                resp
            }
        }
    }
}

fn check_throttle(app: &App, ip: Option<IpAddr>) -> Result<(), AuthRejection> {
    let limit = app.config.http.auth_failures_per_minute;
    match ip.and_then(|ip| app.auth_throttle.blocked_for(ip, limit, app.now())) {
        Some(secs) => Err(AuthRejection::Throttled(secs)),
        None => Ok(()),
    }
}

fn record_failure(app: &App, ip: Option<IpAddr>, what: &str, given: Option<&str>) {
    let failures = ip.map_or(0, |ip| app.auth_throttle.fail(ip, app.now()));
    // Only a key's public prefix ("rk_" and five more) is logged, never the key.
    let prefix: String = given.unwrap_or("").chars().take(8).collect();
    tracing::warn!(
        client = ip.map(|i| i.to_string()).unwrap_or_default(),
        credential = what,
        key_prefix = %prefix,
        failures_this_minute = failures,
        "authentication failed"
    );
}

impl FromRequestParts<App> for Merchant {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, AuthRejection> {
        let ip = client_ip(parts, &app.config.http.client_ip_header);
        check_throttle(app, ip)?;
        let Some(key) = bearer(parts) else {
            record_failure(app, ip, "api_key", None);
            return Err(ApiError::unauthorized(
                "send the store's API key as: Authorization: Bearer rk_...",
            )
            .into());
        };
        match app
            .db
            .store_for_api_key(key)
            .await
            .map_err(ApiError::from)?
        {
            Some(store) => {
                tracing::Span::current().record("store", store.0);
                Ok(Merchant(store))
            }
            None => {
                record_failure(app, ip, "api_key", Some(key));
                Err(ApiError::unauthorized("unknown or revoked API key").into())
            }
        }
    }
}

/// The operator, authenticated with `admin_token`.
pub struct Operator;

impl FromRequestParts<App> for Operator {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, AuthRejection> {
        let expected = app.config.admin_token.expose_secret();
        if expected.is_empty() {
            return Err(ApiError::new(
                ErrorCode::AdminDisabled,
                "the admin API is off: set admin_token to enable it",
            )
            .into());
        }
        let ip = client_ip(parts, &app.config.http.client_ip_header);
        check_throttle(app, ip)?;
        let given = bearer(parts).unwrap_or_default();
        // Compare digests so the comparison time does not depend on the secret.
        let same = crate::util::sha256_hex(given) == crate::util::sha256_hex(expected);
        if same {
            Ok(Operator)
        } else {
            record_failure(app, ip, "admin_token", None);
            Err(ApiError::unauthorized("invalid admin token").into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_per_address_per_minute() {
        let t = AuthThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(t.blocked_for(a, 3, 1_000), None);
            t.fail(a, 1_000);
        }
        assert_eq!(t.blocked_for(a, 3, 1_500), Some(60));
        assert_eq!(t.blocked_for(b, 3, 1_500), None);
        assert_eq!(t.blocked_for(a, 3, 61_000), None, "a new minute");
    }
}
