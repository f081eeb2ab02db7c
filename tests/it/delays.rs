//! Precise delays: the servers' own timestamps, the per-hop breakdown, and IMAP IDLE.

use std::time::Duration;

use crate::support::*;

fn series(name: &str, probe: &str, class: &str) -> String {
    format!("mailcanary_{name}{{class=\"{class}\",probe=\"{probe}\"}}")
}

#[test]
fn an_injected_delay_shows_in_server_delay_and_in_the_hop_after_postfix() {
    let stack = Stack::shared();
    let user = "box20@example.test";
    empty_mailbox(stack, user);
    // The stack's delaying hop holds the mail 3 s and stamps its own Received line. The agent
    // polls (no IDLE) every 6 s: it sees the canary only at the look after the one just after
    // sending, more than 6 s after it was sent. So the delivery delay (when the agent saw it)
    // and the server delay (when the server stored it) must differ by seconds: one copied into
    // the other would show.
    let section = with_probe_keys(
        &probe_section(stack, "slow", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"delayed\"]",
    )
    .replace(
        "poll_interval = \"250ms\"",
        "poll_interval = \"6s\"\n  watch = \"poll\"",
    );
    let config = format!(
        "{section}\n[class.delayed]\ntemplate = \"interpersonal\"\nheaders = {{ \"X-Test-Delay\" = \"3\" }}\n"
    );
    let work = Workdir::new("it-slow", &config);
    let text = work.once(stack, "30s");
    let s = |name: &str| series(name, "slow", "delayed");
    let value = |series: &str| {
        metric(&text, series).unwrap_or_else(|| panic!("{series} is missing from:\n{text}"))
    };
    assert_eq!(value(&s("server_delay_seconds_count")), 1.0);
    assert_eq!(value(&s("delivery_delay_seconds_count")), 1.0);
    let server = value(&s("server_delay_seconds_sum"));
    let delivery = value(&s("delivery_delay_seconds_sum"));
    // INTERNALDATE has whole seconds (the estimate is its middle): 3 s ± 1.
    assert!((server - 3.0).abs() <= 1.0, "server delay {server}\n{text}");
    assert!(
        (6.0..15.0).contains(&delivery),
        "delivery delay {delivery}: the canary can only have been seen at the second poll, \
         6 s after the first look that followed sending\n{text}"
    );
    assert!(
        delivery - server >= 2.0,
        "delivery {delivery} and server delay {server} must differ by the wait for the poll"
    );
    println!(
        "matrix | 3 s injected delay, 6 s poll | delivery delay {delivery:.2} s, server delay {server:.2} s"
    );
    // One delivery: the probe's hop histograms (not per class) hold exactly what the class's
    // last-delivery gauges say.
    let hop = |n: &str| {
        let last = format!("class=\"delayed\",hop=\"{n}\",probe=\"slow\"");
        let last = metric(
            &text,
            &format!("mailcanary_last_hop_delay_seconds{{{last}}}"),
        );
        let sum = metric(
            &text,
            &format!("mailcanary_hop_delay_seconds_sum{{hop=\"{n}\",probe=\"slow\"}}"),
        );
        assert_eq!(last, sum, "hop {n}\n{text}");
        last
    };
    let after_postfix = hop("1").expect("a hop after Postfix");
    assert!(
        (after_postfix - 3.0).abs() <= 1.0,
        "hop 1 carries the delay: {after_postfix}\n{text}"
    );
    let submission = hop("0").expect("the submission hop");
    assert!(
        submission.abs() <= 1.0,
        "sender to Postfix is quick: {submission}"
    );
    let skew = metric(&text, &s("clock_skew_seconds")).expect("a skew estimate");
    assert!(skew.abs() <= 1.0, "same clock on both ends: {skew}");
}

/// Logged (at debug level) each time the agent has entered IDLE.
const IDLE_ENTERED: &str = "IDLE: waiting for news";
/// Logged (at debug level) when the server ends an IDLE with news.
const IDLE_NEWS: &str = "IDLE: the server reports news";

#[test]
fn idle_records_a_canary_without_waiting_for_a_poll() {
    let stack = Stack::shared();
    let user = "box21@example.test";
    empty_mailbox(stack, user);
    // The canary is held by the stack (`+hold`) until the agent is idling, so no look but
    // one woken by IDLE can find it: a poll would only come after 10 minutes.
    let section = with_probe_keys(
        &probe_section(stack, "idler", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"interpersonal\"]",
    )
    .replace(
        "to = \"box21@example.test\"",
        "to = \"box21+hold@example.test\"",
    )
    .replace(
        "poll_interval = \"250ms\"",
        "poll_interval = \"10min\"\n  watch = \"idle\"",
    );
    let work = Workdir::new("it-idle", &section);
    let daemon = work.daemon_with(
        stack,
        &["--log-level", "info,mailcanary::mailbox::imap=debug"],
    );
    let s = |name: &str| series(name, "idler", "interpersonal");
    let delivered =
        "mailcanary_delivered_total{class=\"interpersonal\",folder=\"INBOX\",probe=\"idler\"}";
    daemon.wait_metric(&s("sent_total"), 1.0, Duration::from_secs(10));
    daemon.wait_for("the agent to enter IDLE", Duration::from_secs(10), || {
        daemon.log_text().contains(IDLE_ENTERED)
    });
    let idle_log = daemon.log_text();
    assert!(!idle_log.contains(IDLE_NEWS), "{idle_log}");
    let before = daemon.scrape();
    assert_eq!(metric(&before, delivered), Some(0.0), "{before}");
    assert_eq!(metric(&before, &s("in_flight")), Some(1.0), "{before}");

    stack.ctl("release", &["box21+hold@example.test"]);
    let released = std::time::Instant::now();
    // Dovecot debounces IDLE notifications by 0.5 s; seconds, not the 10-minute poll (the
    // bound leaves room for Postfix's release and delivery on a loaded machine; the time it
    // took is printed below).
    daemon.wait_metric(delivered, 1.0, Duration::from_secs(30));
    println!(
        "matrix | IDLE | seen {:.2} s after release",
        released.elapsed().as_secs_f64()
    );
    let log = daemon.log_text();
    assert!(
        log[idle_log.len()..].contains(IDLE_NEWS),
        "the look that found the canary was woken by IDLE news:\n{log}"
    );
    let text = daemon.scrape();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mailcanary_mailbox_errors_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(
        errors.is_empty(),
        "no mailbox error (and so no reconnect look) explains it: {errors:?}"
    );
}
