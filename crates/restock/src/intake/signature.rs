//! Webhook signatures as Shopify and WooCommerce both make them:
//! base64(HMAC-SHA256(shared secret, raw request body)), sent in a header. The body
//! is verified before it is parsed; a bad or missing signature applies nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Whether `signature_b64` is the signature of `body` under `secret`. Compared in
/// constant time.
pub fn verify(secret: &str, body: &[u8], signature_b64: &str) -> bool {
    let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The signature of `body`, as the platform would send it (tests and replay use this).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}
