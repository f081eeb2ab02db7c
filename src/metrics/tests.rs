use super::families::{DELAY, HOP, SMTP};
use super::*;
use crate::ledger::example_books;
use crate::ledger::{DELAY_BUCKETS, HOP_BUCKETS};

fn probe(name: &str, folders: &[&str], ledger: Ledger) -> BooksInMemory {
    BooksInMemory::new(name, folders, ledger)
}

#[test]
fn families_keep_their_names_and_order() {
    let names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "build_info",
            "sent_total",
            "send_failures_total",
            "smtp_duration_seconds",
            "delivered_total",
            "delivery_delay_seconds",
            "server_delay_seconds",
            "hop_delay_seconds",
            "last_hop_delay_seconds",
            "clock_skew_seconds",
            "last_delivery_delay_seconds",
            "last_delivery_timestamp_seconds",
            "in_flight",
            "oldest_in_flight_age_seconds",
            "lost_total",
            "bounced_total",
            "delay_notices_total",
            "late_total",
            "duplicates_total",
            "replayed_total",
            "sequence_gaps_total",
            "forged_total",
            "header_stripped_total",
            "auth_results_total",
            "spam_verdicts_total",
            "spam_score",
            "smtp_tls_info",
            "smtp_certificate_expiry_timestamp_seconds",
            "mailbox_up",
            "mailbox_step_duration_seconds",
            "mailbox_errors_total",
            "mails_skipped_total",
            "state_errors_total",
        ]
        .map(|n| format!("mailcanary_{n}"))
    );
}

#[test]
fn le_labels_spell_the_bounds() {
    for (buckets, bounds) in [
        (&DELAY, &DELAY_BUCKETS[..]),
        (&HOP, &HOP_BUCKETS[..]),
        (&SMTP, &crate::ledger::SMTP_BUCKETS[..]),
    ] {
        assert_eq!(buckets.bounds, bounds);
        let spelled: Vec<String> = bounds.iter().map(f64::to_string).collect();
        assert_eq!(buckets.le, spelled.as_slice());
    }
}

#[test]
fn an_agent_without_probes_still_reports_itself() {
    let text = render::<BooksInMemory>(&[], AgentFigures { state_errors: 3 }, 0);
    assert!(
        text.contains("# TYPE mailcanary_build_info gauge"),
        "{text}"
    );
    assert!(text.contains("mailcanary_state_errors_total 3"), "{text}");
    assert!(
        !text.contains("mailcanary_sent_total"),
        "empty families are left out"
    );
}

fn render_books_text(ledger: Ledger, name: &str) -> String {
    let probes = [probe(name, &["INBOX"], ledger)];
    render(&probes, AgentFigures::default(), 10_000)
}

/// Series of the probe: every sample but the agent's own two.
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| !l.starts_with("mailcanary_build_info") && !l.starts_with("mailcanary_state"))
        .count()
}

/// README documents these figures ("Series per probe"); change both together.
#[test]
fn a_probe_with_3_classes_and_8_hops_has_a_bounded_number_of_series() {
    let text = render_books_text(example_books(3, 8, 2), "p");
    let count = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
    assert_eq!(
        count("mailcanary_hop_delay_seconds"),
        8 * (HOP_BUCKETS.len() + 3),
        "one histogram per hop, not per class and hop, over the coarse hop buckets"
    );
    assert_eq!(count("mailcanary_last_hop_delay_seconds"), 3 * 8);
    assert_eq!(
        count("mailcanary_smtp_duration_seconds"),
        14,
        "one SMTP histogram per probe, not per class"
    );
    // Per class 72 (sent 1, send failures 5, delivered 1, delivery and server histograms 22
    // each, skew, last delay, last time, in flight, oldest age 5, eight counters, last hop
    // delay 8 of this test's 8 hops) = 216; per probe the SMTP histogram 14, 8 hop histograms
    // of 12, 9 stage counters, mailbox_up, forged{class="unknown"} and mails_skipped = 122.
    // `bounced_total` adds a series per status only once a bounce happened (none here).
    // Before: 335 (no delay notices), 443 (SMTP histogram per class, hop histograms of 22);
    // before hop histograms left the class: 771.
    assert_eq!(series(&text), 338, "{text}");
    assert_eq!(series(&render_books_text(example_books(3, 3, 2), "p")), 263);
}

#[test]
fn in_flight_series_come_from_the_per_class_counts() {
    let text = render_books_text(example_books(2, 1, 3), "p");
    assert!(
        text.contains("mailcanary_in_flight{probe=\"p\",class=\"class1\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("mailcanary_oldest_in_flight_age_seconds{probe=\"p\",class=\"class0\"} 9"),
        "{text}"
    );
}

#[test]
fn folder_and_probe_names_are_escaped_in_label_values() {
    let folder = "Say \"hi\"\\there\nnow";
    let mut l = example_books(1, 0, 0);
    l.classes
        .get_mut("class0")
        .expect("opened")
        .delivered
        .insert(folder.to_string(), 2);
    let probes = [probe("p\"1", &["INBOX"], l)];
    let text = render(&probes, AgentFigures::default(), 0);
    let want = r#"mailcanary_delivered_total{probe="p\"1",class="class0",folder="Say \"hi\"\\there\nnow"} 2"#;
    assert!(text.lines().any(|l| l == want), "{text}");
    assert!(
        text.lines()
            .all(|l| l.is_empty() || l.starts_with("mailcanary_") || l.starts_with('#')),
        "no line is broken by a raw newline\n{text}"
    );
}

#[test]
fn each_family_holds_every_probe_contiguously_after_one_header() {
    let probes = [
        probe("a", &["INBOX"], example_books(2, 2, 1)),
        probe("b", &["INBOX", "Junk"], example_books(2, 2, 1)),
    ];
    let text = render(&probes, AgentFigures::default(), 0);
    let mut seen = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = FAMILIES
            .iter()
            .position(|f| name.starts_with(f.name))
            .expect("a known family");
        if seen.last() != Some(&family) {
            assert!(!seen.contains(&family), "{name} split\n{text}");
            seen.push(family);
        }
    }
    assert_eq!(text.matches("# TYPE mailcanary_sent_total").count(), 1);
    assert!(
        text.contains("mailcanary_delivered_total{probe=\"b\",class=\"class1\",folder=\"Junk\"} 0")
    );
    assert!(text.contains("mailcanary_smtp_duration_seconds_bucket{probe=\"a\",le=\"0.1\"} 2"));
    assert!(text.contains("mailcanary_hop_delay_seconds_bucket{probe=\"b\",hop=\"1\",le=\"1\"} 2"));
}

#[test]
fn a_body_in_pieces_is_the_same_body_and_each_piece_ends_a_series() {
    // Empty families (bounces, steps of books that have none) are among these: their headers
    // must not slip out with a piece before it is known that they stay empty.
    let probes: Vec<BooksInMemory> = (0..40)
        .map(|i| probe(&format!("p{i:02}"), &["INBOX"], example_books(3, 3, 2)))
        .collect();
    let whole = render(&probes, AgentFigures { state_errors: 1 }, 5_000);
    for len in [1, 100, 4096, 1 << 20] {
        let mut pieces = Vec::new();
        let pieces_of = Pieces { len, capacity: 64 };
        let all_taken = render_in_pieces(
            &probes,
            AgentFigures { state_errors: 1 },
            5_000,
            pieces_of,
            &mut |piece| {
                pieces.push(piece);
                true
            },
        );
        assert!(all_taken);
        assert_eq!(pieces.concat(), whole, "pieces of {len}");
        assert!(pieces.iter().all(|p| p.is_empty() || p.ends_with('\n')));
        if len == 4096 {
            assert!(pieces.len() > 10, "{} pieces", pieces.len());
        }
    }
    // A client that leaves: the render stops at the piece it refused.
    let mut offered = 0;
    let small = Pieces {
        len: 1000,
        capacity: 1000,
    };
    let taken = render_in_pieces(&probes, AgentFigures::default(), 0, small, &mut |_| {
        offered += 1;
        offered < 3
    });
    assert!(!taken);
    assert_eq!(offered, 3);
}

/// What the receiving side wrote exists only where it was seen; a method's `pass` and `fail`
/// (a filter's `spam` and `ham`) exist together from its first delivery, so an alert's
/// `increase()` sees the first failure. Without TLS or verdicts a probe has none of these.
#[test]
fn receiver_verdicts_and_tls_appear_where_seen_with_their_alerting_pair() {
    use crate::verdict::{AuthMethod, AuthResult, SpamFilter, SpamVerdict, Verdicts};
    let plain = render_books_text(example_books(3, 2, 0), "p");
    for family in [
        "auth_results_total",
        "spam_verdicts_total",
        "spam_score",
        "smtp_tls_info",
    ] {
        assert!(
            !plain.contains(&format!("mailcanary_{family}{{")),
            "{family}:\n{plain}"
        );
    }
    let mut ledger = example_books(1, 2, 0);
    let class = ledger.classes.keys().next().cloned().expect("a class");
    let verdicts = Verdicts {
        auth: vec![(AuthMethod::Dkim, AuthResult::TempError)],
        spam: vec![SpamVerdict {
            filter: SpamFilter::Rspamd,
            spam: true,
            score: Some(7.5),
        }],
    };
    ledger.judged_by_receiver(&class, &verdicts);
    ledger.submitted_over(Some(crate::send::SessionTls {
        version: "TLSv1.2".into(),
        cipher: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        certificate_expires_s: Some(2_000_000_000),
    }));
    let text = render_books_text(ledger, "p");
    let auth = |result: &str| {
        format!(
            "mailcanary_auth_results_total{{probe=\"p\",class=\"{class}\",method=\"dkim\",result=\"{result}\"}}"
        )
    };
    assert!(
        text.contains(&format!("{} 1\n", auth("temperror"))),
        "{text}"
    );
    assert!(text.contains(&format!("{} 0\n", auth("pass"))), "{text}");
    assert!(text.contains(&format!("{} 0\n", auth("fail"))), "{text}");
    assert!(!text.contains(&auth("softfail")), "unseen words stay out");
    assert!(!text.contains("method=\"spf\""), "unseen methods stay out");
    let spam = |verdict: &str| {
        format!(
            "mailcanary_spam_verdicts_total{{probe=\"p\",class=\"{class}\",filter=\"rspamd\",verdict=\"{verdict}\"}}"
        )
    };
    assert!(text.contains(&format!("{} 1\n", spam("spam"))), "{text}");
    assert!(text.contains(&format!("{} 0\n", spam("ham"))), "{text}");
    assert!(!text.contains("filter=\"spamassassin\""), "{text}");
    assert!(text.contains(&format!(
        "mailcanary_spam_score{{probe=\"p\",class=\"{class}\",filter=\"rspamd\"}} 7.5\n"
    )));
    assert!(text.contains(
        "mailcanary_smtp_tls_info{probe=\"p\",version=\"TLSv1.2\",cipher=\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"} 1\n"
    ));
    assert!(text.contains(
        "mailcanary_smtp_certificate_expiry_timestamp_seconds{probe=\"p\"} 2000000000\n"
    ));
}
