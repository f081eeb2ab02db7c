//! Heads written to hurt: garbage, huge values, floods of fields. Anyone can put such a mail in
//! the watched mailbox; reading it must not panic, and what comes out stays bounded.

use super::*;

fn ids() -> Vec<String> {
    vec!["mx.example.test".to_string()]
}

fn verdicts(head: &[u8]) -> Verdicts {
    read(head, &ids())
}

/// Whatever the head, at most one result per method and one verdict per filter, each score
/// finite and in range.
fn assert_bounded(v: &Verdicts) {
    assert!(v.auth.len() <= AuthMethod::ALL.len());
    assert!(v.spam.len() <= SpamFilter::ALL.len());
    for score in v.spam.iter().filter_map(|s| s.score) {
        assert!(score.is_finite() && score.abs() <= MAX_SCORE, "{score}");
    }
}

/// `len` bytes drawn (by a fixed linear congruential generator) from pieces that mean
/// something to the readers: field names, delimiters, folding, bytes that are not UTF-8.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    const PIECES: [&[u8]; 24] = [
        b"\r\n",
        b"\n",
        b"\n\t",
        b" ",
        b":",
        b";",
        b"=",
        b"/",
        b"(",
        b")",
        b"\"",
        b"\\",
        b"[",
        b"\xff",
        b"\xc3",
        b"pass",
        b"dkim",
        b"mx.example.test",
        b"Authentication-Results:",
        b"Received: from x by mx.example.test",
        b"X-Spam-Status: Yes, score=",
        b"X-Rspamd-Server:",
        b"X-MS-Exchange-Organization-SCL: 9",
        b"1e308",
    ];
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let piece = PIECES[(state >> 33) as usize % PIECES.len()];
        out.extend_from_slice(piece);
    }
    out.truncate(len);
    out
}

#[test]
fn sixty_four_kib_of_garbage_reads_without_panic_and_bounded() {
    for seed in 0..8 {
        let head = garbage(seed, 64 * 1024);
        assert_bounded(&verdicts(&head));
    }
    let bytes: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    assert_bounded(&verdicts(&bytes));
}

#[test]
fn a_value_of_sixty_kib_is_read_to_its_end_without_harm() {
    let long = 60 * 1024;
    let cases = [
        format!(
            "Authentication-Results: mx.example.test; {}",
            "(".repeat(long)
        ),
        format!(
            "Authentication-Results: mx.example.test; \"{}",
            "; dkim=fail".repeat(long / 11)
        ),
        format!(
            "Authentication-Results: mx.example.test{}",
            " x".repeat(long / 2)
        ),
        format!("Received: from {}", "by (".repeat(long / 4)),
        format!("X-Spam-Status: No, {}", "score=".repeat(long / 6)),
        format!("X-Spamd-Result: default: [{}", "[".repeat(long)),
        format!("X-Forefront-Antispam-Report: {}", ";SCL:".repeat(long / 5)),
        format!(
            "X-Spam-Checker-Version: SpamAssassin {}",
            "on ".repeat(long / 3)
        ),
        format!("X-Rspamd-Action: {}", "add header ".repeat(long / 11)),
    ];
    let good = "Received: from a by mx.example.test; date\n\
Authentication-Results: mx.example.test; spf=pass\n";
    for long_field in cases {
        let head = format!("{good}{long_field}\n");
        let v = verdicts(head.as_bytes());
        assert_bounded(&v);
        assert_eq!(v.auth_result(AuthMethod::Spf), Some(AuthResult::Pass));
        assert_eq!(
            v.auth_result(AuthMethod::Dkim),
            None,
            "{}",
            &long_field[..40]
        );
    }
}

#[test]
fn comments_nested_thirty_thousand_deep_cost_a_loop_not_a_stack() {
    let head = format!(
        "Authentication-Results: mx.example.test; dkim=pass {}{}; spf=fail\n",
        "(".repeat(30_000),
        ")".repeat(30_000)
    );
    assert_eq!(
        verdicts(head.as_bytes()).auth,
        [
            (AuthMethod::Spf, AuthResult::Fail),
            (AuthMethod::Dkim, AuthResult::Pass)
        ]
    );
}

#[test]
fn five_thousand_result_fields_are_read_as_far_as_the_bound() {
    let flood = "Authentication-Results: mx.example.test; dkim=fail; spf=none\n".repeat(5_000);
    let v = verdicts(flood.as_bytes());
    assert_bounded(&v);
    assert_eq!(
        v.auth,
        [
            (AuthMethod::Spf, AuthResult::None),
            (AuthMethod::Dkim, AuthResult::Fail)
        ]
    );
    // Only the first MAX_AUTH_FIELDS are looked at, whoever wrote them.
    let untrusted = "Authentication-Results: evil.example; dkim=fail\n";
    let trusted = "Authentication-Results: mx.example.test; dkim=pass\n";
    let within = format!("{}{trusted}", untrusted.repeat(MAX_AUTH_FIELDS - 1));
    assert_eq!(verdicts(within.as_bytes()).auth.len(), 1);
    let past = format!("{}{trusted}", untrusted.repeat(MAX_AUTH_FIELDS));
    assert!(verdicts(past.as_bytes()).auth.is_empty());
}

#[test]
fn no_more_than_max_results_are_read_from_one_field() {
    let head = format!(
        "Authentication-Results: mx.example.test; {}dkim=pass; arc=pass\n",
        "spf=none; ".repeat(MAX_RESULTS_PER_FIELD - 1)
    );
    assert_eq!(
        verdicts(head.as_bytes()).auth,
        [
            (AuthMethod::Spf, AuthResult::None),
            (AuthMethod::Dkim, AuthResult::Pass)
        ]
    );
}

#[test]
fn nothing_past_max_head_or_max_fields_is_read() {
    let result = "Authentication-Results: mx.example.test; dkim=pass\n";
    let big = format!("X-Filler: {}\n", "x".repeat(MAX_HEAD / 2));
    let past_bytes = format!("{big}{big}{result}");
    assert!(verdicts(past_bytes.as_bytes()).auth.is_empty());
    let within_bytes = format!("{big}{result}");
    assert_eq!(verdicts(within_bytes.as_bytes()).auth.len(), 1);

    let filler = |n: usize| "A: 1\n".repeat(n);
    let past_fields = format!("{}{result}", filler(fields::MAX_FIELDS));
    assert!(verdicts(past_fields.as_bytes()).auth.is_empty());
    let within_fields = format!("{}{result}", filler(fields::MAX_FIELDS - 1));
    assert_eq!(verdicts(within_fields.as_bytes()).auth.len(), 1);
}

#[test]
fn bytes_that_are_not_utf8_break_nothing_around_them() {
    let mut head = b"Received: from \xff\xfe by mx.example.test\xc3; date\n".to_vec();
    head.extend_from_slice(b"X-\xffSpam-Flag: YES\n");
    head.extend_from_slice(
        b"Authentication-Results: mx.example.test; dkim=pass (\xe2\x82) x=\xc3\n",
    );
    head.extend_from_slice(b"X-Spam-Status: Yes\xff, score=5.5\n");
    head.extend_from_slice(b"X-Spam-Checker-Version: SpamAssassin 4 on mx.example.test\n");
    let v = verdicts(&head);
    assert_eq!(v.auth, [(AuthMethod::Dkim, AuthResult::Pass)]);
    // `Yes\u{fffd},` is no `Yes`: only the score is left.
    assert_eq!(
        v.spam,
        [SpamVerdict {
            filter: SpamFilter::SpamAssassin,
            spam: false,
            score: Some(5.5)
        }]
    );
}
