//! A canary's whole path: signed, submitted over SMTP, found over IMAP, measured, exported.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const CLASSES: [&str; 3] = ["interpersonal", "transactional", "bulk"];

#[test]
fn once_measures_every_class_and_leaves_other_mail_alone() {
    let stack = Stack::shared();
    let user = "box01@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let (_, before) = place_ordinary_mail(stack, user, "1");

    let work = Workdir::new(
        "it-roundtrip",
        &probe_section(stack, "rt", user, "MC_PROBE1_PASSWORD"),
    );
    let textfile = work.dir.path().join("mailcanary.prom");
    let out = work.run(
        stack,
        &[
            "once",
            "--wait",
            "30s",
            "--textfile",
            textfile.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));

    let text = std::fs::read_to_string(&textfile).expect("textfile written");
    for class in CLASSES {
        let labels = format!("class=\"{class}\",probe=\"rt\"");
        assert_eq!(
            metric(&text, &format!("mailcanary_sent_total{{{labels}}}")),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                &format!("mailcanary_delivered_total{{{labels},folder=\"INBOX\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                &format!("mailcanary_delivery_delay_seconds_count{{{labels}}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(&text, &format!("mailcanary_in_flight{{{labels}}}")),
            Some(0.0)
        );
        let delay = metric(
            &text,
            &format!("mailcanary_last_delivery_delay_seconds{{{labels}}}"),
        )
        .expect("last delay");
        assert!(delay > 0.0 && delay < 30.0, "implausible delay {delay}");
    }
    assert_eq!(
        metric(
            &text,
            "mailcanary_mailbox_up{probe=\"rt\",protocol=\"imap\"}"
        ),
        Some(1.0)
    );

    assert_untouched(&maildir, "1", &before);
}

#[test]
fn held_canary_is_in_flight_and_ageing_until_released() {
    let stack = Stack::shared();
    let user = "box02@example.test";
    empty_mailbox(stack, user);
    // The stack holds mail addressed to a `+hold` extension until released.
    let section = probe_section(stack, "held", user, "MC_PROBE1_PASSWORD")
        .replace(
            "to = \"box02@example.test\"",
            "to = \"box02+hold@example.test\"",
        )
        .replace(
            "[probe.smtp]",
            "classes = [\"interpersonal\"]\n  [probe.smtp]",
        );
    let work = Workdir::new("it-held", &section);
    let daemon = work.daemon(stack);
    let series =
        |name: &str| format!("mailcanary_{name}{{class=\"interpersonal\",probe=\"held\"}}");
    daemon.wait_metric(&series("sent_total"), 1.0, Duration::from_secs(10));

    let first = daemon.scrape();
    assert_eq!(metric(&first, &series("in_flight")), Some(1.0));
    let age1 = metric(&first, &series("oldest_in_flight_age_seconds")).expect("age");
    // Held long enough that a delay measured from anything but `sent` would show.
    let mut age2 = age1;
    daemon.wait_for(
        "the in-flight age to grow past 2 s",
        Duration::from_secs(10),
        || {
            age2 = metric(&daemon.scrape(), &series("oldest_in_flight_age_seconds")).unwrap_or(0.0);
            age2 > age1 && age2 >= 2.0
        },
    );
    assert_eq!(
        metric(
            &daemon.scrape(),
            &series("delivered_total").replace('}', ",folder=\"INBOX\"}")
        ),
        Some(0.0)
    );
    promtool_accepts(&first);

    stack.ctl("release", &["box02+hold@example.test"]);
    daemon.wait_metric(&series("in_flight"), 0.0, Duration::from_secs(10));
    let last = daemon.scrape();
    assert_eq!(
        metric(
            &last,
            &series("delivered_total").replace('}', ",folder=\"INBOX\"}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&last, &series("oldest_in_flight_age_seconds")),
        Some(0.0)
    );
    let delay = metric(&last, &series("last_delivery_delay_seconds")).expect("delay");
    assert!(
        delay >= age2,
        "delay {delay} shorter than the time it was held ({age2})"
    );
    promtool_accepts(&last);
}

/// `promtool check metrics` prints nothing and exits 0 on a clean exposition.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/mailstack install --all)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}", output_text(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}",
        output_text(&out)
    );
}
