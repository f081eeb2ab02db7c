//! What one look costs the IMAP server: a look woken by IDLE reads the first folder only and
//! cleans up without selecting it again; the other folders are read once per poll interval.
//! Counted from the commands the agent sends, through a proxy in front of the real Dovecot.

use std::time::Duration;

use crate::proxy::FaultProxy;
use crate::support::*;

#[test]
fn a_look_woken_by_idle_reads_the_first_folder_only_and_selects_it_once() {
    let stack = Stack::shared();
    let user = "box40@example.test";
    empty_mailbox(stack, user);
    let proxy = FaultProxy::start(stack.port("MAILSTACK_IMAP_PORT"));
    let section = probe_section(stack, "looks", user, "MC_PROBE1_PASSWORD");
    let section = via_plain_imap(stack, &section, proxy.port)
        .replace("poll_interval = \"250ms\"", "poll_interval = \"1h\"");
    let section = with_probe_keys(&section, "classes = [\"interpersonal\"]\ninterval = \"1s\"");
    let work = Workdir::new("it-looks", &section);
    let mut daemon = work.daemon(stack);
    let delivered =
        "mailcanary_delivered_total{class=\"interpersonal\",folder=\"INBOX\",probe=\"looks\"}";
    daemon.wait_for("six deliveries", Duration::from_secs(30), || {
        metric(&daemon.scrape(), delivered).is_some_and(|n| n >= 6.0)
    });
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    let lines = proxy.client_lines();
    let count = |what: &str| {
        lines
            .iter()
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(what))
            })
            .count()
    };
    let (fetches, expunges) = (count("UID FETCH"), count("UID EXPUNGE"));
    let (inbox, junk) = (count("SELECT \"INBOX\""), count("SELECT \"Junk\""));
    let summary = format!(
        "{fetches} fetches, {expunges} expunges, {inbox} SELECT INBOX, {junk} SELECT Junk\n{}",
        lines.join("\n")
    );
    // The last look may still be cleaning up when the agent stops.
    assert!(fetches >= 6 && expunges >= 5, "{summary}");
    // Junk: on the first look only (the poll interval is an hour).
    assert_eq!(junk, 1, "{summary}");
    // INBOX: once per look plus once before each IDLE; never again for the clean-up.
    assert!(inbox <= 2 * fetches + 2, "{summary}");
}
