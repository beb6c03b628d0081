//! HMAC-signed tokens for links in messages (click tracking, unsubscribe).
//!
//! A token is `<id>.<signature>` where the signature is the first 16 bytes of
//! HMAC-SHA256(key, purpose ":" id), base64url without padding. The purpose is part
//! of the signed text, so a click token can never be used to unsubscribe. The id is
//! not secret; only the key holder can mint a token for it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SIG_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Click,
    Unsubscribe,
    /// Cancelling a sign-up before a restock (the id is the subscription's).
    Cancel,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Click => "click",
            Purpose::Unsubscribe => "unsubscribe",
            Purpose::Cancel => "cancel",
        }
    }
}

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { key: <redacted> }")
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Signer { key: key.to_vec() }
    }

    fn mac(&self, purpose: Purpose, id: i64) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(purpose.tag().as_bytes());
        mac.update(b":");
        mac.update(id.to_string().as_bytes());
        mac
    }

    pub fn sign(&self, purpose: Purpose, id: i64) -> String {
        let tag = self.mac(purpose, id).finalize().into_bytes();
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(&tag[..SIG_LEN]))
    }

    /// The id in `token` if its signature is valid for `purpose`.
    pub fn verify(&self, purpose: Purpose, token: &str) -> Option<i64> {
        let (id, sig) = token.split_once('.')?;
        let id: i64 = id.parse().ok()?;
        if id.to_string().len() != token.find('.')? {
            return None; // "+5" or "007" would parse but were never minted
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if sig.len() != SIG_LEN {
            return None;
        }
        self.mac(purpose, id).verify_truncated_left(&sig).ok()?;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_are_bound_to_key_and_purpose() {
        let s = Signer::new(b"k1");
        let t = s.sign(Purpose::Click, 42);
        assert_eq!(s.verify(Purpose::Click, &t), Some(42));
        assert_eq!(s.verify(Purpose::Unsubscribe, &t), None);
        assert_eq!(Signer::new(b"k2").verify(Purpose::Click, &t), None);
        let forged = t.replacen("42.", "43.", 1);
        assert_eq!(s.verify(Purpose::Click, &forged), None);
    }

    proptest! {
        #[test]
        fn any_tampering_is_rejected(id in any::<i64>(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let s = Signer::new(b"secret");
            let t = s.sign(Purpose::Unsubscribe, id);
            prop_assert_eq!(s.verify(Purpose::Unsubscribe, &t), Some(id));
            let mut bytes = t.clone().into_bytes();
            let i = pos.index(bytes.len());
            if bytes[i] != byte {
                bytes[i] = byte;
                if let Ok(tampered) = String::from_utf8(bytes) {
                    prop_assert_eq!(s.verify(Purpose::Unsubscribe, &tampered), None);
                }
            }
        }
    }
}
