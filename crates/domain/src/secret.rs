//! A string that must never reach a log, an error message or a debug dump.

use std::fmt;

/// A credential (provider key, master key). `Debug` and `Display` print a placeholder, so a
/// secret inside a struct that gets logged stays hidden; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that must send it (an upstream header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of this secret in `text` with `[redacted]`.
    pub fn redact_from(&self, text: &str) -> String {
        if self.0.len() < 4 {
            // Too short to be a real key, and replacing it would mangle ordinary words.
            return text.to_owned();
        }
        text.replace(&self.0, "[redacted]")
    }

    /// Compares in time that depends only on the lengths, never on where the bytes differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, &x) in a.iter().enumerate() {
            // Walk the whole stored key even when the candidate is shorter.
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(x ^ y);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let s = Secret::new("sk-1234");
        assert!(s.matches("sk-1234"));
        assert!(!s.matches("sk-123"));
        assert!(!s.matches("sk-12345"));
        assert!(!s.matches("sk-1235"));
        assert!(!s.matches(""));
    }

    #[test]
    fn redacts_every_occurrence() {
        let s = Secret::new("sk-abcdef");
        assert_eq!(s.redact_from("bad key sk-abcdef (sk-abcdef)"), "bad key [redacted] ([redacted])");
    }
}
