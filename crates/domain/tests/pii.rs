//! The PII scanner against its fixtures (`fixtures/pii.json`): every true positive is found
//! as exactly its span and kind wherever it stands in a sentence, every look-alike is left
//! alone; plus masking round trips and a speed probe (`--ignored`, release only).

use serde_json::Value;
use tollgate_domain::pii::{self, Finding, KindSet, Masker, PiiKind};

/// Where a sample is placed: alone, in a sentence, in brackets, before a newline.
const CONTEXTS: [(&str, &str); 5] = [
    ("", ""),
    ("please contact ", " today."),
    ("(", ")"),
    ("value: ", "\nnext line"),
    ("\"", "\", she said"),
];

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/pii.json")).expect("the fixtures are JSON")
}

fn samples<'a>(fixtures: &'a Value, kind: &str, list: &str) -> Vec<&'a Value> {
    fixtures[kind][list].as_array().map(|samples| samples.iter().collect()).unwrap_or_default()
}

fn describe(text: &str, findings: &[Finding]) -> Vec<(PiiKind, String)> {
    findings.iter().map(|finding| (finding.kind, text[finding.range.clone()].to_owned())).collect()
}

#[test]
fn every_true_positive_is_found_exactly() {
    let fixtures = fixtures();
    let mut checked = 0;
    for kind in PiiKind::ALL {
        let positives = samples(&fixtures, kind.as_str(), "match");
        assert!(positives.len() >= 6, "{kind}: too few true positives");
        for sample in positives {
            let (text, found) = match sample {
                Value::String(text) => (text.as_str(), text.as_str()),
                object => (object["text"].as_str().unwrap(), object["found"].as_str().unwrap()),
            };
            for (before, after) in CONTEXTS {
                let sentence = format!("{before}{text}{after}");
                let findings = pii::find(&sentence, KindSet::ALL);
                assert_eq!(describe(&sentence, &findings), vec![(kind, found.to_owned())], "in {sentence:?}");
                // Looking for this kind alone finds the same; looking for the others, nothing.
                assert_eq!(pii::find(&sentence, kind.into()), findings);
                let others: KindSet = PiiKind::ALL.into_iter().filter(|other| *other != kind).collect();
                assert_eq!(
                    pii::find(&sentence, others),
                    vec![],
                    "{kind} sample {sentence:?} read as another kind"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 300);
}

#[test]
fn no_look_alike_is_found() {
    let fixtures = fixtures();
    let lists = PiiKind::ALL.iter().map(|kind| kind.as_str()).chain(["ANY"]);
    for kind in lists {
        let negatives = samples(&fixtures, kind, "no_match");
        assert!(negatives.len() >= 5, "{kind}: too few look-alikes");
        for sample in negatives {
            let text = sample.as_str().unwrap();
            for (before, after) in CONTEXTS {
                let sentence = format!("{before}{text}{after}");
                let findings = pii::find(&sentence, KindSet::ALL);
                assert_eq!(describe(&sentence, &findings), vec![], "{kind} look-alike {sentence:?}");
            }
        }
    }
}

#[test]
fn a_prompt_with_everything_masks_and_unmasks() {
    let prompt = "I am ann@example.com (phone +44 20 7946 0958), card 4111 1111 1111 1111, \
                  IBAN DE89 3704 0044 0532 0130 00, server 10.0.0.7, key AKIAIOSFODNN7EXAMPLE. \
                  Forward to bob@example.org and ann@example.com.";
    let masked = pii::mask(prompt, KindSet::ALL);
    assert_eq!(
        masked.text,
        "I am <EMAIL_ADDRESS> (phone <PHONE_NUMBER>), card <CREDIT_CARD>, \
         IBAN <IBAN_CODE>, server <IP_ADDRESS>, key <API_KEY>. \
         Forward to <EMAIL_ADDRESS_2> and <EMAIL_ADDRESS>."
    );
    assert_eq!(masked.tokens.len(), 7);
    assert_eq!(pii::unmask(&masked.text, &masked.tokens), prompt);

    // Only the kinds asked for are masked.
    let mails_only = pii::mask(prompt, PiiKind::Email.into());
    assert!(mails_only.text.contains("4111 1111 1111 1111") && !mails_only.text.contains("ann@"));

    // One numbering across the messages of a request.
    let mut masker = Masker::new(KindSet::ALL);
    assert_eq!(masker.mask("call 415-555-2671").as_deref(), Some("call <PHONE_NUMBER>"));
    assert_eq!(masker.mask("or (212) 555-0199").as_deref(), Some("or <PHONE_NUMBER_2>"));
    assert_eq!(masker.mask("again 415-555-2671").as_deref(), Some("again <PHONE_NUMBER>"));
    let answer = "I will call <PHONE_NUMBER_2> first, then <PHONE_NUMBER>.";
    assert_eq!(pii::unmask(answer, masker.tokens()), "I will call (212) 555-0199 first, then 415-555-2671.");
}

#[test]
fn unicode_text_around_findings_is_kept_whole() {
    let text = "Grüße von jürgen@example.de — ☎ +49 30 901820 ✓";
    let masked = pii::mask(text, KindSet::ALL);
    assert_eq!(masked.text, "Grüße von <EMAIL_ADDRESS> — ☎ <PHONE_NUMBER> ✓");
    assert_eq!(masked.tokens[0].1, "jürgen@example.de", "the whole address, not its ASCII tail");
    let idn = pii::mask("write to info@münchen.de.", PiiKind::Email.into());
    assert_eq!(idn.text, "write to <EMAIL_ADDRESS>.");
    assert_eq!(pii::unmask(&masked.text, &masked.tokens), text);
}

#[test]
fn random_text_never_panics_and_round_trips() {
    // Pieces that make scanners start, stop and backtrack, mixed with multi-byte characters.
    const PIECES: [&str; 24] = [
        "4",
        "1",
        "0",
        "9",
        " ",
        "-",
        ".",
        "/",
        "+",
        "(",
        ")",
        ":",
        "@",
        "a",
        "Z",
        "DE",
        "é",
        "日本",
        "sk-",
        "eyJ",
        "\n",
        "_",
        "<",
        "ann@example.com",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        // xorshift64: deterministic, no dependency
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut found = 0;
    for _ in 0..3_000 {
        let length = (next() % 60) as usize;
        let text: String = (0..length).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
        let findings = pii::find(&text, KindSet::ALL);
        found += findings.len();
        let mut end = 0;
        for finding in &findings {
            assert!(finding.range.start >= end && finding.range.start < finding.range.end, "{text:?}");
            assert!(text.is_char_boundary(finding.range.start) && text.is_char_boundary(finding.range.end));
            end = finding.range.end;
        }
        let masked = pii::mask(&text, KindSet::ALL);
        if !text.contains('<') {
            assert_eq!(pii::unmask(&masked.text, &masked.tokens), text);
        }
        // Streamed in pieces of three bytes (or the next character boundary), unmasking agrees.
        let mut unmasker = pii::StreamUnmasker::new(masked.tokens.clone());
        let mut streamed = String::new();
        let mut from = 0;
        while from < masked.text.len() {
            let mut to = (from + 3).min(masked.text.len());
            while !masked.text.is_char_boundary(to) {
                to += 1;
            }
            streamed.push_str(&unmasker.push(&masked.text[from..to]));
            from = to;
        }
        streamed.push_str(&unmasker.finish());
        assert_eq!(streamed, pii::unmask(&masked.text, &masked.tokens), "{text:?}");
    }
    assert!(found > 500, "the random texts hold findings to mask: {found}");
}

/// The nanoseconds this thread has run on a CPU (Linux's `schedstat`), so that a probe on a
/// busy machine measures its own work and not its wait for a core; wall time elsewhere.
fn cpu_nanos(wall: std::time::Instant) -> u128 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| wall.elapsed().as_nanos())
}

/// Runs `scan` `rounds` times: CPU nanoseconds per run.
fn per_run(rounds: u32, mut scan: impl FnMut() -> usize) -> (u128, usize) {
    let wall = std::time::Instant::now();
    let before = cpu_nanos(wall);
    let mut found = 0;
    for _ in 0..rounds {
        found += scan();
    }
    ((cpu_nanos(wall) - before) / u128::from(rounds), found / rounds as usize)
}

/// `cargo test --release -p tollgate-domain --test pii -- --ignored --nocapture`: the scan of
/// 2 KB prompts without personal data, and of one with some, in CPU ns per scan.
#[test]
#[ignore = "a timing probe: run in release by hand"]
fn scan_speed() {
    let numbers = "The quarterly report covers revenue, costs and the outlook for the next year. \
                   Version 2.4.1 shipped on 2024-01-15 with 37 fixes; see section 3.2 for details. "
        .repeat(14);
    let numbers = &numbers[..2048];
    let prose = "Please summarise the following meeting notes for the team. We discussed the roadmap, \
                 hiring plans, the budget review, and open questions about the launch: who owns it? "
        .repeat(14);
    let prose = &prose[..2048];
    let dirty = format!("{}ann@example.com 415-555-2671 4111 1111 1111 1111", &numbers[..1990]);
    let cases =
        [("2 KB prose", prose), ("2 KB with 52 numbers", numbers), ("2 KB, 3 findings", dirty.as_str())];
    let rounds = 200_000;
    for (name, text) in cases {
        let (nanos, found) = per_run(rounds, || pii::find(std::hint::black_box(text), KindSet::ALL).len());
        println!("{name}: {nanos} ns per scan ({found} findings)");
    }
    for kind in PiiKind::ALL {
        let (nanos, _) = per_run(rounds, || pii::find(std::hint::black_box(numbers), kind.into()).len());
        println!("  {kind} alone, with numbers: {nanos} ns per scan");
    }
    let (nanos, _) = per_run(rounds, || pii::mask(std::hint::black_box(&dirty), KindSet::ALL).tokens.len());
    println!("mask, 2 KB with 3 findings: {nanos} ns");
}
