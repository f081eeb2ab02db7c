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
    let hop = |n: &str| {
        let labels = format!("class=\"delayed\",hop=\"{n}\",probe=\"slow\"");
        metric(
            &text,
            &format!("mailcanary_hop_delay_seconds_sum{{{labels}}}"),
        )
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

#[test]
fn idle_records_a_canary_without_waiting_for_a_poll() {
    let stack = Stack::shared();
    let user = "box21@example.test";
    empty_mailbox(stack, user);
    let section = with_probe_keys(
        &probe_section(stack, "idler", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"interpersonal\"]",
    )
    .replace(
        "poll_interval = \"250ms\"",
        "poll_interval = \"10min\"\n  watch = \"idle\"",
    );
    let work = Workdir::new("it-idle", &section);
    let daemon = work.daemon(stack);
    // A poll would come only after 10 minutes; IDLE has the canary within seconds.
    daemon.wait_metric(
        "mailcanary_delivered_total{class=\"interpersonal\",folder=\"INBOX\",probe=\"idler\"}",
        1.0,
        Duration::from_secs(10),
    );
    let delay = metric(
        &daemon.scrape(),
        &series("last_delivery_delay_seconds", "idler", "interpersonal"),
    )
    .unwrap();
    assert!(delay < 5.0, "delivery delay {delay}");
}
