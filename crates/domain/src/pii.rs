//! Finding and masking personal data and secrets in prompt text, without a Presidio server:
//! e-mail addresses, phone numbers, credit-card numbers (Luhn-checked, known issuer prefixes),
//! IBANs (country length and mod-97 checked), IPv4/IPv6 addresses and API keys. Each kind is
//! validated, not only shaped, so that dates, versions, order numbers, UUIDs and hashes pass.
//!
//! Speed matters: every prompt of a guarded request is scanned. The scanners are hand-written
//! loops that start only at a rare byte: `@` and `:` found with `memchr`, and digits, found
//! 32 bytes at a time, for the numbers and IBANs (whose check digits follow two capitals).
//! The key shapes are `regex`es compiled once, whose literal prefixes (`sk-`, `AKIA`, `ghp_`,
//! ...) let them skip text without them.
//!
//! Masking follows LiteLLM's Presidio guardrail: a finding is replaced by `<ENTITY_TYPE>`,
//! Presidio's default placeholder. With `output_parse_pii` LiteLLM remembers each placeholder
//! to put the original back into the answer; where one kind occurs with several values it
//! appends a random suffix. Here the second distinct value of a kind becomes
//! `<EMAIL_ADDRESS_2>`, the third `<EMAIL_ADDRESS_3>`, and one value keeps one placeholder
//! across every text of a request (see [`Masker`]), so that [`unmask`] is unambiguous;
//! [`StreamUnmasker`] does the same for an answer streamed in pieces.
//!
//! Interface: [`find`], [`mask`] and [`unmask`] as the guardrail brief asked, plus [`Masker`]
//! (one numbering over the many texts of a request; [`mask`] is a one-text `Masker`),
//! [`StreamUnmasker`], [`contains`], and [`KindSet`], a `Copy` bit set of [`PiiKind`]s.
//! Secrets are `API_KEY` (Presidio has no such entity); `SECRET` parses too.
//!
//! Decisions (see the fixture tests in `tests/pii.rs`):
//! - a bare dotted quad with every octet at most 255 is an IPv4 address, even if it might be a
//!   four-part version; `v1.2.3.4`, `1.2.3.4.5` and `1.2.3` are not;
//! - national phone numbers need separators (`415-555-2671`, `(415) 555 2671`, `020 7946
//!   0958`) and 10 or 11 digits; a bare run of digits is a phone number only after `+`;
//! - IBANs are written in capitals, compact or in groups of four;
//! - e-mail addresses may hold letters beyond ASCII and need a dotted domain whose top-level
//!   label is alphabetic and not an image extension (`icon@2x.png`).

use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::LazyLock;

use memchr::memchr_iter;
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A kind of personal data or secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    Email,
    Phone,
    CreditCard,
    Iban,
    IpAddress,
    /// API keys, tokens and private keys.
    Secret,
}

impl PiiKind {
    pub const ALL: [PiiKind; 6] =
        [Self::Email, Self::Phone, Self::CreditCard, Self::Iban, Self::IpAddress, Self::Secret];

    /// The Presidio entity name, as LiteLLM's `pii_entities_config` keys it. Presidio has no
    /// entity for API keys; `API_KEY` is Tollgate's name (`SECRET` is read as well).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "EMAIL_ADDRESS",
            Self::Phone => "PHONE_NUMBER",
            Self::CreditCard => "CREDIT_CARD",
            Self::Iban => "IBAN_CODE",
            Self::IpAddress => "IP_ADDRESS",
            Self::Secret => "API_KEY",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entity name Tollgate does not detect (Presidio's `PERSON`, `LOCATION`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported PII entity `{0}`; supported: EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, API_KEY"
)]
pub struct UnknownPiiKind(pub String);

impl FromStr for PiiKind {
    type Err = UnknownPiiKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let kind = match name.trim().to_ascii_uppercase().as_str() {
            "EMAIL_ADDRESS" | "EMAIL" => Self::Email,
            "PHONE_NUMBER" | "PHONE" => Self::Phone,
            "CREDIT_CARD" => Self::CreditCard,
            "IBAN_CODE" | "IBAN" => Self::Iban,
            "IP_ADDRESS" => Self::IpAddress,
            "API_KEY" | "SECRET" | "SECRETS" => Self::Secret,
            _ => return Err(UnknownPiiKind(name.to_owned())),
        };
        Ok(kind)
    }
}

impl Serialize for PiiKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PiiKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of kinds to look for: a bit per kind, `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(u8);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);
    pub const ALL: KindSet = KindSet(0b11_1111);

    pub fn with(self, kind: PiiKind) -> KindSet {
        KindSet(self.0 | kind.bit())
    }

    pub fn insert(&mut self, kind: PiiKind) {
        self.0 |= kind.bit();
    }

    pub fn contains(self, kind: PiiKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = PiiKind> {
        PiiKind::ALL.into_iter().filter(move |kind| self.contains(*kind))
    }
}

impl From<PiiKind> for KindSet {
    fn from(kind: PiiKind) -> Self {
        KindSet(kind.bit())
    }
}

impl FromIterator<PiiKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = PiiKind>>(kinds: I) -> Self {
        kinds.into_iter().fold(KindSet::EMPTY, KindSet::with)
    }
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// One piece of personal data: its kind and its byte range in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: PiiKind,
    pub range: Range<usize>,
}

/// The findings of `kinds` in `text`, in order, none overlapping another (where two
/// candidates overlap, the one starting first wins, then the longer).
pub fn find(text: &str, kinds: KindSet) -> Vec<Finding> {
    let mut findings = Vec::new();
    if kinds.is_empty() || text.is_empty() {
        return findings;
    }
    let bytes = text.as_bytes();
    if kinds.contains(PiiKind::Secret) {
        find_secrets(text, &mut findings);
    }
    if kinds.contains(PiiKind::Email) {
        find_emails(text, &mut findings);
    }
    if kinds.contains(PiiKind::IpAddress) {
        find_ipv6(text, &mut findings);
    }
    let numeric = [PiiKind::CreditCard, PiiKind::Phone, PiiKind::IpAddress, PiiKind::Iban];
    if numeric.into_iter().any(|kind| kinds.contains(kind)) {
        find_numbers(bytes, kinds, &mut findings);
    }
    if findings.len() > 1 {
        findings.sort_by(|a, b| a.range.start.cmp(&b.range.start).then(b.range.end.cmp(&a.range.end)));
        let mut end = 0;
        findings.retain(|finding| {
            let keep = finding.range.start >= end;
            if keep {
                end = finding.range.end;
            }
            keep
        });
    }
    findings
}

/// Whether `text` holds any of `kinds`.
pub fn contains(text: &str, kinds: KindSet) -> bool {
    !find(text, kinds).is_empty()
}

fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

// ---------------------------------------------------------------------------------------
// Secrets

/// Key shapes specific enough to match on their own: each starts with a vendor's prefix.
static KEY_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?-u:\b)(?:",
        // OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-api03-), DeepSeek, LiteLLM keys
        r"sk-[A-Za-z0-9_-]{20,}",
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
        r"|gh[pousr]_[A-Za-z0-9]{36,}",
        r"|github_pat_[A-Za-z0-9_]{22,}",
        r"|glpat-[A-Za-z0-9_-]{20,}",
        r"|xox[abposr]-[A-Za-z0-9-]{10,}",
        r"|AIza[0-9A-Za-z_-]{35}",
        r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
        r"|hf_[A-Za-z0-9]{30,}",
        // a JWT: header and payload are base64url JSON objects, so both start with `eyJ`
        r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        r")(?-u:\b)",
        // a PEM private key with its body to the end line, or (cut short) as far as it goes
        r"|-----BEGIN[A-Z ]{0,20} PRIVATE KEY-----",
        r"(?:[A-Za-z0-9+/=\s:,-]*?-----END[A-Z ]{0,20} PRIVATE KEY-----|[A-Za-z0-9+/=\s:,-]*)",
    ))
    .expect("the key shapes compile")
});

/// A value assigned to a name that says it is secret (`api_key = "..."`, `"password":
/// "..."`, `Authorization: Bearer ...`): only the value is a finding, and only when it looks
/// random (long, letters and digits, high entropy), so `password: changeme` and LiteLLM's
/// `api_key: os.environ/OPENAI_API_KEY` pass.
static ASSIGNED_SECRETS: LazyLock<Regex> = LazyLock::new(|| {
    // The names are spelled out in lower, upper and title case rather than with `(?i)`:
    // literal prefixes keep the search fast (a case-insensitive pattern was ten times slower).
    Regex::new(concat!(
        r"(?:(?:api|API|Api)[_-]?(?:key|KEY|Key)",
        r"|(?:secret|SECRET|Secret|access|ACCESS|Access|auth|AUTH|Auth|refresh|REFRESH|Refresh)",
        r"[_-]?(?:key|KEY|Key|token|TOKEN|Token)",
        r"|secret|SECRET|Secret|token|TOKEN|Token|passw(?:or)?d|PASSW(?:OR)?D|Passw(?:or)?d",
        r"|bearer|BEARER|Bearer)",
        r#"["']?(?:\s*[:=]\s*["']?|\s+)([A-Za-z0-9_+/=.-]{16,})"#,
    ))
    .expect("the assignment shape compiles")
});

fn find_secrets(text: &str, findings: &mut Vec<Finding>) {
    for found in KEY_SHAPES.find_iter(text) {
        findings.push(Finding { kind: PiiKind::Secret, range: found.range() });
    }
    for captures in ASSIGNED_SECRETS.captures_iter(text) {
        let value = captures.get(1).expect("group 1 always takes part");
        if looks_random(value.as_str()) {
            findings.push(Finding { kind: PiiKind::Secret, range: value.range() });
        }
    }
}

/// Random enough to be a generated secret: letters and digits, and at least 3.5 bits of
/// entropy per character. (Twenty random base64 characters hold no digit 3% of the time;
/// names and paths seldom hold one.)
fn looks_random(value: &str) -> bool {
    let bytes = value.as_bytes();
    if !bytes.iter().any(u8::is_ascii_digit) || !bytes.iter().any(u8::is_ascii_alphabetic) {
        return false;
    }
    let mut counts = [0u32; 128];
    for &byte in bytes {
        counts[usize::from(byte & 0x7f)] += 1;
    }
    let length = bytes.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|count| **count > 0)
        .map(|&count| {
            let p = f64::from(count) / length;
            -p * p.log2()
        })
        .sum();
    entropy >= 3.5
}

// ---------------------------------------------------------------------------------------
// E-mail addresses

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-!#$&'*/=?^`{|}~".contains(c) || (!c.is_ascii() && c.is_alphanumeric())
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.' || (!c.is_ascii() && c.is_alphanumeric())
}

/// Top-level labels that are really file extensions: `icon@2x.png` is an image name.
const FILE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "gif", "svg", "webp"];

/// Addresses around each `@`. Letters beyond ASCII count (`jürgen@münchen.de`, RFC 6531),
/// so that an address is never masked only in part.
fn find_emails(text: &str, findings: &mut Vec<Finding>) {
    let mut resume = 0;
    for at in memchr_iter(b'@', text.as_bytes()) {
        if at < resume {
            continue;
        }
        let local_len: usize =
            text[..at].chars().rev().take_while(|c| is_local_char(*c)).map(char::len_utf8).sum();
        let mut start = at - local_len;
        // Quotes and slashes are legal in a local part but more often surround the address.
        while start < at && "'`{|/=".contains(text.as_bytes()[start] as char) {
            start += 1;
        }
        let domain_len: usize =
            text[at + 1..].chars().take_while(|c| is_domain_char(*c)).map(char::len_utf8).sum();
        let mut end = at + 1 + domain_len;
        // A sentence's full stop or a dash after the address is not part of it.
        while end > at + 1 && matches!(text.as_bytes()[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if valid_local(&text[start..at]) && valid_domain(&text[at + 1..end]) {
            findings.push(Finding { kind: PiiKind::Email, range: start..end });
            resume = end;
        }
    }
}

fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
}

fn valid_domain(domain: &str) -> bool {
    if domain.len() > 253 {
        return false;
    }
    let mut labels = 0;
    let mut last = "";
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2
        && last.chars().count() >= 2
        && last.chars().all(char::is_alphabetic)
        && !FILE_EXTENSIONS.iter().any(|extension| last.eq_ignore_ascii_case(extension))
}

// ---------------------------------------------------------------------------------------
// IBANs

/// Each country's IBAN length (SWIFT's IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS.iter().find(|(code, _)| code.as_slice() == country).map(|(_, length)| *length)
}

/// The first ASCII digit at or after `from`. Prose holds few digits: 32-byte blocks without
/// one are passed over with a test the compiler turns into vector compares.
fn next_digit(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from.min(bytes.len());
    while let Some(block) = bytes.get(at..at + 32) {
        if block.iter().fold(false, |any, byte| any | byte.is_ascii_digit()) {
            break;
        }
        at += 32;
    }
    bytes[at..].iter().position(u8::is_ascii_digit).map(|offset| at + offset)
}

/// The end of a valid IBAN whose check digits start at `digit`, after two capitals that start
/// a word.
fn iban_before(bytes: &[u8], digit: usize) -> Option<usize> {
    let start = digit.checked_sub(2)?;
    let starts = bytes[start].is_ascii_uppercase()
        && bytes[start + 1].is_ascii_uppercase()
        && bytes.get(digit + 1).is_some_and(u8::is_ascii_digit)
        && (start == 0 || !is_word(bytes[start - 1]));
    if starts { iban_at(bytes, start) } else { None }
}

/// The end of a valid IBAN starting at `start`: compact, or in groups of four separated by
/// single spaces.
fn iban_at(bytes: &[u8], start: usize) -> Option<usize> {
    let length = iban_length(bytes.get(start..start + 2)?)?;
    let mut compact = [0u8; 34];
    let mut taken = 0;
    let mut at = start;
    while taken < length {
        let byte = *bytes.get(at)?;
        if byte.is_ascii_uppercase() || byte.is_ascii_digit() {
            compact[taken] = byte;
            taken += 1;
            at += 1;
        } else if byte == b' '
            && taken.is_multiple_of(4)
            && taken > 0
            && at + 1 < bytes.len()
            && bytes[at + 1] != b' '
        {
            at += 1;
        } else {
            return None;
        }
    }
    if at < bytes.len() && is_word(bytes[at]) {
        return None;
    }
    iban_checksum_ok(&compact[..length]).then_some(at)
}

/// ISO 13616: the country code and check digits moved to the end, letters as 10..35, the
/// number mod 97 is 1.
fn iban_checksum_ok(iban: &[u8]) -> bool {
    let mut remainder: u32 = 0;
    for &byte in iban[4..].iter().chain(&iban[..4]) {
        remainder = match byte {
            b'0'..=b'9' => (remainder * 10 + u32::from(byte - b'0')) % 97,
            b'A'..=b'Z' => (remainder * 100 + u32::from(byte - b'A') + 10) % 97,
            _ => return false,
        };
    }
    remainder == 1
}

// ---------------------------------------------------------------------------------------
// IPv6 addresses

fn find_ipv6(text: &str, findings: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let is_part = |byte: u8| byte.is_ascii_hexdigit() || byte == b':' || byte == b'.';
    let mut resume = 0;
    for colon in memchr_iter(b':', bytes) {
        if colon < resume {
            continue;
        }
        let mut start = colon;
        while start > 0 && is_part(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = colon;
        while end < bytes.len() && is_part(bytes[end]) {
            end += 1;
        }
        resume = end;
        // A trailing full stop ends a sentence.
        while end > colon && bytes[end - 1] == b'.' {
            end -= 1;
        }
        if (start > 0 && is_word(bytes[start - 1])) || (end < bytes.len() && is_word(bytes[end])) {
            continue;
        }
        let candidate = &text[start..end];
        let groups = candidate.split(':').filter(|group| !group.is_empty()).count();
        // `::1`, `a::b` and the like are too short to tell from code (`std::io`, `Foo::Bar`):
        // two groups count only when the first is a full four digits (`fe80::1`).
        let long_enough = groups >= 3 || (groups == 2 && candidate.find(':') == Some(4));
        if long_enough && candidate.parse::<Ipv6Addr>().is_ok() {
            findings.push(Finding { kind: PiiKind::IpAddress, range: start..end });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Numbers: credit cards, phone numbers, IPv4 addresses

/// The most digit groups one run of a number is read in; longer runs are read in pieces.
const MAX_GROUPS: usize = 24;

/// A run of digits inside a number-like span.
#[derive(Clone, Copy, Default)]
struct Group {
    start: usize,
    end: usize,
    /// The byte between the previous group and this one (`0` for the first).
    separator: u8,
    /// Written in parentheses, as an area code: `(415)`.
    parenthesized: bool,
    /// Starts with `0`, as a national trunk prefix does.
    leading_zero: bool,
}

impl Group {
    fn digits(&self) -> usize {
        self.end - self.start
    }
}

fn find_numbers(bytes: &[u8], kinds: KindSet, findings: &mut Vec<Finding>) {
    let mut groups = [Group::default(); MAX_GROUPS];
    let mut from = 0;
    while let Some(digit) = next_digit(bytes, from) {
        // A number starts at its first digit, or at a `+` or `(` right before it.
        let at = match digit.checked_sub(1).map(|before| bytes[before]) {
            Some(b'+' | b'(') => digit - 1,
            _ => digit,
        };
        if at > 0 && (is_word(bytes[at - 1]) || bytes[at - 1] == b'.' && at == digit) {
            // An IBAN's first digits follow its country code.
            if kinds.contains(PiiKind::Iban)
                && let Some(end) = iban_before(bytes, digit)
            {
                findings.push(Finding { kind: PiiKind::Iban, range: digit - 2..end });
                from = end;
                continue;
            }
            // Inside a word (a hash, a UUID, `v1.2`) or a decimal: skip the whole word.
            from = skip_word(bytes, digit);
            continue;
        }
        let (mut count, mut end, mut plus) = read_groups(bytes, at, &mut groups);
        if count == 0 {
            // `(` without its `)`: `(415-555-2671)` is read from the digit.
            (count, end, plus) = read_groups(bytes, digit, &mut groups);
        }
        let in_word = end < bytes.len() && (is_word(bytes[end]) || bytes[end] == b'@');
        if count > 0 && !in_word {
            classify(bytes, &groups[..count], plus.then_some(at), kinds, findings);
        }
        from = if in_word { skip_word(bytes, end) } else { end.max(digit + 1) };
    }
}

/// The end of the word (letters, digits, `_` and `.`) that `at` is in.
fn skip_word(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && (is_word(bytes[at]) || bytes[at] == b'.') {
        at += 1;
    }
    at
}

/// Reads digit groups from `start` (a digit, `+` or `(`), each separated by one space, dash,
/// dot or slash, or a parenthesized group: the number of groups, the end of the run and
/// whether it began with `+`.
fn read_groups(bytes: &[u8], start: usize, groups: &mut [Group; MAX_GROUPS]) -> (usize, usize, bool) {
    let plus = bytes[start] == b'+';
    let mut at = start + usize::from(plus);
    let mut count = 0;
    let mut separator = 0u8;
    let mut end = at;
    while count < MAX_GROUPS {
        let parenthesized = bytes.get(at) == Some(&b'(');
        let digits_start = at + usize::from(parenthesized);
        let mut digits_end = digits_start;
        while digits_end < bytes.len() && bytes[digits_end].is_ascii_digit() {
            digits_end += 1;
        }
        if digits_end == digits_start || (parenthesized && bytes.get(digits_end) != Some(&b')')) {
            break;
        }
        let leading_zero = bytes[digits_start] == b'0';
        groups[count] =
            Group { start: digits_start, end: digits_end, separator, parenthesized, leading_zero };
        count += 1;
        end = digits_end + usize::from(parenthesized);
        // The separator to the next group: one of ` -./`, or `) ` after a parenthesis, which
        // is then recorded as a space.
        let next = bytes.get(end).copied();
        let follows_group = |offset: usize| {
            bytes.get(end + offset).is_some_and(|byte| byte.is_ascii_digit() || *byte == b'(')
        };
        match next {
            Some(byte @ (b' ' | b'-' | b'.' | b'/')) if follows_group(1) => {
                separator = byte;
                at = end + 1;
            }
            Some(b'(' | b'0'..=b'9') if parenthesized => {
                separator = b' ';
                at = end;
            }
            _ => break,
        }
    }
    (count, end, plus)
}

fn classify(bytes: &[u8], run: &[Group], plus: Option<usize>, kinds: KindSet, findings: &mut Vec<Finding>) {
    // Four dotted octets, alone or before a CIDR prefix (`10.0.0.0/8`), but not before a
    // fifth dotted part (`1.2.3.4.5` is a version).
    let quad = run.get(..4).filter(|quad| {
        quad.iter().skip(1).all(|group| group.separator == b'.')
            && run.get(4).is_none_or(|fifth| fifth.separator != b'.')
    });
    let addressable =
        plus.is_none() && quad.is_some_and(|quad| !quad.iter().any(|group| group.parenthesized));
    if addressable && run[..4].iter().all(|group| is_octet(&bytes[group.start..group.end])) {
        if kinds.contains(PiiKind::IpAddress) {
            findings.push(Finding { kind: PiiKind::IpAddress, range: run[0].start..run[3].end });
        }
        return;
    }
    let mut first = 0;
    while first < run.len() {
        // After `+` comes a country code: a phone number, never a card.
        let taken = (kinds.contains(PiiKind::CreditCard) && (plus.is_none() || first > 0))
            .then(|| card_at(bytes, &run[first..]))
            .flatten()
            .map(|groups| (PiiKind::CreditCard, groups))
            .or_else(|| {
                let plus = plus.filter(|_| first == 0);
                kinds
                    .contains(PiiKind::Phone)
                    .then(|| phone_at(&run[first..], plus.is_some(), first == 0))
                    .flatten()
                    .map(|groups| (PiiKind::Phone, groups))
            });
        match taken {
            Some((kind, groups)) => {
                let last = &run[first + groups - 1];
                // A phone number's `+` and brackets are part of it; a card's brackets are not.
                let phone = kind == PiiKind::Phone;
                let start = match plus {
                    Some(plus) if first == 0 => plus,
                    _ if phone && run[first].parenthesized => run[first].start - 1,
                    _ => run[first].start,
                };
                let end = last.end + usize::from(phone && last.parenthesized);
                findings.push(Finding { kind, range: start..end });
                first += groups;
            }
            // A number starts afresh only after a space: `01-15 415` is not a phone.
            None => {
                first += 1;
                while first < run.len() && run[first].separator != b' ' && !run[first].parenthesized {
                    first += 1;
                }
            }
        }
    }
}

fn is_octet(digits: &[u8]) -> bool {
    match digits {
        [_] => true,
        [b'0', ..] => false,
        [_, _] => true,
        [a, b, c] => u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0') <= 255,
        _ => false,
    }
}

/// The number of groups, from the first, that form a valid card number: 13 to 19 digits,
/// written whole or in groups separated by one kind of space or dash, with a known issuer
/// prefix and a valid Luhn check digit.
fn card_at(bytes: &[u8], run: &[Group]) -> Option<usize> {
    let separator = run.get(1).map_or(0, |group| group.separator);
    if !matches!(separator, 0 | b' ' | b'-') {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut length = 0;
    let mut best = None;
    for (index, group) in run.iter().enumerate() {
        // A card in brackets is one group: `(4111111111111111)`; brackets inside it are not.
        if index > 0 && (group.separator != separator || group.parenthesized || run[0].parenthesized) {
            break;
        }
        if group.digits() > 19 - length || (index > 0 && group.digits() < 3) {
            break;
        }
        digits[length..length + group.digits()].copy_from_slice(&bytes[group.start..group.end]);
        length += group.digits();
        if length >= 13 && known_issuer(&digits[..length]) && luhn_ok(&digits[..length]) {
            best = Some(index + 1);
        }
    }
    best
}

/// Issuer prefixes (and lengths) of the card networks in use: Visa, Mastercard, American
/// Express, Discover, Diners Club, JCB, UnionPay and Maestro.
fn known_issuer(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 { digits[..n].iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')) };
    let length = digits.len();
    match digits[0] {
        b'4' => matches!(length, 13 | 16 | 19),
        b'2' => length == 16 && (2221..=2720).contains(&prefix(4)),
        b'3' => match prefix(2) {
            34 | 37 => length == 15,
            36 | 38 | 39 => (14..=19).contains(&length),
            30 => (300..=305).contains(&prefix(3)) && (14..=19).contains(&length),
            35 => (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&length),
            _ => false,
        },
        b'5' => match prefix(2) {
            51..=55 => length == 16,
            50 | 56..=59 => (12..=19).contains(&length),
            _ => false,
        },
        b'6' => (12..=19).contains(&length),
        _ => false,
    }
}

fn luhn_ok(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, digit)| {
            let value = u32::from(digit - b'0');
            if index % 2 == 1 {
                let doubled = value * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                value
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The number of groups, from the first, that form a phone number: after `+`, a country code
/// and 8 to 15 digits in all (E.164); otherwise 10 or 11 digits in at least two groups of two
/// to six digits (or `1-800-555-0199`), with one kind of separator (a parenthesized area code may be followed by
/// a space and then dashes), and not shaped like a date (`2024-01-15`, `15/01/2024`). Digits
/// separated by spaces alone must be the whole run, not a piece of a longer list.
fn phone_at(run: &[Group], international: bool, run_start: bool) -> Option<usize> {
    let mut digits = 0;
    let mut best = None;
    let mut separators = 0u8;
    for (index, group) in run.iter().enumerate() {
        if index > 0 && group.separator == b'/' {
            break;
        }
        if index > 0 && !group.parenthesized && group.separator != b' ' {
            // one dash-or-dot kind per number (spaces may mix with it: `(415) 555-2671`)
            if separators != 0 && separators != group.separator {
                break;
            }
            separators = group.separator;
        }
        digits += group.digits();
        if digits > 15 {
            break;
        }
        let fits = if international {
            (8..=15).contains(&digits) && (index == 0 || run[0].digits() <= 3)
        } else {
            index > 0
                && (10..=11).contains(&digits)
                && run[..=index].iter().enumerate().all(|(position, group)| {
                    (2..=6).contains(&group.digits())
                        || (position == 0 && north_american_trunk(&run[..=index]))
                })
                && (separators != 0
                    || (run_start && index + 1 == run.len() && national_spaced(&run[..=index])))
                && !looks_like_date(&run[..=index])
        };
        if fits {
            best = Some(index + 1);
        }
    }
    best
}

/// `1-800-555-0199`: the North American trunk `1` before a 3-3-4 number.
fn north_american_trunk(groups: &[Group]) -> bool {
    groups.len() == 4 && groups[0].digits() == 1 && groups[1..].iter().map(Group::digits).eq([3, 3, 4])
}

/// Digit groups separated by spaces only are a phone number when they start with a trunk
/// `0` (`020 7946 0958`, `01 23 45 67 89`), a parenthesized area code, or read 3-3-4 as in
/// North America; otherwise they are more likely a list of numbers.
fn national_spaced(groups: &[Group]) -> bool {
    let first = &groups[0];
    let north_american = groups.len() == 3 && groups.iter().map(Group::digits).eq([3, 3, 4]);
    first.parenthesized || north_american || first.leading_zero
}

/// `2024-01-15 10`, `15.01.2024 0930`: a year group of 19xx/20xx next to month-day groups.
fn looks_like_date(groups: &[Group]) -> bool {
    groups.windows(3).any(|three| {
        let sizes = [three[0].digits(), three[1].digits(), three[2].digits()];
        sizes == [4, 2, 2] || sizes == [2, 2, 4]
    })
}

// ---------------------------------------------------------------------------------------
// Masking

/// A masked text and what each placeholder stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masked {
    pub text: String,
    /// `(placeholder, original)`, in the order first met.
    pub tokens: Vec<(String, String)>,
}

/// Masks [`find`]'s findings in one text with Presidio's `<ENTITY_TYPE>` placeholders.
pub fn mask(text: &str, kinds: KindSet) -> Masked {
    let mut masker = Masker::new(kinds);
    let text = masker.mask(text).unwrap_or_else(|| text.to_owned());
    Masked { text, tokens: masker.into_tokens() }
}

/// Masks every text of one request (each message, each text part) with one numbering, so
/// that a value met twice keeps its placeholder and two values never share one.
#[derive(Debug, Clone)]
pub struct Masker {
    kinds: KindSet,
    tokens: Vec<(String, String)>,
    /// How many distinct values of each kind have been given a placeholder.
    counts: [u32; PiiKind::ALL.len()],
}

impl Masker {
    pub fn new(kinds: KindSet) -> Masker {
        Masker { kinds, tokens: Vec::new(), counts: [0; PiiKind::ALL.len()] }
    }

    /// The masked text, or `None` when `text` holds nothing to mask (nothing is allocated).
    pub fn mask(&mut self, text: &str) -> Option<String> {
        let findings = find(text, self.kinds);
        if findings.is_empty() {
            return None;
        }
        let mut masked = String::with_capacity(text.len());
        let mut copied = 0;
        for Finding { kind, range } in findings {
            masked.push_str(&text[copied..range.start]);
            masked.push_str(self.placeholder(kind, &text[range.clone()]));
            copied = range.end;
        }
        masked.push_str(&text[copied..]);
        Some(masked)
    }

    fn placeholder(&mut self, kind: PiiKind, original: &str) -> &str {
        let known = self.tokens.iter().position(|(placeholder, value)| {
            value == original && placeholder_kind(placeholder) == Some(kind.as_str())
        });
        let index = known.unwrap_or_else(|| {
            let count = &mut self.counts[kind as usize];
            *count += 1;
            let placeholder = if *count == 1 { format!("<{kind}>") } else { format!("<{kind}_{count}>") };
            self.tokens.push((placeholder, original.to_owned()));
            self.tokens.len() - 1
        });
        &self.tokens[index].0
    }

    /// The placeholders given so far and their originals.
    pub fn tokens(&self) -> &[(String, String)] {
        &self.tokens
    }

    pub fn into_tokens(self) -> Vec<(String, String)> {
        self.tokens
    }
}

/// `EMAIL_ADDRESS` of `<EMAIL_ADDRESS>` or `<EMAIL_ADDRESS_2>`.
fn placeholder_kind(placeholder: &str) -> Option<&str> {
    let inner = placeholder.strip_prefix('<')?.strip_suffix('>')?;
    Some(match inner.rsplit_once('_') {
        Some((kind, number)) if number.bytes().all(|byte| byte.is_ascii_digit()) => kind,
        _ => inner,
    })
}

/// Puts the originals back where an answer repeats a placeholder (LiteLLM's
/// `output_parse_pii`). Placeholders the answer mangled stay as they are.
pub fn unmask(text: &str, tokens: &[(String, String)]) -> String {
    if tokens.is_empty() {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut unmasked = String::with_capacity(text.len());
    let mut copied = 0;
    for open in memchr_iter(b'<', bytes) {
        if open < copied {
            continue;
        }
        let rest = &text[open..];
        if let Some((placeholder, original)) =
            tokens.iter().find(|(placeholder, _)| rest.starts_with(placeholder.as_str()))
        {
            unmasked.push_str(&text[copied..open]);
            unmasked.push_str(original);
            copied = open + placeholder.len();
        }
    }
    unmasked.push_str(&text[copied..]);
    unmasked
}

/// [`unmask`] for an answer that arrives in pieces (a stream's deltas): a piece ending in
/// what may be the start of a placeholder (`... <EMAIL_AD`) is held back until the next piece
/// completes or rules it out.
#[derive(Debug, Clone)]
pub struct StreamUnmasker {
    tokens: Vec<(String, String)>,
    pending: String,
}

impl StreamUnmasker {
    pub fn new(tokens: Vec<(String, String)>) -> StreamUnmasker {
        StreamUnmasker { tokens, pending: String::new() }
    }

    /// The unmasked text that is ready: all of `piece` and what was held, less a trailing
    /// partial placeholder.
    pub fn push(&mut self, piece: &str) -> String {
        if self.tokens.is_empty() {
            return piece.to_owned();
        }
        self.pending.push_str(piece);
        // Placeholders hold no `<` but their first, so only the last `<` can open one.
        let hold_from = self
            .pending
            .rfind('<')
            .filter(|&open| {
                let tail = &self.pending[open..];
                self.tokens
                    .iter()
                    .any(|(placeholder, _)| placeholder.len() > tail.len() && placeholder.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let ready = unmask(&self.pending[..hold_from], &self.tokens);
        self.pending.drain(..hold_from);
        ready
    }

    /// What is still held back, at the end of the answer.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        unmask(&rest, &self.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_in(text: &str) -> Vec<(PiiKind, &str)> {
        find(text, KindSet::ALL).into_iter().map(|finding| (finding.kind, &text[finding.range])).collect()
    }

    #[test]
    fn kinds_read_presidio_names() {
        for kind in PiiKind::ALL {
            assert_eq!(kind.as_str().parse::<PiiKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<PiiKind>(&json).unwrap(), kind);
        }
        assert_eq!("SECRET".parse::<PiiKind>(), Ok(PiiKind::Secret));
        assert_eq!("email_address".parse::<PiiKind>(), Ok(PiiKind::Email));
        assert!("PERSON".parse::<PiiKind>().is_err());
        let set: KindSet = [PiiKind::Email, PiiKind::Iban].into_iter().collect();
        assert!(set.contains(PiiKind::Email) && !set.contains(PiiKind::Phone));
        assert_eq!(set.iter().count(), 2);
    }

    #[test]
    fn findings_are_ordered_and_apart() {
        let text = "mail ann@example.com or call +44 20 7946 0958 from 10.0.0.1, card 4111 1111 1111 1111";
        assert_eq!(
            kinds_in(text),
            vec![
                (PiiKind::Email, "ann@example.com"),
                (PiiKind::Phone, "+44 20 7946 0958"),
                (PiiKind::IpAddress, "10.0.0.1"),
                (PiiKind::CreditCard, "4111 1111 1111 1111"),
            ]
        );
        assert_eq!(kinds_in("nothing here at all"), vec![]);
        let only_mail = find(text, PiiKind::Email.into());
        assert_eq!(only_mail.len(), 1);
    }

    #[test]
    fn masking_numbers_distinct_values_and_unmasks() {
        let mut masker = Masker::new(KindSet::ALL);
        let first = masker.mask("from ann@example.com to bob@example.org").unwrap();
        assert_eq!(first, "from <EMAIL_ADDRESS> to <EMAIL_ADDRESS_2>");
        let second = masker.mask("cc ann@example.com").unwrap();
        assert_eq!(second, "cc <EMAIL_ADDRESS>", "one value keeps its placeholder across texts");
        assert_eq!(masker.mask("no personal data"), None);
        let tokens = masker.into_tokens();
        assert_eq!(tokens.len(), 2);
        let answer = "Dear <EMAIL_ADDRESS_2>, <EMAIL_ADDRESS> wrote. <EMAIL_ADDRESS_3> and <b> stay.";
        assert_eq!(
            unmask(answer, &tokens),
            "Dear bob@example.org, ann@example.com wrote. <EMAIL_ADDRESS_3> and <b> stay."
        );
        let masked = mask("key sk-proj-abcdefghijklmnopqrstuvwxyz012345 here", KindSet::ALL);
        assert_eq!(masked.text, "key <API_KEY> here");
        assert_eq!(unmask(&masked.text, &masked.tokens), "key sk-proj-abcdefghijklmnopqrstuvwxyz012345 here");
    }

    #[test]
    fn a_stream_is_unmasked_across_pieces() {
        let tokens = vec![
            ("<EMAIL_ADDRESS>".to_owned(), "ann@example.com".to_owned()),
            ("<EMAIL_ADDRESS_2>".to_owned(), "bob@example.org".to_owned()),
        ];
        let mut unmasker = StreamUnmasker::new(tokens);
        let pieces = ["Write to <EMA", "IL_ADDRESS> and <", "EMAIL_ADDRESS_2", "> or <b>", " x < y <EMAIL"];
        let out: String =
            pieces.iter().map(|piece| unmasker.push(piece)).collect::<String>() + &unmasker.finish();
        assert_eq!(out, "Write to ann@example.com and bob@example.org or <b> x < y <EMAIL");
        let mut held = StreamUnmasker::new(vec![("<IP_ADDRESS>".to_owned(), "10.0.0.1".to_owned())]);
        assert_eq!(held.push("at <IP_"), "at ");
        assert_eq!(held.push("ADDRESS>."), "10.0.0.1.");
    }

    #[test]
    fn a_private_key_cut_short_is_masked_to_its_end() {
        let text =
            "key:\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7";
        assert_eq!(kinds_in(text), vec![(PiiKind::Secret, &text[5..])]);
    }

    #[test]
    fn checksums() {
        assert!(luhn_ok(b"4111111111111111"));
        assert!(!luhn_ok(b"4111111111111112"));
        assert!(iban_checksum_ok(b"DE89370400440532013000"));
        assert!(!iban_checksum_ok(b"DE88370400440532013000"));
        assert!(
            is_octet(b"255") && is_octet(b"0") && !is_octet(b"256") && !is_octet(b"01") && !is_octet(b"999")
        );
    }
}
