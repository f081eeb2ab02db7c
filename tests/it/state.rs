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
    // Longer than the canaries are held (a restart: seconds), short enough that a canary
    // that was really lost is counted while the test waits for the books to settle.
    let work = Workdir::new(
        "it-crash",
        &with_probe_keys(&section, &format!("{ONE_CLASS}\nlost_after = \"15s\"")),
    );
    let first = work.daemon_with(stack, CANARY_LINES);
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
    let second = work.daemon_with(stack, CANARY_LINES);
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
    // Nothing more is sent (interval 1h): in flight drops to 0 once both canaries are
    // delivered, or counted lost after lost_after. Then lost_total says which.
    second.wait_metric(&series("in_flight", "crash"), 0.0, Duration::from_secs(25));
    let last = second.scrape();
    assert_eq!(
        metric(&last, &series("lost_total", "crash")),
        Some(0.0),
        "{}",
        second.log_text()
    );
    assert_eq!(metric(&last, &delivered("crash")), Some(2.0));
    assert_eq!(
        metric(&last, &series("delivery_delay_seconds_count", "crash")),
        Some(2.0)
    );
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

#[test]
fn cron_runs_accumulate_and_reach_node_exporter_and_pushgateway() {
    let stack = Stack::shared();
    let user = "box09@example.test";
    empty_mailbox(stack, user);
    let work = Workdir::new(
        "it-cron",
        &probe_section(stack, "cron", user, "MC_PROBE1_PASSWORD"),
    );
    let textdir = work.dir.path().join("textfile");
    std::fs::create_dir(&textdir).unwrap();
    let textfile = textdir.join("mailcanary.prom");
    let pushgateway = Service::start("prometheus-pushgateway", &[]);
    let push_url = format!("http://127.0.0.1:{}", pushgateway.port);
    for run in 1..=3 {
        let mut args = vec![
            "once",
            "--wait",
            "20s",
            "--textfile",
            textfile.to_str().unwrap(),
        ];
        if run == 3 {
            args.extend(["--push", push_url.as_str()]);
        }
        let out = work.run(stack, &args);
        assert!(out.status.success(), "run {run}: {}", output_text(&out));
    }
    let text = std::fs::read_to_string(&textfile).unwrap();
    let node_exporter = Service::start(
        "prometheus-node-exporter",
        &[
            "--collector.disable-defaults",
            "--collector.textfile",
            &format!("--collector.textfile.directory={}", textdir.display()),
        ],
    );
    let exported = node_exporter.scrape();
    let pushed = pushgateway.scrape();
    for class in ["interpersonal", "transactional", "bulk"] {
        let labels = format!("class=\"{class}\",probe=\"cron\"");
        let grouped = format!("{labels},instance=\"it-cron\",job=\"mailcanary\"");
        for (name, want) in [("sent_total", 3.0), ("delivery_delay_seconds_count", 3.0)] {
            let plain = format!("mailcanary_{name}{{{labels}}}");
            assert_eq!(
                metric(&text, &plain),
                Some(want),
                "textfile {plain}\n{text}"
            );
            assert_eq!(
                metric(&exported, &plain),
                Some(want),
                "node_exporter {plain}"
            );
            let pushed_series = format!("mailcanary_{name}{{{grouped}}}");
            assert_eq!(
                metric(&pushed, &pushed_series),
                Some(want),
                "pushgateway {pushed_series}"
            );
        }
        let inbox = format!("mailcanary_delivered_total{{{labels},folder=\"INBOX\"}}");
        assert_eq!(metric(&text, &inbox), Some(3.0));
        assert_eq!(metric(&exported, &inbox), Some(3.0));
    }
}

#[test]
fn an_overdue_canary_is_lost_then_late_with_its_real_delay() {
    let stack = Stack::shared();
    let user = "box08@example.test";
    empty_mailbox(stack, user);
    let section = probe_section(stack, "late", user, "MC_PROBE1_PASSWORD").replace(
        "to = \"box08@example.test\"",
        "to = \"box08+hold@example.test\"",
    );
    let work = Workdir::new(
        "it-late",
        &with_probe_keys(&section, &format!("{ONE_CLASS}\nlost_after = \"3s\"")),
    );
    let daemon = work.daemon(stack);
    daemon.wait_metric(&series("lost_total", "late"), 1.0, Duration::from_secs(15));
    assert_eq!(
        metric(&daemon.scrape(), &series("in_flight", "late")),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &daemon.scrape(),
            &series("oldest_in_flight_age_seconds", "late")
        ),
        Some(0.0)
    );

    stack.ctl("release", &["box08+hold@example.test"]);
    daemon.wait_metric(&series("late_total", "late"), 1.0, Duration::from_secs(15));
    let text = daemon.scrape();
    assert_eq!(metric(&text, &delivered("late")), Some(1.0));
    assert_eq!(
        metric(&text, &series("delivery_delay_seconds_count", "late")),
        Some(1.0)
    );
    let delay = metric(&text, &series("delivery_delay_seconds_sum", "late")).unwrap();
    assert!(
        delay >= 3.0,
        "the late canary's delay {delay} includes the hold"
    );
    assert_eq!(
        metric(&text, &series("lost_total", "late")),
        Some(1.0),
        "lost stays counted"
    );
}

#[test]
fn a_discarded_canary_shows_as_a_sequence_gap_at_the_receiver() {
    let stack = Stack::shared();
    let user = "box10@example.test";
    empty_mailbox(stack, user);
    // A skipped number counts once it is overdue: lost_after past the canary revealing it.
    let normal = with_probe_keys(
        &probe_section(stack, "gap", user, "MC_PROBE1_PASSWORD"),
        &format!("{ONE_CLASS}\nlost_after = \"3s\""),
    );
    let discarding = normal.replace(
        "to = \"box10@example.test\"",
        "to = \"box10+discard@example.test\"",
    );
    let work = Workdir::new("it-gap", &discarding);
    let text = work.once(stack, "1s");
    assert_eq!(
        metric(&text, &series("in_flight", "gap")),
        Some(1.0),
        "the discarded canary is still in flight"
    );

    work.rewrite("it-gap", &normal);
    let text = work.once(stack, "20s");
    assert_eq!(metric(&text, &delivered("gap")), Some(1.0));
    assert_eq!(metric(&text, &series("sent_total", "gap")), Some(2.0));
    let daemon = work.daemon(stack);
    daemon.wait_metric(
        &series("sequence_gaps_total", "gap"),
        1.0,
        Duration::from_secs(15),
    );
    daemon.wait_metric(&delivered("gap"), 2.0, Duration::from_secs(15));
}

#[test]
fn one_process_per_state_dir_and_a_damaged_store_is_refused_clearly() {
    let stack = Stack::shared();
    let section = probe_section(stack, "lock", "box11@example.test", "MC_PROBE1_PASSWORD");
    let work = Workdir::new("it-lock", &with_probe_keys(&section, ONE_CLASS));
    let daemon = work.daemon(stack);
    let out = work.run(stack, &["once", "--wait", "1s"]);
    assert_eq!(out.status.code(), Some(4), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("locked by another mailcanary process"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            &work
                .dir
                .path()
                .join("state")
                .join("lock")
                .display()
                .to_string()
        ),
        "{stderr}"
    );
    drop(daemon);

    let broken = Workdir::new("it-broken", &with_probe_keys(&section, ONE_CLASS));
    let state = broken.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        state.join("mailcanary.redb"),
        b"\x00garbage, not a database\n".repeat(300),
    )
    .unwrap();
    let out = broken.run(stack, &["once", "--wait", "1s"]);
    assert_eq!(out.status.code(), Some(4), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the state store") && stderr.contains("move it aside"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
