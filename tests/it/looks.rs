//! What one look costs the IMAP server: a look woken by IDLE reads the first folder only,
//! fetches its new mails without searching for them, cleans up without selecting it again and
//! idles again without selecting it either; the other folders are read once per poll
//! interval.
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
    let idles = count("IDLE");
    let searches = count("UID SEARCH");
    let summary = format!(
        "{fetches} fetches, {searches} searches, {expunges} expunges, {inbox} SELECT INBOX, \
         {junk} SELECT Junk, {idles} IDLE\n{}",
        lines.join("\n")
    );
    // Canaries found within a second of the last clean-up wait for the next one, so there
    // are fewer expunges than fetches, but some.
    assert!(fetches >= 6 && expunges >= 2, "{summary}");
    // The new mails of a look woken by IDLE are fetched by their range, unsearched; only the
    // first look may search, in INBOX and Junk (its windows run from UID 1 up to a UIDNEXT
    // that may exceed a chunk on a stack that has served many runs).
    assert!(searches <= 2, "{summary}");
    // Junk: on the first look only (the poll interval is an hour).
    assert_eq!(junk, 1, "{summary}");
    // INBOX: once per look woken by IDLE, never again for the clean-up, and not before an
    // IDLE that follows a scan without news (the first look, back from Junk, selects it for
    // its clean-up and again before its IDLE).
    assert!(inbox <= idles + 3, "{summary}");
}
