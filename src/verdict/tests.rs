use super::*;

/// The head of a canary delivered through the local stack: Postfix on `smtp.example.test`
/// signs, Postfix on `mx.example.test` checks (rspamd and SpamAssassin milters, which appended
/// the last seven fields) and hands over to Dovecot by LMTP.
const REAL: &str = "Return-Path: <probe1@example.test>\n\
Delivered-To: box20@example.test\n\
Received: from mx.example.test\n\
\tby mx.example.test with LMTP\n\
\tid 8ElnBEA5DWsDdAAAg+zDdQ\n\
\t(envelope-from <probe1@example.test>)\n\
\tfor <box20@example.test>; Mon, 30 Nov 2026 08:52:16 +0000\n\
Received: from smtp.example.test (unknown [127.0.0.1])\n\
\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\
\t(No client certificate requested)\n\
\tby mx.example.test (Postfix) with ESMTPS id DD6349E22C2\n\
\tfor <box20@example.test>; Mon, 30 Nov 2026 08:52:15 +0000 (UTC)\n\
Authentication-Results: mx.example.test;\n\
\tdkim=pass header.d=example.test header.s=mailstack header.b=Hw0A7WzD;\n\
\tdmarc=pass (policy=reject) header.from=example.test;\n\
\tspf=pass (mx.example.test: domain of probe1@example.test designates 127.0.0.1 as permitted sender) smtp.mailfrom=probe1@example.test\n\
Received: from vm (unknown [127.0.0.1])\n\
\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\
\t(No client certificate requested)\n\
\tby smtp.example.test (Postfix) with ESMTPSA id CF9FA9E2244\n\
\tfor <box20@example.test>; Mon, 30 Nov 2026 08:52:15 +0000 (UTC)\n\
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test;\n\
\ts=mailstack; t=1796028735; bh=Za8w...; b=Hw0A...\n\
Date: Mon, 30 Nov 2026 08:52:15 +0000\n\
From: probe1@example.test\n\
To: box20@example.test\n\
Message-ID: <01M8NTF8B3P2M251VJVP2DVN30.mailcanary@example.test>\n\
X-Mailcanary: v=1; id=01M8NTF8B3P2M251VJVP2DVN30; probe=filtered-good; class=interpersonal; seq=1; sent=1796028735845; agent=final16; sig=PVQSDsSxZKvFk0nUKxFs56teUBmoTfHjwJOXCBLnuwY\n\
MIME-Version: 1.0\n\
Subject: Quick question about tomorrow (1)\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 7bit\n\
X-Rspamd-Score: -0.90\n\
X-Rspamd-Server: mx.example.test\n\
X-Rspamd-Queue-Id: DD6349E22C2\n\
X-Rspamd-Action: no action\n\
X-Spamd-Result: default: False [-0.90 / 6.00];\n\
\tDMARC_POLICY_ALLOW(-0.50)[example.test,reject];\n\
\tR_DKIM_ALLOW(-0.20)[example.test:s=mailstack];\n\
\tR_SPF_ALLOW(-0.20)[+ip4:127.0.0.1]\n\
X-Spam-Status: No, score=-1.2 required=5.0 tests=ALL_TRUSTED,DKIM_SIGNED,\n\
\tDKIM_VALID,DKIM_VALID_AU,DKIM_VALID_EF autolearn=disabled version=4.0.1\n\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on mx.example.test\n";

/// The `Authentication-Results:` of [`REAL`].
const REAL_AR: &str = "Authentication-Results: mx.example.test;\n\
\tdkim=pass header.d=example.test header.s=mailstack header.b=Hw0A7WzD;\n\
\tdmarc=pass (policy=reject) header.from=example.test;\n\
\tspf=pass (mx.example.test: domain of probe1@example.test designates 127.0.0.1 as permitted sender) smtp.mailfrom=probe1@example.test\n";

/// Where the milters' fields start in [`REAL`].
const MILTERS: &str = "X-Rspamd-Score:";

/// The receiving boundary of [`REAL`]: Postfix on the MX.
const BOUNDARY: &str = "Received: from smtp.example.test";

fn ids() -> Vec<String> {
    vec!["mx.example.test".to_string()]
}

fn verdicts(head: &str) -> Verdicts {
    read(head.as_bytes(), &ids())
}

/// `head` with `fields` inserted before the first line that starts with `before`.
fn insert(head: &str, before: &str, fields: &str) -> String {
    let at = head.find(before).expect("marker in head");
    format!("{}{fields}{}", &head[..at], &head[at..])
}

/// [`REAL`] as the sender's side left it: without the milters' fields.
fn without_milters() -> String {
    REAL[..REAL.find(MILTERS).expect("milter fields")].to_string()
}

fn spam(filter: SpamFilter, spam: bool, score: Option<f64>) -> SpamVerdict {
    SpamVerdict {
        filter,
        spam,
        score,
    }
}

const REAL_AUTH: [(AuthMethod, AuthResult); 3] = [
    (AuthMethod::Spf, AuthResult::Pass),
    (AuthMethod::Dkim, AuthResult::Pass),
    (AuthMethod::Dmarc, AuthResult::Pass),
];

#[test]
fn the_real_canary_passed_all_three_and_both_filters_call_it_ham() {
    let crlf = REAL.replace('\n', "\r\n");
    for head in [REAL, crlf.as_str()] {
        let v = verdicts(head);
        assert_eq!(v.auth, REAL_AUTH);
        assert_eq!(
            v.spam,
            [
                spam(SpamFilter::SpamAssassin, false, Some(-1.2)),
                spam(SpamFilter::Rspamd, false, Some(-0.9)),
            ]
        );
        assert_eq!(v.auth_result(AuthMethod::Arc), None);
        assert_eq!(v.spam_verdict(SpamFilter::Microsoft), None);
    }
}

#[test]
fn a_body_is_never_read_as_fields() {
    let head = format!(
        "{}\nAuthentication-Results: mx.example.test; arc=fail\nX-Spam-Flag: YES\n",
        REAL.replace("dkim=pass", "dkim=none")
    );
    let v = verdicts(&head);
    assert_eq!(v.auth_result(AuthMethod::Dkim), Some(AuthResult::None));
    assert_eq!(v.auth_result(AuthMethod::Arc), None);
    assert!(!v.spam_verdict(SpamFilter::SpamAssassin).unwrap().spam);
}

#[test]
fn a_broken_signature_reads_as_dkim_and_dmarc_failing_and_spf_neutral() {
    let badkey = "Authentication-Results: mx.example.test;\r\n\
\tdkim=fail (\"headers rsa verify failed\") header.d=badkey.example.test header.s=mailstack header.b=Qs+LwbYf;\r\n\
\tdmarc=fail reason=\"No valid SPF\" header.from=badkey.example.test (policy=reject);\r\n\
\tspf=neutral (mx.example.test: 127.0.0.1 is neither permitted nor denied by domain of probe1@badkey.example.test) smtp.mailfrom=probe1@badkey.example.test\r\n";
    let head = REAL
        .replace('\n', "\r\n")
        .replace(&REAL_AR.replace('\n', "\r\n"), badkey);
    assert_eq!(
        verdicts(&head).auth,
        [
            (AuthMethod::Spf, AuthResult::Neutral),
            (AuthMethod::Dkim, AuthResult::Fail),
            (AuthMethod::Dmarc, AuthResult::Fail),
        ]
    );
}

#[test]
fn results_from_an_untrusted_authserv_id_count_nothing_even_at_the_top() {
    let forged =
        "Authentication-Results: evil.example; dkim=pass; spf=pass; dmarc=pass; arc=pass\n";
    let head = REAL.replace(REAL_AR, forged);
    assert!(verdicts(&head).auth.is_empty());
    assert!(verdicts(&format!("{forged}{head}")).auth.is_empty());
    // An authserv-id is matched exactly: neither a subdomain nor a longer name counts.
    for id in [
        "sub.mx.example.test",
        "mx.example.test.evil.example",
        "xmx.example.test",
    ] {
        let head = REAL.replace(
            REAL_AR,
            &format!("Authentication-Results: {id}; dkim=pass\n"),
        );
        assert!(verdicts(&head).auth.is_empty(), "{id}");
    }
}

/// A sender can write an `Authentication-Results:` with the receiving side's own id, and
/// nothing in the head tells it from the real one: it counts. RFC 8601 §5 asks the receiving
/// side to remove (or rename) such fields as the mail comes in; one that does not lets a sender
/// claim a pass. Here the real result failed and the sender's copy at the bottom says pass.
#[test]
fn results_with_a_trusted_id_count_even_when_a_sender_put_them_there() {
    let head = REAL.replace("dkim=pass header.d", "dkim=fail header.d");
    assert_eq!(
        verdicts(&head).auth_result(AuthMethod::Dkim),
        Some(AuthResult::Fail)
    );
    let forged = insert(
        &head,
        MILTERS,
        "Authentication-Results: mx.example.test; dkim=pass\n",
    );
    assert_eq!(
        verdicts(&forged).auth_result(AuthMethod::Dkim),
        Some(AuthResult::Pass)
    );
}

#[test]
fn a_senders_filter_fields_naming_an_untrusted_writer_count_nothing() {
    let sender = "X-Spam-Status: No, score=-50.0 required=5.0 tests=NONE\n\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on attacker.example\n\
X-Rspamd-Server: attacker.example\n\
X-Rspamd-Action: no action\n\
X-Rspamd-Score: -50.00\n";
    let head = format!("{}{sender}", without_milters());
    assert!(verdicts(&head).spam.is_empty());
    // Names that only end like a trusted one, or do not name SpamAssassin, are no better.
    for writer in [
        "X-Spam-Checker-Version: SpamAssassin 4.0.1 on xmx.example.test",
        "X-Spam-Checker-Version: SpamAssassin 4.0.1 on mx.example.test.attacker.example",
        "X-Spam-Checker-Version: NotSpamAssassin 1.0 on mx.example.test",
        "X-Spam-Checker-Version: SpamAssassin 4.0.1 (on mx.example.test)",
    ] {
        let head = format!(
            "{}X-Spam-Status: No, score=-50.0\n{writer}\n",
            without_milters()
        );
        assert!(verdicts(&head).spam.is_empty(), "{writer}");
    }
}

#[test]
fn a_bare_spam_flag_below_the_boundary_counts_nothing_and_above_it_counts() {
    let below = format!("{}X-Spam-Flag: NO\n", without_milters());
    assert!(verdicts(&below).spam.is_empty());
    let above = insert(&without_milters(), BOUNDARY, "X-Spam-Flag: NO\n");
    assert_eq!(
        verdicts(&above).spam,
        [spam(SpamFilter::SpamAssassin, false, None)]
    );
}

#[test]
fn spamassassin_flagging_spam_gives_spam_with_its_score() {
    let flag_only = "X-Spam-Flag: YES\n\
X-Spam-Score: 7.3\n\
X-Spam-Level: *******\n\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on mx.example.test\n";
    let as_spamass_milter_writes = "X-Spam-Flag: YES\n\
X-Spam-Status: Yes, score=7.3 required=5.0 tests=BAYES_99,DKIM_INVALID,\n\
\tMISSING_MID autolearn=no version=4.0.1\n\
X-Spam-Report: \n\
\t*  3.5 BAYES_99 BODY: Bayes spam probability is 99 to 100%\n\
\t*      [score: 1.0000]\n\
\t*  0.1 DKIM_INVALID DKIM or DK signature exists, but is not valid\n\
X-Spam-Level: *******\n\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on mx.example.test\n";
    for run in [flag_only, as_spamass_milter_writes] {
        let head = format!("{}{run}", without_milters());
        assert_eq!(
            verdicts(&head).spam,
            [spam(SpamFilter::SpamAssassin, true, Some(7.3))],
            "{run}"
        );
    }
}

#[test]
fn rspamd_calling_spam_gives_spam_with_the_score_of_its_result() {
    let run = "X-Spamd-Result: default: True [15.20 / 6.00];\n\
\tBAYES_SPAM(5.10)[99.99%];\n\
\tR_DKIM_REJECT(1.00)[example.test:s=mailstack]\n\
X-Rspamd-Queue-Id: DD6349E22C2\n\
X-Spam: Yes\n\
X-Rspamd-Action: add header\n\
X-Rspamd-Server: mx.example.test\n";
    let head = format!("{}{run}", without_milters());
    assert_eq!(
        verdicts(&head).spam,
        [spam(SpamFilter::Rspamd, true, Some(15.2))]
    );
}

#[test]
fn rspamd_actions_that_mark_or_refuse_are_spam_and_delays_are_not() {
    for (action, said) in [
        ("add header", Some(true)),
        ("Rewrite  Subject", Some(true)),
        ("reject", Some(true)),
        ("no action", Some(false)),
        ("greylist", Some(false)),
        ("soft reject", Some(false)),
        ("discard everything", None),
    ] {
        let head = format!(
            "{}X-Rspamd-Server: mx.example.test\nX-Rspamd-Action: {action}\n",
            without_milters()
        );
        let found = verdicts(&head).spam_verdict(SpamFilter::Rspamd);
        assert_eq!(found.map(|v| v.spam), said, "{action}");
    }
}

#[test]
fn microsoft_scl_counts_above_the_boundary_only() {
    let scl = "X-MS-Exchange-Organization-SCL: 5\n";
    let report = "X-Forefront-Antispam-Report: CIP:192.0.2.1;CTRY:;LANG:en;SCL:1;SRV:;IPV:NLI;\n\
\tSFV:NSPM;H:mail.example.org;PTR:;CAT:NONE;SFS:;DIR:INB;\n";
    let above = |fields: &str| {
        verdicts(&insert(REAL, BOUNDARY, fields)).spam_verdict(SpamFilter::Microsoft)
    };
    assert_eq!(
        above(scl),
        Some(spam(SpamFilter::Microsoft, true, Some(5.0)))
    );
    assert_eq!(
        above(report),
        Some(spam(SpamFilter::Microsoft, false, Some(1.0)))
    );
    // The topmost readable one wins; a level out of range is no level.
    let several =
        format!("X-MS-Exchange-Organization-SCL: 10\n{report}X-MS-Exchange-Organization-SCL: 9\n");
    assert_eq!(
        above(&several),
        Some(spam(SpamFilter::Microsoft, false, Some(1.0)))
    );
    assert_eq!(
        above("X-MS-Exchange-Organization-SCL: -1\n"),
        Some(spam(SpamFilter::Microsoft, false, Some(-1.0)))
    );
    // Below the boundary a sender could have written it.
    let below = insert(REAL, MILTERS, scl);
    assert_eq!(verdicts(&below).spam_verdict(SpamFilter::Microsoft), None);
    // No trusted `Received:` at all: no boundary, nothing above it.
    let unstamped = format!(
        "{scl}{}",
        REAL.replace("by mx.example.test", "by relay.example.org")
    );
    assert_eq!(
        verdicts(&unstamped).spam_verdict(SpamFilter::Microsoft),
        None
    );
}

#[test]
fn no_trusted_id_reads_nothing() {
    assert_eq!(read(REAL.as_bytes(), &[]), Verdicts::default());
    let blank = [String::new(), "  ".to_string()];
    assert_eq!(read(REAL.as_bytes(), &blank), Verdicts::default());
}

#[test]
fn semicolons_and_equals_in_comments_and_quoted_strings_start_no_result() {
    let ar = "Authentication-Results: \"mx.example.test\" 1 (the id, quoted; spf=pass);\n\
\tdkim=fail (sig (nested \\) ; dmarc=pass) broken) header.d=x.test;\n\
\tspf=softfail reason=\"said \\\"; dmarc=pass\\\" = quoted\" smtp.mailfrom=a@x.test;\n\
\tdmarc = none header.from=x.test\n";
    let head = REAL.replace(REAL_AR, ar);
    assert_eq!(
        verdicts(&head).auth,
        [
            (AuthMethod::Spf, AuthResult::SoftFail),
            (AuthMethod::Dkim, AuthResult::Fail),
            (AuthMethod::Dmarc, AuthResult::None),
        ]
    );
}

#[test]
fn folded_fields_and_names_in_any_case_are_read() {
    let head = "received: from a.example.org\n BY Mx.Example.Test. ; Mon, 30 Nov 2026 08:52:15 +0000\n\
authentication-RESULTS:\n mx.example.test\n ;\n DKIM\n =\n PASS\n\
x-SPAM-status:\n\tYES,\n\tscore=9.5\n\
X-SPAM-CHECKER-VERSION: spamassassin 3.4.6 (2021-04-09) on\n\tMX.Example.Test\n";
    let v = verdicts(head);
    assert_eq!(v.auth, [(AuthMethod::Dkim, AuthResult::Pass)]);
    assert_eq!(v.spam, [spam(SpamFilter::SpamAssassin, true, Some(9.5))]);
}

#[test]
fn a_pass_wins_and_otherwise_the_first_result_from_the_top_stays() {
    let head = "Authentication-Results: mx.example.test; dkim=fail header.d=a.test; spf=softfail\n\
Authentication-Results: mx.example.test; dkim/1=pass header.d=b.test; spf=hardfail\n\
Authentication-Results: mx.example.test; dkim=fail; spf=pass (a comment) smtp.mailfrom=x\n";
    assert_eq!(
        verdicts(head).auth,
        [
            (AuthMethod::Spf, AuthResult::Pass),
            (AuthMethod::Dkim, AuthResult::Pass),
        ]
    );
    let no_pass = "Authentication-Results: mx.example.test; spf=softfail; dmarc=temperror\n\
Authentication-Results: mx.example.test; spf=hardfail; dmarc=permerror; arc=policy\n";
    assert_eq!(
        verdicts(no_pass).auth,
        [
            (AuthMethod::Spf, AuthResult::SoftFail),
            (AuthMethod::Dmarc, AuthResult::TempError),
            (AuthMethod::Arc, AuthResult::Policy),
        ]
    );
}

#[test]
fn methods_and_results_not_reported_are_ignored() {
    let head = "Authentication-Results: mx.example.test; none\n\
Authentication-Results: mx.example.test; auth=pass smtp.auth=u; dkim-adsp=pass; iprev=pass;\n\
\tdkim=excellent; dkim/x=pass; spf=HardFail; =pass; arc pass; ARC=Pass\n";
    assert_eq!(
        verdicts(head).auth,
        [
            (AuthMethod::Spf, AuthResult::Fail),
            (AuthMethod::Arc, AuthResult::Pass),
        ]
    );
}

#[test]
fn trusted_hosts_match_subdomains_but_authserv_ids_only_themselves() {
    let v = read(REAL.as_bytes(), &["example.test".to_string()]);
    assert!(v.auth.is_empty(), "the authserv-id is mx.example.test");
    assert_eq!(v.spam.len(), 2, "the milters ran on a host of example.test");
    let v = read(REAL.as_bytes(), &["ample.test".to_string()]);
    assert_eq!(v, Verdicts::default());
}

#[test]
fn a_run_ends_where_another_field_comes_between() {
    // The writer in one run, the verdict in the next: neither run counts.
    let head = format!(
        "{}X-Rspamd-Server: mx.example.test\nX-Mailer: relay\nX-Rspamd-Score: -5.00\nX-Rspamd-Action: no action\n",
        without_milters()
    );
    assert!(verdicts(&head).spam.is_empty());
}

#[test]
fn rspamds_score_bar_is_part_of_its_run() {
    let run = |between: &str| {
        let head = format!(
            "{}X-Rspamd-Server: mx.example.test\n{between}\n\
X-Spamd-Result: default: True [7.00 / 6.00]\n",
            without_milters()
        );
        verdicts(&head).spam
    };
    assert_eq!(
        run("X-Spamd-Bar: +++++++"),
        [spam(SpamFilter::Rspamd, true, Some(7.0))]
    );
    assert!(run("X-Other: 1").is_empty());
}

#[test]
fn a_run_above_the_boundary_wins_over_the_milters_at_the_bottom() {
    let head = insert(
        REAL,
        BOUNDARY,
        "X-Spam-Status: Yes, score=12.0 required=5.0\n",
    );
    let v = verdicts(&head);
    assert_eq!(
        v.spam_verdict(SpamFilter::SpamAssassin),
        Some(spam(SpamFilter::SpamAssassin, true, Some(12.0)))
    );
    assert_eq!(
        v.spam_verdict(SpamFilter::Rspamd),
        Some(spam(SpamFilter::Rspamd, false, Some(-0.9)))
    );
}

#[test]
fn the_last_counted_run_at_the_bottom_wins() {
    let head = format!(
        "{REAL}X-Mailer: second pass\n\
X-Spam-Status: Yes, score=8.0 required=5.0\n\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on filter2.mx.example.test\n"
    );
    assert_eq!(
        verdicts(&head).spam_verdict(SpamFilter::SpamAssassin),
        Some(spam(SpamFilter::SpamAssassin, true, Some(8.0)))
    );
}

#[test]
fn a_senders_fields_that_run_into_the_milters_lose_to_them() {
    let head = format!(
        "{}X-Spam-Status: No, score=-100.0\n\
X-Spam-Checker-Version: SpamAssassin 4.0.1 on mx.example.test\n\
X-Spam-Flag: YES\n\
X-Spam-Status: Yes, score=6.1 required=5.0 tests=BAYES_99\n\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on mx.example.test\n",
        without_milters()
    );
    assert_eq!(
        verdicts(&head).spam,
        [spam(SpamFilter::SpamAssassin, true, Some(6.1))]
    );
}

#[test]
fn scores_are_finite_and_clamped_and_a_run_without_verdict_or_score_is_ignored() {
    let score_of = |text: &str| {
        let head = format!(
            "{}X-Rspamd-Score: {text}\nX-Rspamd-Server: mx.example.test\n",
            without_milters()
        );
        verdicts(&head).spam_verdict(SpamFilter::Rspamd)
    };
    assert_eq!(
        score_of("-3.5"),
        Some(spam(SpamFilter::Rspamd, false, Some(-3.5)))
    );
    assert_eq!(score_of("1e300").and_then(|v| v.score), Some(MAX_SCORE));
    assert_eq!(score_of("-5000").and_then(|v| v.score), Some(-MAX_SCORE));
    for not_a_score in ["NaN", "inf", "-infinity", "", "abc", &"9".repeat(40)] {
        assert_eq!(score_of(not_a_score), None, "{not_a_score}");
    }
    let status = format!(
        "{}X-Spam-Status: No, score=nan required=5.0\nX-Spam-Checker-Version: SpamAssassin 4 on mx.example.test\n",
        without_milters()
    );
    assert_eq!(
        verdicts(&status).spam,
        [spam(SpamFilter::SpamAssassin, false, None)]
    );
}
