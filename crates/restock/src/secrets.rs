//! Secrets at rest: Shopify webhook secrets and the link-signing key are stored
//! encrypted with a key from the configuration (`secrets.key`), AES-256-GCM.
//!
//! A sealed value reads `enc:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, where the
//! key id is the first 8 hex digits of SHA-256 of the key, so a value names the key
//! that opens it. `secrets.previous_keys` still open values sealed with an older key;
//! `restock secrets rotate` re-seals everything with the current one. Values without
//! the prefix are legacy clear text: they are read as they are and sealed at the next
//! rotation (and at start, for the link-signing key). With no key configured values
//! are stored in clear and a warning is logged at start.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::SecretsConfig;

const PREFIX: &str = "enc:v1:";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secrets.key must be 32 bytes, base64-encoded ({0})")]
    BadKey(String),
    #[error(
        "a stored secret was sealed with key {0}, which is not configured (secrets.key or secrets.previous_keys)"
    )]
    UnknownKey(String),
    #[error("a stored secret does not open with its key (tampered or truncated)")]
    Corrupt,
    #[error("a stored secret is encrypted but no secrets.key is configured")]
    NoKey,
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens secrets with the configured keys.
pub struct SecretBox {
    current: Option<Key>,
    previous: Vec<Key>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn parse_key(b64: &str) -> Result<Key, SecretError> {
    let raw = STANDARD
        .decode(b64.trim())
        .map_err(|e| SecretError::BadKey(e.to_string()))?;
    if raw.len() != 32 {
        return Err(SecretError::BadKey(format!("{} bytes", raw.len())));
    }
    let id = hex::encode(&Sha256::digest(&raw)[..4]);
    let key =
        UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SecretError::BadKey("rejected".into()))?;
    Ok(Key {
        id,
        key: LessSafeKey::new(key),
    })
}

impl SecretBox {
    pub fn from_config(c: &SecretsConfig) -> Result<SecretBox, SecretError> {
        let current = Some(c.key.expose_secret())
            .filter(|k| !k.trim().is_empty())
            .map(parse_key)
            .transpose()?;
        let previous = c
            .previous_keys
            .iter()
            .map(|k| parse_key(k.expose_secret()))
            .collect::<Result<_, _>>()?;
        Ok(SecretBox { current, previous })
    }

    /// No key: values are kept in clear.
    pub fn is_plaintext(&self) -> bool {
        self.current.is_none()
    }

    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// Whether `value` is already sealed with the current key (nothing to rotate).
    pub fn is_current(&self, value: &str) -> bool {
        match &self.current {
            None => !Self::is_sealed(value),
            Some(k) => value
                .strip_prefix(PREFIX)
                .is_some_and(|rest| rest.split(':').next() == Some(k.id.as_str())),
        }
    }

    /// Seals `plain` for the column or row named by `context` (bound into the tag,
    /// so a sealed value cannot be moved to another purpose). Clear text if no key.
    pub fn seal(&self, context: &str, plain: &str) -> String {
        let Some(k) = &self.current else {
            return plain.to_string();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let mut buf = plain.as_bytes().to_vec();
        // Sealing with a valid key and a fresh nonce cannot fail.
        if k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            unreachable!("AES-GCM sealing with a valid key does not fail");
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}:{}", k.id, STANDARD.encode(out))
    }

    /// Opens a value stored by [`seal`](Self::seal) (or legacy clear text).
    pub fn open(&self, context: &str, stored: &str) -> Result<String, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, data) = rest.split_once(':').ok_or(SecretError::Corrupt)?;
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                if self.current.is_none() && self.previous.is_empty() {
                    SecretError::NoKey
                } else {
                    SecretError::UnknownKey(id.to_string())
                }
            })?;
        let raw = STANDARD.decode(data).map_err(|_| SecretError::Corrupt)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Corrupt);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Corrupt)?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SecretError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Corrupt)
    }
}

/// Re-seals every stored secret with the current key; returns how many changed.
pub async fn rotate(db: &crate::storage::Db, secrets: &SecretBox) -> anyhow::Result<usize> {
    let mut changed = 0;
    for which in crate::storage::stores::WebhookSecret::ALL {
        let context = which.column();
        for (store, stored) in db.webhook_secrets(which).await? {
            if secrets.is_current(&stored) {
                continue;
            }
            let plain = secrets
                .open(context, &stored)
                .map_err(|e| anyhow::anyhow!("store {store}: {e}"))?;
            if db
                .reseal_webhook_secret(which, store, &stored, &secrets.seal(context, &plain))
                .await?
            {
                changed += 1;
            }
        }
    }
    for (id, store, name, stored) in db.source_configs().await? {
        if secrets.is_current(&stored) {
            continue;
        }
        let context = crate::intake::source::seal_context(store, &name);
        let plain = secrets
            .open(&context, &stored)
            .map_err(|e| anyhow::anyhow!("source {name:?} of store {store}: {e}"))?;
        if db
            .reseal_source(id, &stored, &secrets.seal(&context, &plain))
            .await?
        {
            changed += 1;
        }
    }
    const LINK: &str = "link_signing_key";
    let stored = db
        .instance_secret(LINK, &secrets.seal(LINK, &crate::util::random_token(32)))
        .await?;
    if !secrets.is_current(&stored) {
        let plain = secrets
            .open(LINK, &stored)
            .map_err(|e| anyhow::anyhow!("{LINK}: {e}"))?;
        db.set_instance_secret(LINK, &secrets.seal(LINK, &plain))
            .await?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str, previous: &[&str]) -> SecretsConfig {
        SecretsConfig {
            key: key.to_string().into(),
            previous_keys: previous.iter().map(|k| k.to_string().into()).collect(),
        }
    }

    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn seals_opens_and_rotates() {
        let a = SecretBox::from_config(&config(A, &[])).expect("key");
        let sealed = a.seal("shopify_secret", "shpss_hush");
        assert!(!sealed.contains("hush"), "{sealed}");
        assert_ne!(
            sealed,
            a.seal("shopify_secret", "shpss_hush"),
            "fresh nonce each time"
        );
        assert_eq!(
            a.open("shopify_secret", &sealed).expect("opens"),
            "shpss_hush"
        );
        // Bound to its purpose.
        assert!(a.open("link_signing_key", &sealed).is_err());
        // The next key still opens it while the old one is listed as previous.
        let b = SecretBox::from_config(&config(B, &[A])).expect("keys");
        assert!(!b.is_current(&sealed));
        assert_eq!(
            b.open("shopify_secret", &sealed).expect("opens"),
            "shpss_hush"
        );
        let resealed = b.seal("shopify_secret", "shpss_hush");
        assert!(b.is_current(&resealed));
        // Without the old key, the old value no longer opens.
        let b_only = SecretBox::from_config(&config(B, &[])).expect("key");
        assert!(matches!(
            b_only.open("shopify_secret", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
        assert_eq!(
            b_only.open("shopify_secret", &resealed).expect("opens"),
            "shpss_hush"
        );
        // Tampering is detected.
        let mut t = resealed.clone();
        t.replace_range(
            t.len() - 3..t.len() - 2,
            if &t[t.len() - 3..t.len() - 2] == "A" {
                "B"
            } else {
                "A"
            },
        );
        assert!(b_only.open("shopify_secret", &t).is_err());
    }

    #[test]
    fn clear_text_without_a_key_and_bad_keys_refused() {
        let none = SecretBox::from_config(&config("", &[])).expect("no key");
        assert_eq!(none.seal("x", "plain"), "plain");
        assert_eq!(none.open("x", "plain").expect("legacy"), "plain");
        assert!(SecretBox::from_config(&config("c2hvcnQ=", &[])).is_err());
    }
}
