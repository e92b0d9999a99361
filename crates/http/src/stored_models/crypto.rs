//! Credentials at rest, as LiteLLM encrypts them, so that a LiteLLM database's models decrypt
//! here and ours there.
//!
//! Written: NaCl's secret box (XSalsa20-Poly1305) under the SHA-256 of `LITELLM_SALT_KEY`,
//! stored as URL-safe base64 of nonce (24 bytes) || tag || ciphertext: the format every
//! LiteLLM release reads. Read: that (URL-safe or standard base64), and the AES-256-GCM
//! values newer LiteLLM releases write, `v2:gcm:` (key: SHA-256 of the salt key) and
//! `v3:gcm:` (key: HKDF-SHA256 of the salt key, info `litellm-at-rest-v3`), both
//! URL-safe base64 of nonce (12 bytes) || ciphertext || tag.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use sha2::{Digest, Sha256};

const V3_GCM: &str = "v3:gcm:";
const V2_GCM: &str = "v2:gcm:";
const HKDF_INFO: &[u8] = b"litellm-at-rest-v3";
const NACL_NONCE_BYTES: usize = 24;
const GCM_NONCE_BYTES: usize = 12;

/// Why a stored value did not decrypt: not a ciphertext, or one made with another key.
#[derive(Debug, thiserror::Error)]
#[error("not a value encrypted with this LITELLM_SALT_KEY")]
pub struct NotDecryptable;

/// The keys derived from `LITELLM_SALT_KEY`. Prints as `[redacted]`.
#[derive(Clone)]
pub struct SaltKey {
    /// SHA-256 of the salt key: the secret box's key and `v2:gcm:`'s.
    sha256: [u8; 32],
    /// HKDF-SHA256 of the salt key: `v3:gcm:`'s.
    hkdf: [u8; 32],
}

impl std::fmt::Debug for SaltKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SaltKey {
    pub fn new(salt_key: &str) -> Self {
        let sha256: [u8; 32] = Sha256::digest(salt_key.as_bytes()).into();
        // No salt: HKDF's extract then keys HMAC with zeros, as `cryptography`'s HKDF does.
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(salt_key.as_bytes());
        let mut hkdf = [0u8; 32];
        let expanded = prk.expand(&[HKDF_INFO], ring::hkdf::HKDF_SHA256);
        // Expanding 32 bytes of SHA-256 output cannot fail (the limit is 255 blocks).
        if let Ok(okm) = expanded {
            let _ = okm.fill(&mut hkdf);
        }
        Self { sha256, hkdf }
    }

    /// Encrypts with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &str) -> String {
        self.encrypt_with_nonce(plaintext, rand::random())
    }

    fn encrypt_with_nonce(&self, plaintext: &str, nonce: [u8; NACL_NONCE_BYTES]) -> String {
        let cipher = XSalsa20Poly1305::new(&self.sha256.into());
        // Encryption fails only for inputs beyond the cipher's limits (2^38 bytes).
        let sealed = cipher.encrypt(&Nonce::from(nonce), plaintext.as_bytes()).unwrap_or_default();
        let mut stored = Vec::with_capacity(NACL_NONCE_BYTES + sealed.len());
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&sealed);
        URL_SAFE.encode(stored)
    }

    /// Decrypts a value in any of the formats LiteLLM writes.
    pub fn decrypt(&self, stored: &str) -> Result<String, NotDecryptable> {
        let bytes = if let Some(encoded) = stored.strip_prefix(V3_GCM) {
            open_gcm(&self.hkdf, encoded)?
        } else if let Some(encoded) = stored.strip_prefix(V2_GCM) {
            open_gcm(&self.sha256, encoded)?
        } else {
            let raw =
                URL_SAFE.decode(stored).or_else(|_| STANDARD.decode(stored)).map_err(|_| NotDecryptable)?;
            // Nonce and tag at least: shorter is no ciphertext (and "" must not pass).
            if raw.len() < NACL_NONCE_BYTES + 16 {
                return Err(NotDecryptable);
            }
            let (nonce, sealed) = raw.split_at(NACL_NONCE_BYTES);
            let nonce: [u8; NACL_NONCE_BYTES] = nonce.try_into().map_err(|_| NotDecryptable)?;
            XSalsa20Poly1305::new(&self.sha256.into())
                .decrypt(&Nonce::from(nonce), sealed)
                .map_err(|_| NotDecryptable)?
        };
        String::from_utf8(bytes).map_err(|_| NotDecryptable)
    }
}

fn open_gcm(key: &[u8; 32], encoded: &str) -> Result<Vec<u8>, NotDecryptable> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as GcmNonce, UnboundKey};
    let mut raw = URL_SAFE.decode(encoded).map_err(|_| NotDecryptable)?;
    if raw.len() < GCM_NONCE_BYTES + AES_256_GCM.tag_len() {
        return Err(NotDecryptable);
    }
    let mut sealed = raw.split_off(GCM_NONCE_BYTES);
    let nonce = GcmNonce::try_assume_unique_for_key(&raw).map_err(|_| NotDecryptable)?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| NotDecryptable)?);
    let plaintext = key.open_in_place(nonce, Aad::empty(), &mut sealed).map_err(|_| NotDecryptable)?;
    Ok(plaintext.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "tollgate-test-salt";
    const SECRET: &str = "sk-upstream-secret-42";

    // Made with PyNaCl and `cryptography` (LiteLLM's own libraries), nonce 0, 1, 2, …
    const NACL: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXWXdcMT7bkwpUpJ63xMj2qkZdLp_FE8-fzsGv-kLfivIihOFVBg==";
    const V3: &str = "v3:gcm:AAECAwQFBgcICQoL47zzKB99PeEhtnkxUTvR2d1JxaoSDeCPMRR5-sGjQJMKxhYHsQ==";
    const V2: &str = "v2:gcm:AAECAwQFBgcICQoLk3sjlDvPgZre-JUcKHStRZsZctr-PBv4Zp9RDGdKQbGSdAPNPg==";

    #[test]
    fn writes_what_pynacl_writes() {
        let nonce: [u8; 24] = std::array::from_fn(|i| i as u8);
        assert_eq!(SaltKey::new(SALT).encrypt_with_nonce(SECRET, nonce), NACL);
    }

    #[test]
    fn reads_every_litellm_format() {
        let key = SaltKey::new(SALT);
        for stored in [NACL, V3, V2] {
            assert_eq!(key.decrypt(stored).unwrap(), SECRET, "{stored}");
        }
        let standard = STANDARD.encode(URL_SAFE.decode(NACL).unwrap());
        assert_eq!(key.decrypt(&standard).unwrap(), SECRET);
    }

    #[test]
    fn a_round_trip_uses_fresh_nonces_and_other_keys_fail() {
        let key = SaltKey::new(SALT);
        let (one, two) = (key.encrypt(SECRET), key.encrypt(SECRET));
        assert_ne!(one, two);
        assert_eq!(key.decrypt(&one).unwrap(), SECRET);
        assert!(SaltKey::new("another salt").decrypt(&one).is_err());
        for not_encrypted in ["", "openai/gpt-4o", "*", "v3:gcm:AAAA"] {
            assert!(key.decrypt(not_encrypted).is_err(), "{not_encrypted}");
        }
        assert_eq!(format!("{key:?}"), "[redacted]");
    }
}
