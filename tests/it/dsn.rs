//! The stack's delivery status notifications (issue 14, the stack half): Postfix itself writes
//! real RFC 3464 DSNs to the envelope sender, a bounce for `USER+bounce@` (accepted, then 5.1.1)
//! and a delay notice for `USER+defer@` (deferred for `MAILSTACK_DELAY_NOTICE_SECONDS`, then
//! delivered). What the agent's DSN reader will rely on, checked with a plain SMTP client first.
//!
//! Mailboxes: probe1's (the sender's, shared with every test as a sender only: these tests
//! remove only the files carrying their own tag), and the recipients of the stack's addresses.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;

use crate::support::*;

const SENDER: &str = "probe1@example.test";

/// A tag no other mail carries: in the Subject, the Message-ID and an `X-Test-Tag:` header.
fn unique_tag(kind: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("dsn-{kind}-{}-{nanos}", std::process::id())
}

/// What the server answered to one submitted mail.
struct Submitted {
    rcpt: String,
    data_end: String,
    /// Just before the end of DATA was sent: the mail cannot have been queued earlier.
    before_queued: SystemTime,
    /// When the server's answer to the end of DATA arrived.
    accepted: Instant,
}

/// Submits one mail from probe1 to `to` (STARTTLS + AUTH as probe1), command by command, so
/// that the answers to RCPT and to the end of DATA can be checked; fails on any refusal.
fn submit(stack: &Stack, to: &str, tag: &str) -> Submitted {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ca = std::fs::read(stack.get("MAILSTACK_CA_FILE")).unwrap();
        let params = TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&ca).unwrap())
            .build_native()
            .unwrap();
        let hello = ClientId::Domain("it.example.test".into());
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            ("127.0.0.1", stack.port("MAILSTACK_SUBMISSION_PORT")),
            Some(Duration::from_secs(10)),
            &hello,
            None,
            None,
        )
        .await
        .expect("connect to submission");
        conn.starttls(params, &hello).await.expect("STARTTLS");
        let creds = Credentials::new(
            SENDER.to_string(),
            stack.get("MC_PROBE1_PASSWORD").to_string(),
        );
        conn.auth(&[Mechanism::Plain], &creds)
            .await
            .expect("AUTH as probe1");
        conn.command(Mail::new(Some(SENDER.parse().unwrap()), vec![]))
            .await
            .expect("MAIL FROM accepted");
        let rcpt = conn
            .command(Rcpt::new(to.parse().unwrap(), vec![]))
            .await
            .unwrap_or_else(|e| panic!("RCPT TO:<{to}> refused: {e}"));
        conn.command(Data).await.expect("DATA accepted");
        let message = format!(
            "From: {SENDER}\r\nTo: {to}\r\nSubject: dsn test {tag}\r\n\
             Message-ID: <{tag}@it.example.test>\r\nX-Test-Tag: {tag}\r\n\r\n\
             A mail whose DSN the test waits for ({tag}).\r\n"
        );
        let before_queued = SystemTime::now();
        let data_end = conn
            .message(message.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("end of DATA for {to} refused: {e}"));
        let accepted = Instant::now();
        let _ = conn.quit().await;
        let answer = |r: &lettre::transport::smtp::response::Response| {
            format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" "))
        };
        Submitted {
            rcpt: answer(&rcpt),
            data_end: answer(&data_end),
            before_queued,
            accepted,
        }
    })
}

/// Removes, when the test ends (pass or fail), every mail carrying the test's tag from the
/// Maildirs it used: probe1's is shared, so nothing else is touched.
struct Cleanup<'a> {
    tag: &'a str,
    maildirs: Vec<PathBuf>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for maildir in &self.maildirs {
            for (path, text) in mail_files(maildir) {
                if text.contains(self.tag) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// Waits up to `limit` for a mail in `maildir` that contains every one of `needles`.
fn wait_for(maildir: &Path, needles: &[&str], limit: Duration) -> Option<(PathBuf, String)> {
    let mut found = None;
    poll_until(limit, &mut || {
        found = mail_files(maildir)
            .into_iter()
            .find(|(_, text)| needles.iter().all(|n| text.contains(n)));
        found.is_some()
    });
    found
}

/// The delivery time Dovecot put at the start of a Maildir file name (`<secs>.M<usecs>P…`).
fn delivered_at(path: &Path) -> SystemTime {
    let name = path.file_name().unwrap().to_string_lossy();
    let (secs, rest) = name
        .split_once(".M")
        .expect("a Maildir name <secs>.M<usecs>P…");
    let usecs = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap();
    UNIX_EPOCH
        + Duration::from_secs(secs.parse().unwrap())
        + Duration::from_micros(usecs.parse().unwrap())
}

/// The part of a multipart report from the header line `content_type` on (its headers and
/// everything after them).
fn part<'t>(text: &'t str, content_type: &str) -> &'t str {
    let at = text
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part in:\n{text}"));
    &text[at..]
}

/// The checks common to both kinds of DSN: a multipart/report of type delivery-status from the
/// mailer daemon to the sender, about `rcpt`, whose returned part has the tag header.
fn assert_dsn(text: &str, rcpt: &str, returned: &str, tag: &str) {
    assert!(
        text.contains("Return-Path: <>"),
        "a DSN has a null sender:\n{text}"
    );
    assert!(text.contains("Content-Type: multipart/report"), "{text}");
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(
        text.contains("From: Mail Delivery System <MAILER-DAEMON@"),
        "{text}"
    );
    assert!(text.contains(&format!("To: {SENDER}")), "{text}");
    let status = part(text, "message/delivery-status");
    assert!(
        status.contains("Reporting-MTA: dns; mx.example.test"),
        "{status}"
    );
    assert!(
        status.contains(&format!("Final-Recipient: rfc822; {rcpt}")),
        "{status}"
    );
    assert!(status.contains("Diagnostic-Code: "), "{status}");
    assert!(
        part(text, returned).contains(&format!("X-Test-Tag: {tag}")),
        "the returned {returned} part has the mail's own headers:\n{text}"
    );
}

#[test]
fn mail_to_the_bounce_address_is_accepted_then_bounced_with_a_dsn_to_the_sender() {
    let stack = Stack::shared();
    let to = stack.get("MAILSTACK_BOUNCE_ADDRESS").to_string();
    assert!(to.contains("+bounce@"), "{to}");
    let sender_box = stack.maildir(SENDER);
    let tag = unique_tag("bounce");
    let _cleanup = Cleanup {
        tag: &tag,
        maildirs: vec![
            sender_box.clone(),
            stack.maildir(&to.replace("+bounce", "")),
        ],
    };

    let sent = submit(stack, &to, &tag);
    assert!(sent.rcpt.starts_with("250"), "RCPT: {}", sent.rcpt);
    assert!(
        sent.data_end.starts_with("250"),
        "end of DATA: {}",
        sent.data_end
    );

    let (_, dsn) = wait_for(
        &sender_box,
        &[&tag, "report-type=delivery-status"],
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("no DSN for {tag} in {} within 10 s", sender_box.display()));
    let took = sent.accepted.elapsed();
    assert_dsn(&dsn, &to, "message/rfc822", &tag);
    assert!(
        dsn.contains("Subject: Undelivered Mail Returned to Sender"),
        "{dsn}"
    );
    let status = part(&dsn, "message/delivery-status");
    assert!(status.contains("Action: failed"), "{status}");
    assert!(status.contains("Status: 5.1.1"), "{status}");
    assert!(
        status.contains("Diagnostic-Code: X-Postfix; mailstack: user unknown (test bounce)"),
        "{status}"
    );
    // The whole mail comes back, body included, and the mail itself was delivered nowhere.
    assert!(
        part(&dsn, "message/rfc822").contains(&format!("waits for ({tag})")),
        "{dsn}"
    );
    let mut boxes = vec![
        sender_box.clone(),
        stack.maildir(&to.replace("+bounce", "")),
    ];
    boxes.dedup();
    let copies = boxes
        .iter()
        .flat_map(|maildir| mail_files(maildir))
        .filter(|(_, text)| text.contains(&tag))
        .count();
    assert_eq!(copies, 1, "only the DSN carries the tag");
    println!("bounce: DSN in the sender's mailbox {took:?} after the end of DATA");
}

#[test]
fn mail_to_the_delay_notice_address_yields_a_delay_notice_then_is_delivered() {
    let stack = Stack::shared();
    let to = stack.get("MAILSTACK_DELAY_NOTICE_ADDRESS").to_string();
    assert!(to.contains("+defer@"), "{to}");
    let deferral = Duration::from_secs(
        stack
            .get("MAILSTACK_DELAY_NOTICE_SECONDS")
            .parse()
            .expect("whole seconds"),
    );
    let sender_box = stack.maildir(SENDER);
    let rcpt_box = stack.maildir(&to.replace("+defer", ""));
    let tag = unique_tag("defer");
    let _cleanup = Cleanup {
        tag: &tag,
        maildirs: vec![sender_box.clone(), rcpt_box.clone()],
    };

    let sent = submit(stack, &to, &tag);
    assert!(sent.rcpt.starts_with("250"), "RCPT: {}", sent.rcpt);
    assert!(
        sent.data_end.starts_with("250"),
        "end of DATA: {}",
        sent.data_end
    );

    // The notice comes while the mail is still deferred.
    let (notice_path, notice) = wait_for(
        &sender_box,
        &[&tag, "report-type=delivery-status"],
        deferral + Duration::from_secs(5),
    )
    .unwrap_or_else(|| panic!("no delay notice for {tag} in {}", sender_box.display()));
    let notice_took = sent.accepted.elapsed();
    assert_dsn(&notice, &to, "text/rfc822-headers", &tag);
    assert!(
        notice.contains("Subject: Delayed Mail (still being retried)"),
        "{notice}"
    );
    let status = part(&notice, "message/delivery-status");
    assert!(status.contains("Action: delayed"), "{status}");
    assert!(status.contains("Status: 4."), "{status}");
    assert!(status.contains("Will-Retry-Until: "), "{status}");
    assert!(!notice.contains("Action: failed"), "{notice}");

    // Then the mail itself, with its headers, in the recipient's INBOX: not before the
    // deferral is over, and soon after.
    let delivered = |text: &str| {
        text.contains(&format!("Message-ID: <{tag}@it.example.test>"))
            && !text.contains("report-type=delivery-status")
    };
    let mut mail = None;
    poll_until(deferral + Duration::from_secs(15), &mut || {
        mail = mail_files(&rcpt_box)
            .into_iter()
            .find(|(_, text)| delivered(text));
        mail.is_some()
    });
    let (mail_path, mail) =
        mail.unwrap_or_else(|| panic!("{tag} not delivered to {} in time", rcpt_box.display()));
    let released = delivered_at(&mail_path)
        .duration_since(sent.before_queued)
        .expect("delivered after it was sent");
    assert!(
        released >= deferral,
        "released after {released:?}, before the {deferral:?} deferral was over"
    );
    assert!(
        released <= deferral + Duration::from_secs(15),
        "released after {released:?}"
    );
    assert!(
        delivered_at(&notice_path) < delivered_at(&mail_path),
        "the notice came before the release"
    );
    assert!(mail.contains(&format!("X-Test-Tag: {tag}")), "{mail}");
    assert!(mail.contains("(mailstack defer "), "{mail}");
    assert!(
        mail_path.parent().unwrap().ends_with("new")
            && !mail_path.to_string_lossy().contains(".Junk"),
        "in the INBOX: {}",
        mail_path.display()
    );
    println!(
        "defer: delay notice after {notice_took:?}, mail released {released:?} after the end \
         of DATA (deferral {deferral:?})"
    );
}
