//! What the receiving side writes about a canary, read per class: authentication results
//! (rspamd's `Authentication-Results`), spam verdicts and scores (rspamd and SpamAssassin as
//! milters on the stack's MX), the TLS of the submission session, and `\Junk` found without a
//! `folders` setting. All on the stack's filtered path: submission (rspamd signs with DKIM) →
//! MX (rspamd checks SPF, DKIM, DMARC and scores; SpamAssassin scores) → Dovecot.

use crate::support::*;

const CLASSES: [&str; 3] = ["interpersonal", "transactional", "bulk"];

/// A probe submitting through the filtered path into `user`'s IMAP box, `folders` unset (so
/// `\Junk` is found by SPECIAL-USE), trusting the stack's MX for what it writes.
fn filtered_probe(stack: &Stack, name: &str, user: &str, from: &str, classes: &str) -> String {
    let section = probe_section(stack, name, user, "MC_PROBE1_PASSWORD")
        .replace(
            &format!("port = {}", stack.port("MAILSTACK_SUBMISSION_PORT")),
            &format!(
                "port = {}",
                stack.port("MAILSTACK_FILTERED_SUBMISSION_PORT")
            ),
        )
        .replace(
            "from = \"probe1@example.test\"",
            &format!("from = \"{from}\""),
        )
        .replace("  folders = [\"INBOX\", \"Junk\"]\n", "")
        .replace(
            "  timeout = \"5s\"\n",
            &format!(
                "  timeout = \"5s\"\n  trusted_authserv_ids = [\"{}\"]\n",
                stack.get("MAILSTACK_AUTHSERV_ID")
            ),
        );
    with_probe_keys(&section, &format!("classes = [{classes}]"))
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn auth(text: &str, probe: &str, class: &str, method: &str, result: &str) -> f64 {
    let labels = [
        ("probe", probe),
        ("class", class),
        ("method", method),
        ("result", result),
    ];
    metric(text, &series("mailcanary_auth_results_total", &labels)).unwrap_or(0.0)
}

fn verdicts(text: &str, probe: &str, class: &str, filter: &str, verdict: &str) -> f64 {
    let labels = [
        ("probe", probe),
        ("class", class),
        ("filter", filter),
        ("verdict", verdict),
    ];
    metric(text, &series("mailcanary_spam_verdicts_total", &labels)).unwrap_or(0.0)
}

fn score(text: &str, probe: &str, class: &str, filter: &str) -> Option<f64> {
    let labels = [("probe", probe), ("class", class), ("filter", filter)];
    metric(text, &series("mailcanary_spam_score", &labels))
}

/// Sum of every sample of `name` whose labels include all of `labels`.
fn sum_of(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The stack certificate's `notAfter`, Unix seconds.
fn stack_certificate_expiry(stack: &Stack) -> i64 {
    let dir = std::path::Path::new(stack.get("MAILSTACK_CA_FILE"))
        .parent()
        .expect("the CA file is in the stack's TLS dir");
    let pem = std::fs::read(dir.join("server.pem")).expect("the stack's server certificate");
    let cert = openssl::x509::X509::from_pem(&pem).expect("a PEM certificate");
    let epoch = openssl::asn1::Asn1Time::from_unix(0).expect("the epoch");
    let since = epoch.diff(cert.not_after()).expect("a time difference");
    i64::from(since.days) * 86_400 + i64::from(since.secs)
}

#[test]
fn every_class_passes_spf_dkim_dmarc_is_scored_by_both_filters_and_a_broken_key_fails_dkim() {
    let stack = Stack::shared();
    // Shared by this file's tests; each counts only its own probe's canaries.
    let user = "box28@example.test";
    let all = "\"interpersonal\", \"transactional\", \"bulk\"";
    let badkey = format!("probe1@{}", stack.get("MAILSTACK_BADKEY_DOMAIN"));
    let probes = [
        filtered_probe(stack, "signed", user, "probe1@example.test", all),
        filtered_probe(stack, "badkey", user, &badkey, "\"interpersonal\""),
    ]
    .concat();
    let work = Workdir::new("it-deliverability", &probes);
    let text = work.once(stack, "60s");
    for class in CLASSES {
        let delivered = sum_of(
            &text,
            "mailcanary_delivered_total",
            &[("probe", "signed"), ("class", class)],
        );
        assert_eq!(delivered, 1.0, "{class} not delivered:\n{text}");
        for method in ["spf", "dkim", "dmarc"] {
            assert_eq!(
                auth(&text, "signed", class, method, "pass"),
                1.0,
                "{class} {method}:\n{text}"
            );
            assert_eq!(
                auth(&text, "signed", class, method, "fail"),
                0.0,
                "{class} {method}"
            );
        }
        for filter in ["rspamd", "spamassassin"] {
            assert_eq!(
                verdicts(&text, "signed", class, filter, "ham"),
                1.0,
                "{class} {filter}:\n{text}"
            );
            assert_eq!(
                verdicts(&text, "signed", class, filter, "spam"),
                0.0,
                "{class} {filter}"
            );
            assert!(
                score(&text, "signed", class, filter).is_some(),
                "{class} {filter} score:\n{text}"
            );
        }
    }
    // The templates look like what they claim: a newsletter scores higher than a note to a
    // colleague, on both filters.
    for filter in ["rspamd", "spamassassin"] {
        let bulk = score(&text, "signed", "bulk", filter).unwrap_or_default();
        let personal = score(&text, "signed", "interpersonal", filter).unwrap_or_default();
        assert!(
            bulk > personal,
            "{filter}: bulk {bulk} ≤ interpersonal {personal}"
        );
    }
    // Signed with a key the domain's DNS does not publish.
    assert_eq!(
        auth(&text, "badkey", "interpersonal", "dkim", "fail"),
        1.0,
        "{text}"
    );
    assert_eq!(auth(&text, "badkey", "interpersonal", "dkim", "pass"), 0.0);
    assert_eq!(
        auth(&text, "badkey", "interpersonal", "dmarc", "fail"),
        1.0,
        "{text}"
    );
    // The submission's TLS, as the server chose it and the certificate it showed.
    let tls = series(
        "mailcanary_smtp_tls_info",
        &[
            ("probe", "signed"),
            ("version", "TLSv1.3"),
            ("cipher", "TLS_AES_256_GCM_SHA384"),
        ],
    );
    assert_eq!(metric(&text, &tls), Some(1.0), "{text}");
    let expiry = series(
        "mailcanary_smtp_certificate_expiry_timestamp_seconds",
        &[("probe", "signed")],
    );
    assert_eq!(
        metric(&text, &expiry),
        Some(stack_certificate_expiry(stack) as f64),
        "{text}"
    );
}

#[test]
fn an_authentication_result_from_an_untrusted_authserv_id_counts_nothing() {
    // Over the unfiltered submission port nothing on the way writes or removes
    // Authentication-Results: the one the sender wrote (a custom class header) arrives as is.
    let stack = Stack::shared();
    let user = "box28@example.test";
    let forged = "evil.example; dkim=pass header.d=example.test; spf=pass; dmarc=pass";
    let section = probe_section(stack, "forged-ar", user, "MC_PROBE1_PASSWORD").replace(
        "  timeout = \"5s\"\n",
        &format!(
            "  timeout = \"5s\"\n  cleanup = \"keep\"\n  trusted_authserv_ids = [\"{}\"]\n",
            stack.get("MAILSTACK_AUTHSERV_ID")
        ),
    );
    let config = format!(
        "{}\n[class.vouched]\ntemplate = \"interpersonal\"\nheaders = {{ \"Authentication-Results\" = \"{forged}\" }}\n",
        with_probe_keys(&section, "classes = [\"vouched\"]")
    );
    let work = Workdir::new("it-forged-ar", &config);
    let text = work.once(stack, "30s");
    let delivered = sum_of(
        &text,
        "mailcanary_delivered_total",
        &[("probe", "forged-ar")],
    );
    assert_eq!(delivered, 1.0, "{text}");
    let (_, mail) = wait_for_mail(&stack.maildir(user), "probe=forged-ar");
    assert!(
        mail.contains(&format!("Authentication-Results: {forged}")),
        "{mail}"
    );
    assert_eq!(
        sum_of(
            &text,
            "mailcanary_auth_results_total",
            &[("probe", "forged-ar")]
        ),
        0.0,
        "{text}"
    );
    assert!(
        !text.contains("mailcanary_auth_results_total{probe=\"forged-ar\""),
        "a series for an untrusted result:\n{text}"
    );
}

#[test]
fn a_class_judged_spam_lands_in_the_junk_folder_found_by_special_use() {
    let stack = Stack::shared();
    let user = "box28@example.test";
    let section = filtered_probe(stack, "junked", user, "probe1@example.test", "\"flagged\"");
    // X-Test-Spam: the stack's filters both add 10 points for it.
    let config = format!(
        "{section}\n[class.flagged]\ntemplate = \"bulk\"\nheaders = {{ \"X-Test-Spam\" = \"yes\" }}\n"
    );
    let work = Workdir::new("it-junk", &config);
    let text = work.once(stack, "60s");
    let junk = series(
        "mailcanary_delivered_total",
        &[
            ("probe", "junked"),
            ("class", "flagged"),
            ("folder", "Junk"),
        ],
    );
    assert_eq!(
        metric(&text, &junk),
        Some(1.0),
        "not found in Junk:\n{text}"
    );
    for filter in ["rspamd", "spamassassin"] {
        assert_eq!(
            verdicts(&text, "junked", "flagged", filter, "spam"),
            1.0,
            "{filter}:\n{text}"
        );
        let points = score(&text, "junked", "flagged", filter).unwrap_or_default();
        assert!(points >= 5.0, "{filter} scored {points}");
    }
}
