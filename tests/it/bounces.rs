//! Bounces (issue 14), with real DSNs: the stack's Postfix accepts mail for its bounce address
//! and then bounces it (5.1.1), and defers mail for its delay-notice address long enough to
//! send a delay notice before delivering it. The notifications go to the canary's envelope
//! sender, probe1, whose mailbox the probes watch as `[probe.bounces]`.

use std::sync::Mutex;
use std::time::Duration;

use crate::support::*;

/// The two tests read and clean probe1's mailbox: one at a time, so neither sees the other's
/// forged bounce as its own business.
static SENDER_MAILBOX: Mutex<()> = Mutex::new(());

const SENDER: &str = "probe1@example.test";

/// A probe sending one transactional canary as probe1 to `to` (probe2's address with an
/// extension; probe2's mailbox is read over IMAPS), whose bounces come back to probe1's
/// mailbox, watched over IMAPS as `[probe.bounces]` by a watcher of its own.
fn bouncing_probe(stack: &Stack, name: &str, to: &str, lost_after: &str) -> String {
    bouncing_probe_via(stack, name, to, lost_after, "imap")
}

/// [`bouncing_probe`] reading the bounces over `protocol` (`imap`, `pop3` or `maildir`).
fn bouncing_probe_via(
    stack: &Stack,
    name: &str,
    to: &str,
    lost_after: &str,
    protocol: &str,
) -> String {
    let receiver = "probe2@example.test";
    let section = probe_section(stack, name, receiver, "MC_PROBE1_PASSWORD")
        .replacen(
            &format!("to = \"{receiver}\""),
            &format!("to = \"{to}\""),
            1,
        )
        .replace(
            "password_env = \"MAILSTACK_TEST_PASSWORD\"",
            "password_env = \"MC_PROBE2_PASSWORD\"",
        );
    let section = with_probe_keys(
        &section,
        &format!("classes = [\"transactional\"]\nlost_after = \"{lost_after}\""),
    );
    let ca = stack.get("MAILSTACK_CA_FILE");
    let server = |port: &str| {
        format!(
            "  host = \"127.0.0.1\"\n  port = {}\n  tls = \"tls\"\n  username = \"{SENDER}\"\n  \
             password_env = \"MC_PROBE1_PASSWORD\"\n  ca_file = \"{ca}\"\n  timeout = \"5s\"\n",
            stack.port(port)
        )
    };
    let keys = match protocol {
        "imap" => server("MAILSTACK_IMAPS_PORT") + "  folders = [\"INBOX\"]\n",
        "pop3" => server("MAILSTACK_POP3S_PORT"),
        _ => format!("  path = \"{}\"\n", stack.maildir(SENDER).display()),
    };
    format!(
        "{section}  [probe.bounces]\n  protocol = \"{protocol}\"\n{keys}  poll_interval = \"250ms\"\n"
    )
}

/// The stack's address with `extension` (which any user takes), for probe2.
fn probe2_with(stack: &Stack, env: &str, extension: &str) -> String {
    let address = stack.get(env);
    assert!(
        address.contains(&format!("+{extension}@")),
        "{env}={address}"
    );
    format!("probe2+{extension}@example.test")
}

/// probe1's mails that are delivery reports about `id`.
fn reports_about(stack: &Stack, id: &str) -> Vec<String> {
    mail_files(&stack.maildir(SENDER))
        .into_iter()
        .filter(|(_, text)| text.contains("report-type=delivery-status") && text.contains(id))
        .map(|(_, text)| text)
        .collect()
}

/// The mail of probe1's containing `needle` is still there (Dovecot may have moved it from
/// `new/` to `cur/` when a client opened the folder), with the same content and no flag set.
fn assert_unchanged(stack: &Stack, needle: &str, before: &str) {
    let files = mail_files(&stack.maildir(SENDER));
    let (path, after) = files
        .iter()
        .find(|(_, text)| text.contains(needle))
        .unwrap_or_else(|| panic!("the mail {needle} is gone"));
    assert_eq!(after, before, "{needle} changed");
    let name = path.to_string_lossy();
    let flags = name.rsplit_once(":2,").map_or("", |(_, f)| f);
    assert!(
        !flags.contains('S') && !flags.contains('T'),
        "{needle} got flags {flags:?}"
    );
}

/// Removes probe1's mails containing `needle`.
fn remove_mails(stack: &Stack, needle: &str) {
    for (path, text) in mail_files(&stack.maildir(SENDER)) {
        if text.contains(needle) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The id of the first canary the daemon's log says it sent.
fn sent_id(daemon: &Daemon) -> String {
    let mut id = None;
    daemon.wait_for("a canary sent", Duration::from_secs(20), || {
        id = daemon.log_text().lines().find_map(|l| {
            let rest = l.split_once("canary sent")?.1;
            let start = rest.find(" id=")? + 4;
            Some(rest[start..].split_whitespace().next()?.to_string())
        });
        id.is_some()
    });
    id.expect("found")
}

#[test]
fn a_rejected_canary_is_bounced_within_seconds_never_lost_and_its_report_removed() {
    let stack = Stack::shared();
    let _sender = SENDER_MAILBOX.lock().unwrap_or_else(|p| p.into_inner());
    let to = probe2_with(stack, "MAILSTACK_BOUNCE_ADDRESS", "bounce");
    let (_, before) = place_ordinary_mail(stack, SENDER, "bounces-neighbour");
    for protocol in ["imap", "pop3", "maildir"] {
        let name = format!("bounce-{protocol}");
        let probe = bouncing_probe_via(stack, &name, &to, "6s", protocol);
        let work = Workdir::new(&format!("it-bounces-{protocol}"), &probe);
        let daemon = work.daemon_with(stack, &["--log-level", "info,mailcanary::probe=debug"]);
        rejected(stack, &daemon, &name, &before);
    }
    remove_mails(stack, "ordinary-bounces-neighbour");
}

/// The bounce of `probe`'s one canary, as the daemon counts it.
fn rejected(stack: &Stack, daemon: &Daemon, probe: &str, neighbour: &str) {
    let id = sent_id(daemon);
    let series = format!(
        "mailcanary_bounced_total{{class=\"transactional\",probe=\"{probe}\",status=\"5.1.1\"}}"
    );
    daemon.wait_metric(&series, 1.0, Duration::from_secs(30));
    let text = daemon.scrape();
    let in_flight = format!("mailcanary_in_flight{{class=\"transactional\",probe=\"{probe}\"}}");
    assert_eq!(
        metric(&text, &in_flight),
        Some(0.0),
        "the bounce ended the canary"
    );
    // The books change before the line is written (after the store's commit): wait for it.
    daemon.wait_for("the bounce in the log", Duration::from_secs(10), || {
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("canary bounced") && l.contains(&id) && l.contains("5.1.1"))
    });
    let page = http_get(daemon.port, "/").expect("status page").1;
    assert!(
        page.contains("failed 5.1.1") && page.contains(&id),
        "{page}"
    );
    // The report is removed; the ordinary mail next to it is not touched.
    daemon.wait_for("the report removed", Duration::from_secs(10), || {
        reports_about(stack, &id).is_empty()
    });
    assert_unchanged(stack, "ordinary-bounces-neighbour", neighbour);
    // Past lost_after: never also lost.
    let lost = format!("mailcanary_lost_total{{class=\"transactional\",probe=\"{probe}\"}}");
    let counted_lost = poll_until(Duration::from_secs(9), &mut || {
        metric(&daemon.scrape(), &lost).unwrap_or(0.0) > 0.0
    });
    assert!(!counted_lost, "a bounced canary was also counted lost");
    assert_eq!(metric(&daemon.scrape(), &series), Some(1.0));
}

/// A bounce of the shape Postfix writes, claiming `canary` (an `X-Mailcanary` value).
fn forged_bounce(to: &str, canary: &str, tag: &str) -> String {
    format!(
        "From: MAILER-DAEMON@example.test (Mail Delivery System)\n\
         To: {SENDER}\n\
         Subject: Undelivered Mail Returned to Sender\n\
         Message-ID: <{tag}@example.test>\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n\
         --B\nContent-Type: text/plain\n\nYour canary was rejected.\n\n\
         --B\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; forger.example.net\n\n\
         Final-Recipient: rfc822; {to}\nAction: failed\nStatus: 5.7.1\n\
         Diagnostic-Code: smtp; 550 5.7.1 forged\n\n\
         --B\nContent-Type: text/rfc822-headers\n\n\
         X-Mailcanary: {canary}\nSubject: canary\n\n\
         --B--\n"
    )
}

#[test]
fn a_delay_notice_is_counted_the_canary_still_delivered_and_a_forged_bounce_changes_nothing() {
    let stack = Stack::shared();
    let _sender = SENDER_MAILBOX.lock().unwrap_or_else(|p| p.into_inner());
    let to = probe2_with(stack, "MAILSTACK_DELAY_NOTICE_ADDRESS", "defer");
    let deferred: f64 = stack
        .get("MAILSTACK_DELAY_NOTICE_SECONDS")
        .parse()
        .expect("seconds");
    let probe = bouncing_probe(stack, "bounce-delay", &to, "2m");
    let work = Workdir::new("it-bounces-delay", &probe);
    let daemon = work.daemon_with(stack, &["--log-level", "info,mailcanary::probe=debug"]);
    let id = sent_id(&daemon);
    // A bounce naming the canary in flight, signed with a key that is not ours.
    let forged = format!(
        "v=1; id={id}; probe=bounce-delay; class=transactional; seq=1; sent=1; \
         agent=it-bounces-delay; sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    let tag = format!("forged-bounce-{id}");
    inject(
        stack,
        "MAILER-DAEMON@example.test",
        SENDER,
        &forged_bounce(&to, &forged, &tag),
    );
    let (_, forged_before) = wait_for_mail(&stack.maildir(SENDER), &tag);
    let notices = "mailcanary_delay_notices_total{class=\"transactional\",probe=\"bounce-delay\"}";
    daemon.wait_metric(notices, 1.0, Duration::from_secs(30));
    let text = daemon.scrape();
    let in_flight = "mailcanary_in_flight{class=\"transactional\",probe=\"bounce-delay\"}";
    assert_eq!(
        metric(&text, in_flight),
        Some(1.0),
        "a delay notice leaves it in flight"
    );
    assert_eq!(
        probe_total(&text, "mailcanary_bounced_total", "bounce-delay"),
        0.0
    );
    assert_eq!(
        probe_total(&text, "mailcanary_forged_total", "bounce-delay"),
        0.0
    );
    // Released: delivered and timed, with the deferral in its delay.
    let delivered = "mailcanary_delivered_total{class=\"transactional\",folder=\"INBOX\",probe=\"bounce-delay\"}";
    daemon.wait_metric(delivered, 1.0, Duration::from_secs(deferred as u64 + 30));
    let text = daemon.scrape();
    let delay = metric(
        &text,
        "mailcanary_last_delivery_delay_seconds{class=\"transactional\",probe=\"bounce-delay\"}",
    )
    .expect("a delay");
    assert!(
        delay >= deferred - 1.0,
        "delay {delay} s after a {deferred} s deferral"
    );
    assert_eq!(
        probe_total(&text, "mailcanary_bounced_total", "bounce-delay"),
        0.0
    );
    // The notice is cleaned up; the forged bounce is left alone and unchanged.
    daemon.wait_for("the notice removed", Duration::from_secs(10), || {
        reports_about(stack, &id)
            .iter()
            .all(|text| text.contains(&tag))
    });
    assert_unchanged(stack, &tag, &forged_before);
    drop(daemon);
    remove_mails(stack, &tag);
}
