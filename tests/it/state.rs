//! Durable books: restarts, crashes, cron runs, loss and late arrival, sequence gaps, the
//! state directory lock, a damaged store, and `status` next to a running daemon.

use std::time::Duration;

use crate::support::*;

const ONE_CLASS: &str = "classes = [\"interpersonal\"]";

fn series(name: &str, probe: &str) -> String {
    format!("mailcanary_{name}{{class=\"interpersonal\",probe=\"{probe}\"}}")
}

fn delivered(probe: &str) -> String {
    format!(
        "mailcanary_delivered_total{{class=\"interpersonal\",folder=\"INBOX\",probe=\"{probe}\"}}"
    )
}

/// The id logged with the first `canary sent` line of a log.
fn first_sent_id(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("canary sent"))
        .expect("a canary was sent");
    let id = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .expect("id= in the log line");
    id.to_string()
}

#[test]
fn a_canary_in_flight_survives_kill_9_and_is_matched_after_restart() {
    let stack = Stack::shared();
    let user = "box07@example.test";
    empty_mailbox(stack, user);
    let section = probe_section(stack, "crash", user, "MC_PROBE1_PASSWORD").replace(
        "to = \"box07@example.test\"",
        "to = \"box07+hold@example.test\"",
    );
    let work = Workdir::new("it-crash", &with_probe_keys(&section, ONE_CLASS));
    let first = work.daemon(stack);
    first.wait_metric(&series("sent_total", "crash"), 1.0, Duration::from_secs(10));
    first.wait_for("the send to be logged", Duration::from_secs(5), || {
        first.log_text().contains("canary sent")
    });
    let held_id = first_sent_id(&first.log_text());

    // `status` reads the store while the daemon is writing it.
    let status = work.run(stack, &["status"]);
    assert!(status.status.success(), "{}", output_text(&status));
    let table = String::from_utf8_lossy(&status.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(&held_id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.starts_with("crash") && row.contains("interpersonal"),
        "{table}"
    );
    assert!(
        row.split_whitespace().nth(2) == Some("1"),
        "seq 1 in {row:?}"
    );

    let before = first.scrape();
    drop(first); // SIGKILL
    let second = work.daemon(stack);
    let after = second.scrape();
    for (series, old) in cumulative_samples(&before) {
        let new =
            metric(&after, &series).unwrap_or_else(|| panic!("{series} vanished after restart"));
        assert!(new >= old, "{series} went backwards: {old} → {new}");
    }
    // The restarted daemon sends its own canary (also held): two in flight once the server
    // has accepted (and so queued) it.
    second.wait_metric(&series("sent_total", "crash"), 2.0, Duration::from_secs(10));
    assert_eq!(
        metric(&second.scrape(), &series("in_flight", "crash")),
        Some(2.0)
    );

    stack.ctl("release", &["box07+hold@example.test"]);
    second.wait_metric(&delivered("crash"), 2.0, Duration::from_secs(15));
    let last = second.scrape();
    assert_eq!(
        metric(&last, &series("delivery_delay_seconds_count", "crash")),
        Some(2.0)
    );
    assert_eq!(metric(&last, &series("in_flight", "crash")), Some(0.0));
    assert_eq!(metric(&last, &series("lost_total", "crash")), Some(0.0));
    // The books are updated before the line is logged: wait for the line, don't race it.
    second.wait_for(
        "the canary sent before the crash to be matched after it",
        Duration::from_secs(5),
        || {
            second.log_text().lines().any(|l| {
                l.contains("canary delivered") && !l.contains("do not know") && l.contains(&held_id)
            })
        },
    );
}
