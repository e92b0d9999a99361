//! Virtual key material as LiteLLM makes it: `sk-` plus random characters from the OS-seeded
//! CSPRNG, stored only as the lowercase hex SHA-256 of the whole key.

use rand::RngExt;
use sha2::{Digest, Sha256};

/// Random characters after `sk-`: 22 alphanumerics carry about 131 bits.
const RANDOM_CHARS: usize = 22;

/// LiteLLM's minimum length for a custom key (`MINIMUM_CUSTOM_KEY_LENGTH`).
pub const MINIMUM_CUSTOM_KEY_LENGTH: usize = 16;

pub fn generate() -> String {
    let mut rng = rand::rng();
    let random: String =
        (0..RANDOM_CHARS).map(|_| char::from(rng.sample(rand::distr::Alphanumeric))).collect();
    format!("sk-{random}")
}

/// The stored form of a key: hex SHA-256 of its UTF-8 bytes, `sk-` included.
pub fn hash(raw: &str) -> String {
    use std::fmt::Write;
    Sha256::digest(raw.as_bytes()).iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// What management requests name a key by: a raw `sk-` key is hashed, anything else is
/// taken to be a hash already (LiteLLM's rule, so both forms work everywhere).
pub fn token_of(key_or_hash: &str) -> String {
    if key_or_hash.starts_with("sk-") { hash(key_or_hash) } else { key_or_hash.to_owned() }
}

/// The display name LiteLLM stores: `sk-...` and the last four characters.
pub fn display_name(raw: &str) -> String {
    if raw.len() < MINIMUM_CUSTOM_KEY_LENGTH || !raw.is_char_boundary(raw.len() - 4) {
        return "sk-...".to_owned();
    }
    format!("sk-...{}", &raw[raw.len() - 4..])
}

/// A custom key must look like one LiteLLM would accept.
pub fn check_custom(raw: &str) -> Result<(), String> {
    if !raw.starts_with("sk-") {
        return Err("Invalid key format. LiteLLM Virtual Key must start with 'sk-'.".to_owned());
    }
    if raw.len() < MINIMUM_CUSTOM_KEY_LENGTH {
        return Err(format!(
            "Invalid key format. LiteLLM Virtual Key must be at least {MINIMUM_CUSTOM_KEY_LENGTH} characters long."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_as_litellm_does() {
        // The same hash LiteLLM's fixture row carries for this key.
        assert_eq!(
            hash("sk-seed-0123456789"),
            "cc6d746d5eac00365787fb26550b4df91cfec79729c680bed294b0fdd51dd67c"
        );
        assert_eq!(token_of("sk-seed-0123456789"), hash("sk-seed-0123456789"));
        assert_eq!(token_of("cc6d"), "cc6d");
    }

    #[test]
    fn generated_keys_are_long_distinct_and_named_by_their_tail() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + RANDOM_CHARS);
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(display_name(&a), format!("sk-...{}", &a[a.len() - 4..]));
        assert_eq!(display_name("sk-short"), "sk-...");
        assert!(check_custom("sk-custom-key-0001").is_ok());
        assert!(check_custom("custom-key-0000001").unwrap_err().contains("must start with 'sk-'"));
        assert!(check_custom("sk-short").unwrap_err().contains("at least 16"));
    }
}
