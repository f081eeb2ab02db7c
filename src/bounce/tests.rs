use super::*;

const MARK: &str =
    "v=1; id=01ABC; probe=p1; class=bulk; seq=3; sent=1700000000000; agent=a; sig=xyz";

/// The mark of the folded header in [`postfix_dsn`], as a canary's own head would give it.
fn folded_mark() -> String {
    crate::canary::find_header(
        b"X-Mailcanary: v=1; id=01ABC; probe=p1; class=bulk;\n\tseq=3; sent=1700000000000; agent=a; sig=xyz\n",
    )
    .unwrap()
}

/// A bounce as Postfix writes it (head, body), with `action`/`status` in the report.
fn postfix_dsn(action: &str, status: &str, diagnostic: &str) -> (String, String) {
    let head = "From: MAILER-DAEMON@mx.example.test (Mail Delivery System)\n\
                Subject: Undelivered Mail Returned to Sender\n\
                Auto-Submitted: auto-replied\n\
                MIME-Version: 1.0\n\
                Content-Type: multipart/report; report-type=delivery-status;\n\
                \tboundary=\"4F1.1700000000/mx.example.test\"\n"
        .to_string();
    let body = format!(
        "This is a MIME-encapsulated message.\n\n\
         --4F1.1700000000/mx.example.test\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=us-ascii\n\n\
         This is the mail system at host mx.example.test.\n\n\
         <box05+bounce@example.test>: mailstack: user unknown (test bounce)\n\n\
         --4F1.1700000000/mx.example.test\n\
         Content-Description: Delivery report\n\
         Content-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; mx.example.test\n\
         X-Postfix-Queue-ID: 4F1\n\
         Arrival-Date: Mon, 30 Nov 2026 03:40:00 +0000 (UTC)\n\n\
         Final-Recipient: rfc822; box05+bounce@example.test\n\
         Original-Recipient: rfc822;box05+bounce@example.test\n\
         Action: {action}\n\
         Status: {status}\n\
         Diagnostic-Code: X-Postfix; {diagnostic}\n\n\
         --4F1.1700000000/mx.example.test\n\
         Content-Description: Undelivered Message\n\
         Content-Type: message/rfc822\n\n\
         Received: from client by mx.example.test; Mon, 30 Nov 2026 03:40:00 +0000\n\
         X-Mailcanary: v=1; id=01ABC; probe=p1; class=bulk;\n\
         \tseq=3; sent=1700000000000; agent=a; sig=xyz\n\
         Subject: canary\n\n\
         body\n\n\
         --4F1.1700000000/mx.example.test--\n"
    );
    (head, body)
}

#[test]
fn a_postfix_bounce_gives_action_status_diagnostic_and_the_returned_canary() {
    let (head, body) = postfix_dsn("failed", "5.1.1", "mailstack: user unknown (test bounce)");
    let report = read(head.as_bytes(), body.as_bytes()).expect("a bounce");
    assert_eq!(report.action, Action::Failed);
    assert_eq!(report.status.as_deref(), Some("5.1.1"));
    assert_eq!(
        report.diagnostic.as_deref(),
        Some("mailstack: user unknown (test bounce)")
    );
    assert_eq!(
        report.canary,
        folded_mark(),
        "unfolded as a canary's own head is"
    );
}

#[test]
fn a_delay_notice_is_delayed_and_crlf_reports_read_the_same() {
    let (head, body) = postfix_dsn("delayed", "4.4.1", "connect to mx: Connection refused");
    let crlf = |s: &str| s.replace('\n', "\r\n");
    let report = read(crlf(&head).as_bytes(), crlf(&body).as_bytes()).expect("a notice");
    assert_eq!(report.action, Action::Delayed);
    assert_eq!(report.status.as_deref(), Some("4.4.1"));
    assert_eq!(report.canary, folded_mark());
}

#[test]
fn reports_of_delivery_or_without_a_canary_are_no_bounce() {
    let (head, body) = postfix_dsn("delivered", "2.0.0", "ok");
    assert_eq!(read(head.as_bytes(), body.as_bytes()), None);
    let (head, body) = postfix_dsn("failed", "5.1.1", "x");
    let without = body.replace("X-Mailcanary", "X-Other");
    assert_eq!(read(head.as_bytes(), without.as_bytes()), None);
    // An ordinary mail that quotes a canary header is not a bounce.
    let quoted = format!("X-Mailcanary: {MARK}\n");
    assert_eq!(
        read(
            b"From: alice@example.test\nSubject: fwd\n",
            quoted.as_bytes()
        ),
        None
    );
}

#[test]
fn a_qmail_failure_notice_is_read_informally() {
    let head = b"From: MAILER-DAEMON@mail.example.net\nSubject: failure notice\n";
    let body = format!(
        "Hi. This is the qmail-send program at mail.example.net.\n\
         I'm afraid I wasn't able to deliver your message to the following addresses.\n\n\
         <nobody@example.net>:\n\
         Remote host said: 550 5.7.1 <nobody@example.net>: Recipient address rejected\n\n\
         --- Below this line is a copy of the message.\n\n\
         X-Mailcanary: {MARK}\nSubject: canary\n\nbody\n"
    );
    let report = read(head, body.as_bytes()).expect("a bounce");
    assert_eq!(report.action, Action::Failed);
    assert_eq!(report.status.as_deref(), Some("5.7.1"));
    assert!(
        report
            .diagnostic
            .unwrap()
            .starts_with("Remote host said: 550 5.7.1")
    );
    assert_eq!(report.canary, MARK);
    let delayed = b"From: Mail Delivery System <MAILER-DAEMON@x>\nSubject: Warning: message 1abc delayed 24 hours\n";
    assert_eq!(
        read(delayed, body.as_bytes()).unwrap().action,
        Action::Failed,
        "5.x.x wins"
    );
    let no_code = format!("still trying\n\nX-Mailcanary: {MARK}\n");
    assert_eq!(
        read(delayed, no_code.as_bytes()).unwrap().action,
        Action::Delayed
    );
}

#[test]
fn status_codes_are_checked_and_diagnostics_bounded() {
    assert_eq!(enhanced_status("5.1.1").as_deref(), Some("5.1.1"));
    assert_eq!(enhanced_status(" 4.7.500 ").as_deref(), Some("4.7.500"));
    for bad in ["5.1", "6.1.1", "5.1.1.1", "5.1.1234", "5.a.1", "", "5..1"] {
        assert_eq!(enhanced_status(bad), None, "{bad}");
    }
    let long = format!("550 {}\u{7}<script>", "x".repeat(1000));
    let (head, body) = postfix_dsn("failed", "5.0.0-garbage", &long);
    let report = read(head.as_bytes(), body.as_bytes()).unwrap();
    assert_eq!(report.status, None, "a malformed status is no status");
    let d = report.diagnostic.unwrap();
    assert_eq!(d.chars().count(), DIAGNOSTIC_MAX + 1);
    assert!(!d.chars().any(char::is_control));
}
