//! Faults a monitor must survive and report: bad credentials, a mailbox server going away,
//! forged canaries.

use std::path::Path;
use std::time::{Duration, Instant};

use mailcanary::canary::{Canary, SigningKey};

use crate::support::*;

#[test]
fn wrong_smtp_password_is_an_auth_failure_and_other_probes_keep_working() {
    let stack = Stack::shared();
    for user in ["box03@example.test", "box04@example.test"] {
        empty_mailbox(stack, user);
    }
    let probes = probe_section(stack, "bad", "box03@example.test", "MC_WRONG_PASSWORD")
        + &probe_section(stack, "good", "box04@example.test", "MC_PROBE1_PASSWORD");
    let work = Workdir::new("it-auth", &probes);
    let textfile = work.dir.path().join("out.prom");
    let out = work.run(
        stack,
        &[
            "once",
            "--wait",
            "20s",
            "--textfile",
            textfile.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a probe that cannot send exits 2: {}",
        output_text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("not-the-password"),
        "the password leaked into the log"
    );

    let text =
        std::fs::read_to_string(&textfile).expect("metrics are written even when a probe fails");
    for class in ["interpersonal", "transactional", "bulk"] {
        let bad = format!("class=\"{class}\",probe=\"bad\"");
        let good = format!("class=\"{class}\",probe=\"good\"");
        assert_eq!(
            metric(
                &text,
                &format!("mailcanary_send_failures_total{{{bad},stage=\"auth\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            metric(&text, &format!("mailcanary_sent_total{{{bad}}}")),
            Some(0.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("mailcanary_delivered_total{{{good},folder=\"INBOX\"}}")
            ),
            Some(1.0),
            "{text}"
        );
    }
}

/// Stops this test's private stack when the test ends, pass or fail.
struct StackGuard(Stack);

impl Drop for StackGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script("mailstack"))
            .arg("down")
            .arg(&self.0.dir)
            .output();
    }
}

#[test]
fn mailbox_down_during_idle_and_back_is_seen_without_a_restart_and_loses_nothing() {
    // Stopping Dovecot would disturb every other test, so this one has a stack of its own.
    let stack = StackGuard(Stack::up(
        Path::new("/tmp/mailcanary-it-restart"),
        Some(21000),
    ));
    let stack = &stack.0;
    let user = "box01@example.test";
    empty_mailbox(stack, user);
    let section = with_probe_keys(
        &probe_section(stack, "restart", user, "MC_PROBE1_PASSWORD"),
        // Long enough for the canaries queued during the outage (Postfix retries, the agent
        // reconnects with backoff: seconds), short enough that one that was really lost is
        // counted while the test waits for the outage's canaries to be resolved.
        &format!(
            "classes = [\"interpersonal\"]\ninterval = \"1s\"\nlost_after = \"{LOST_AFTER_S}s\""
        ),
    )
    .replace(
        "poll_interval = \"250ms\"",
        "poll_interval = \"5s\"\n  watch = \"idle\"",
    );
    // Postfix authenticates through Dovecot, so while Dovecot is down canaries go in over the
    // plain port, as mail from the outside would.
    let section = plain_smtp(stack, &section);
    let work = Workdir::new("it-restart", &section);
    let daemon = work.daemon_with(stack, CANARY_LINES);
    let up = "mailcanary_mailbox_up{probe=\"restart\",protocol=\"imap\"}";
    let s = |name: &str| format!("mailcanary_{name}{{class=\"interpersonal\",probe=\"restart\"}}");
    let delivered =
        "mailcanary_delivered_total{class=\"interpersonal\",folder=\"INBOX\",probe=\"restart\"}";
    daemon.wait_metric(up, 1.0, Duration::from_secs(10));
    daemon.wait_for("a first delivery", Duration::from_secs(10), || {
        metric(&daemon.scrape(), delivered).unwrap_or(0.0) >= 1.0
    });

    stack.ctl("stop-dovecot", &[]);
    daemon.wait_metric(up, 0.0, Duration::from_secs(15));
    // Wherever the outage hit (IDLE, connect, greeting), it is counted.
    let errors: f64 = daemon
        .scrape()
        .lines()
        .filter(|l| {
            l.starts_with("mailcanary_mailbox_errors_total{") && l.contains("probe=\"restart\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(
        errors >= 1.0,
        "the outage is counted in mailbox_errors_total"
    );
    // Canaries keep being sent (Postfix queues them) while the mailbox is away.
    let sent_before = metric(&daemon.scrape(), &s("sent_total")).unwrap();
    daemon.wait_for(
        "a canary sent during the outage",
        Duration::from_secs(10),
        || metric(&daemon.scrape(), &s("sent_total")).unwrap_or(0.0) > sent_before,
    );

    stack.ctl("start-dovecot", &[]);
    daemon.wait_metric(up, 1.0, Duration::from_secs(15));
    // Postfix retries a delivery that lost its LMTP connection on a schedule of its own (seen:
    // not within 30 s, "skipped, still being delivered"); the agent is under test here, not
    // Postfix's queue, so the queue is flushed as an operator would after an outage.
    stack.ctl("release", &[]);
    let sent = metric(&daemon.scrape(), &s("sent_total")).unwrap();
    // Every canary sent so far (those of the outage included) is resolved once the oldest one
    // still in flight was sent after this moment: delivered, or counted lost after
    // `lost_after`. Only then can `lost_total == 0` mean that none was lost.
    let mark = Instant::now();
    daemon.wait_for(
        "every canary sent before the outage ended to be delivered or counted lost",
        Duration::from_secs(LOST_AFTER_S + 15),
        || {
            let oldest = metric(&daemon.scrape(), &s("oldest_in_flight_age_seconds"))
                .expect("oldest_in_flight_age_seconds");
            oldest + 0.2 < mark.elapsed().as_secs_f64()
        },
    );
    let text = daemon.scrape();
    assert_eq!(
        metric(&text, &s("lost_total")),
        Some(0.0),
        "a canary of the outage was lost\n{}",
        daemon.log_text()
    );
    assert_eq!(metric(&text, &s("late_total")), Some(0.0));
    assert!(metric(&text, delivered).unwrap() >= sent, "{text}");
    let slowest = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("canary delivered"))
        .filter_map(|l| {
            l.split_once(" delay_s=")?
                .1
                .split(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .fold(0.0, f64::max);
    println!(
        "matrix | IMAP server down and back | slowest canary {slowest:.2} s (lost_after {LOST_AFTER_S} s)"
    );
}

/// `lost_after` of the outage test, in seconds.
const LOST_AFTER_S: u64 = 30;

/// Replaces a probe section's submission settings by the stack's plain SMTP port, no AUTH.
fn plain_smtp(stack: &Stack, section: &str) -> String {
    let submission = format!("port = {}", stack.port("MAILSTACK_SUBMISSION_PORT"));
    let plain = format!("port = {}", stack.port("MAILSTACK_SMTP_PORT"));
    section
        .replace(&submission, &plain)
        .replace("tls = \"starttls\"", "tls = \"none\"")
        .replace(
            "  username = \"probe1@example.test\"\n  password_env = \"MC_PROBE1_PASSWORD\"\n",
            "",
        )
}

#[test]
fn forged_and_foreign_canaries_are_counted_or_ignored_but_never_touched() {
    let stack = Stack::shared();
    let user = "box05@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let forged_key = SigningKey::new(b"not the agent's key".to_vec()).unwrap();
    let claim = |agent: &str, id: &str| Canary {
        id: id.into(),
        probe: "forged".into(),
        class: "interpersonal".into(),
        seq: 1,
        sent_ms: 1_795_000_000_000,
        agent: agent.into(),
    };
    let mail = |agent: &str, id: &str, tag: &str| {
        format!(
            "From: probe1@example.test\nTo: {user}\nSubject: {tag}\nMessage-ID: <{tag}@example.test>\n\
             X-Mailcanary: {}\n\nmailcanary-id: {id}\n",
            claim(agent, id).header_value(&forged_key)
        )
    };
    inject(
        stack,
        "probe1@example.test",
        user,
        &mail("it-forged", "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C", "forged-1"),
    );
    inject(
        stack,
        "probe1@example.test",
        user,
        &mail("someone-else", "01JDQ8ZK3V6R9X1T2Y3Z4A5B6D", "foreign-1"),
    );
    let (_, forged_before) = wait_for_mail(&maildir, "forged-1@example.test");
    let (_, foreign_before) = wait_for_mail(&maildir, "foreign-1@example.test");

    let section = probe_section(stack, "forged", user, "MC_PROBE1_PASSWORD").replace(
        "[probe.smtp]",
        "classes = [\"interpersonal\"]\n  [probe.smtp]",
    );
    let work = Workdir::new("it-forged", &section);
    let text = work.once(stack, "20s");
    let labels = "class=\"interpersonal\",probe=\"forged\"";
    assert_eq!(
        metric(&text, &format!("mailcanary_forged_total{{{labels}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("mailcanary_delivered_total{{{labels},folder=\"INBOX\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!("mailcanary_delivery_delay_seconds_count{{{labels}}}")
        ),
        Some(1.0)
    );

    let files = mail_files(&maildir);
    let content = |tag: &str| {
        files
            .iter()
            .find(|(_, t)| t.contains(tag))
            .map(|(_, t)| t.clone())
    };
    assert_eq!(
        content("forged-1@example.test"),
        Some(forged_before),
        "the forged mail must stay untouched"
    );
    assert_eq!(
        content("foreign-1@example.test"),
        Some(foreign_before),
        "another agent's canary must stay untouched"
    );
    assert_eq!(files.len(), 2, "only the real canary was removed");

    // A new process, the same forgery still in place: it was counted already.
    let again = work.once(stack, "20s");
    assert_eq!(
        metric(&again, &format!("mailcanary_forged_total{{{labels}}}")),
        Some(1.0),
        "a forgery left in place is counted once, also across runs"
    );
}
