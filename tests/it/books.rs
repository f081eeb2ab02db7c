//! The books against hostile or odd arrivals (issue 11): a genuine canary replayed after it was
//! delivered and forgotten, two canaries arriving in swapped order, and a canary carrying 200
//! `Received:` lines. Uses box24, box25 and box27, read as Maildirs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

const CLASS: &str = "interpersonal";

/// A probe sending `interpersonal` canaries to `to` and reading `user`'s Maildir (INBOX only),
/// with `probe_keys` (e.g. `lost_after`) and `mailbox_keys` (e.g. `cleanup`) added.
fn section(stack: &Stack, name: &str, user: &str, to: &str, probe_keys: &str) -> String {
    let section = with_probe_keys(
        &probe_section(stack, name, user, "MC_PROBE1_PASSWORD"),
        &format!("classes = [\"{CLASS}\"]\n{probe_keys}"),
    )
    .replace(&format!("to = \"{user}\""), &format!("to = \"{to}\""));
    let (sending, _imap) = section
        .split_once("  [probe.mailbox]")
        .expect("probe_section has a mailbox part");
    format!(
        "{sending}  [probe.mailbox]\n  protocol = \"maildir\"\n  path = \"{path}\"\n  \
         folders = [\"INBOX\"]\n  poll_interval = \"250ms\"\n",
        path = stack.maildir(user).display(),
    )
}

/// Adds keys to the `[agent]` section `Workdir` wrote.
fn agent_keys(work: &Workdir, keys: &str) {
    let text = std::fs::read_to_string(work.config()).expect("read config");
    let text = text.replacen("[agent]\n", &format!("[agent]\n{keys}\n"), 1);
    std::fs::write(work.config(), text).expect("write config");
}

fn series(name: &str, probe: &str) -> String {
    format!("mailcanary_{name}{{class=\"{CLASS}\",probe=\"{probe}\"}}")
}

fn delivered(probe: &str) -> String {
    format!("mailcanary_delivered_total{{class=\"{CLASS}\",folder=\"INBOX\",probe=\"{probe}\"}}")
}

/// Every sample of the probe's delivery-side series that a replay must not move: deliveries,
/// the delay, server and hop histograms, the last delivery, its hops and the clock skew.
fn delivery_samples(text: &str, probe: &str) -> Vec<String> {
    let families = [
        "mailcanary_delivered_total",
        "mailcanary_delivery_delay_seconds",
        "mailcanary_server_delay_seconds",
        "mailcanary_hop_delay_seconds",
        "mailcanary_last_hop_delay_seconds",
        "mailcanary_last_delivery_delay_seconds",
        "mailcanary_last_delivery_timestamp_seconds",
        "mailcanary_clock_skew_seconds",
    ];
    let probe = format!("probe=\"{probe}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&probe))
        .filter(|l| families.iter().any(|f| l.starts_with(f)))
        .map(str::to_string)
        .collect()
}

/// The canary files in a Maildir's INBOX.
fn canary_files(maildir: &Path) -> Vec<(PathBuf, String)> {
    mail_files(maildir)
        .into_iter()
        .filter(|(_, t)| t.contains("X-Mailcanary"))
        .collect()
}

/// Places `content` into the Maildir's `new/` as a mail of its own (written in `tmp/`, then
/// renamed, as a delivery agent does).
fn place(maildir: &Path, tag: &str, content: &str) -> PathBuf {
    let name = format!(
        "{}.M1P{}.{tag}",
        chrono::Utc::now().timestamp(),
        std::process::id()
    );
    let tmp = maildir.join("tmp").join(&name);
    std::fs::write(&tmp, content).expect("write into tmp/");
    let new = maildir.join("new").join(&name);
    std::fs::rename(&tmp, &new).expect("rename into new/");
    new
}

#[test]
fn a_canary_replayed_after_it_was_delivered_and_forgotten_is_counted_as_replayed() {
    let stack = Stack::shared();
    let user = "box24@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let probe = "replayed";
    let work = Workdir::new(
        "it-books-replayed",
        &format!(
            "{}  cleanup = \"keep\"\n",
            section(stack, probe, user, user, "")
        ),
    );
    agent_keys(&work, "forget_after = \"5s\"");
    let daemon = work.daemon(stack);
    // The new counter exists from start-up, at 0.
    daemon.wait_metric(
        &series("replayed_total", probe),
        0.0,
        Duration::from_secs(5),
    );
    daemon.wait_metric(&delivered(probe), 1.0, Duration::from_secs(20));
    let [(original, content)] = canary_files(&maildir).try_into().expect("one kept canary");
    // Gone as cleanup = "delete" would have removed it; its content was captured.
    std::fs::remove_file(&original).expect("remove the delivered canary");
    let before = daemon.scrape();
    let seen = metric(&before, &series("last_delivery_timestamp_seconds", probe))
        .expect("a last delivery");
    // The books forget it forget_after after it was seen; the next look (every 250 ms) after
    // that expires it. Time itself is the event here.
    let forgotten = Duration::from_secs_f64(5.0 + 1.0);
    let until = std::time::UNIX_EPOCH + Duration::from_secs_f64(seen) + forgotten;
    daemon.wait_for("forget_after to pass", Duration::from_secs(20), || {
        std::time::SystemTime::now() >= until
    });

    place(&maildir, "replay", &content);
    daemon.wait_metric(
        &series("replayed_total", probe),
        1.0,
        Duration::from_secs(10),
    );
    let after = daemon.scrape();
    assert_eq!(
        delivery_samples(&after, probe),
        delivery_samples(&before, probe),
        "a replay moves no delivery series"
    );
    // The books change before the line is logged: wait for the line, don't race it.
    daemon.wait_for("the replay to be logged", Duration::from_secs(5), || {
        daemon.log_text().contains("replayed canary")
    });

    // Kept in place, it is read on every look and after a restart, and still counts once.
    let looks_later = Instant::now() + Duration::from_secs(1);
    daemon.wait_for("a few more looks", Duration::from_secs(5), || {
        Instant::now() >= looks_later
    });
    assert_eq!(
        metric(&daemon.scrape(), &series("replayed_total", probe)),
        Some(1.0)
    );
    drop(daemon);
    let daemon = work.daemon(stack);
    // The restarted agent sends a canary of its own and reads the kept replay again on its
    // first look; once its canary is in, that look has happened.
    daemon.wait_metric(&delivered(probe), 2.0, Duration::from_secs(20));
    let text = daemon.scrape();
    assert_eq!(
        metric(&text, &series("replayed_total", probe)),
        Some(1.0),
        "counted once, also after a restart\n{text}"
    );
    empty_mailbox(stack, user);
}

#[test]
fn two_canaries_arriving_in_swapped_order_leave_no_sequence_gap() {
    let stack = Stack::shared();
    let user = "box25@example.test";
    let held = "box25+hold@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let probe = "swapped";
    let lost_after = "lost_after = \"8s\"";
    let work = Workdir::new(
        "it-books-swapped",
        &section(stack, probe, user, held, lost_after),
    );
    // Canary 1 is held at the server.
    let text = work.once(stack, "1s");
    assert_eq!(metric(&text, &series("in_flight", probe)), Some(1.0));

    // Canary 2 overtakes it.
    work.rewrite(
        "it-books-swapped",
        &section(stack, probe, user, user, lost_after),
    );
    let daemon = work.daemon(stack);
    daemon.wait_metric(&delivered(probe), 1.0, Duration::from_secs(20));
    let overtaken = Instant::now();
    stack.ctl("release", &[held]);
    daemon.wait_metric(&delivered(probe), 2.0, Duration::from_secs(20));
    // Removal follows the accounting: await it, do not race it.
    daemon.wait_for("both cleaned up", Duration::from_secs(10), || {
        canary_files(&maildir).is_empty()
    });

    // A gap would be counted once lost_after has passed since canary 2 was sent: wait that
    // long (and a few looks more), then nothing may be counted.
    let settled = overtaken + Duration::from_secs(8 + 2);
    daemon.wait_for("lost_after to pass", Duration::from_secs(20), || {
        Instant::now() >= settled
    });
    let text = daemon.scrape();
    assert_eq!(
        metric(&text, &series("sequence_gaps_total", probe)),
        Some(0.0),
        "{text}"
    );
    assert_eq!(metric(&text, &series("sent_total", probe)), Some(2.0));
    assert_eq!(metric(&text, &series("replayed_total", probe)), Some(0.0));
}

#[test]
fn a_canary_with_200_received_lines_creates_at_most_8_hop_series() {
    let stack = Stack::shared();
    let user = "box27@example.test";
    let held = "box27+hold@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let probe = "hops";
    let work = Workdir::new("it-books-hops", &section(stack, probe, user, held, ""));
    let out = work.run(stack, &[CANARY_LINES, &["once", "--wait", "1s"]].concat());
    assert!(out.status.success(), "{}", output_text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    let id = log
        .lines()
        .find(|l| l.contains("canary sent"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no canary sent:\n{log}"))
        .to_string();

    // Delivered while no agent looks (the held queue may hold older tests' mail too: this
    // canary is found by its id); then 200 relays' worth of Received lines are put on top,
    // as a hostile relay on the way could.
    stack.ctl("release", &[held]);
    let (path, content) = wait_for_mail(&maildir, &id);
    let date = chrono::Utc::now().to_rfc2822();
    let relays: String = (0..200)
        .map(|i| format!("Received: from relay{i}.example.test by relay{i}.example.test; {date}\n"))
        .collect();
    std::fs::remove_file(&path).expect("remove the delivered file");
    place(&maildir, "relayed", &format!("{relays}{content}"));

    work.rewrite("it-books-hops", &section(stack, probe, user, user, ""));
    let text = work.once(stack, "20s");
    assert_eq!(
        metric(&text, &delivered(probe)),
        Some(2.0),
        "the relayed canary and this run's own are delivered\n{text}"
    );
    let hops: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mailcanary_hop_delay_seconds_count{"))
        .filter(|l| l.contains(&format!("probe=\"{probe}\"")))
        .collect();
    assert_eq!(hops.len(), 8, "hop series: {hops:#?}");
    for hop in 0..8 {
        let want = format!("hop=\"{hop}\"");
        assert!(
            hops.iter().any(|l| l.contains(&want)),
            "{want} in {hops:#?}"
        );
    }
    let deepest = metric(
        &text,
        &format!("mailcanary_hop_delay_seconds_count{{hop=\"7\",probe=\"{probe}\"}}"),
    );
    assert_eq!(deepest, Some(1.0), "only the relayed canary reaches hop 7");
    let last_hops = text
        .lines()
        .filter(|l| l.starts_with("mailcanary_last_hop_delay_seconds{"))
        .filter(|l| l.contains(&format!("probe=\"{probe}\"")))
        .count();
    assert!(
        (1..=8).contains(&last_hops),
        "the last delivery's hops, at most 8: {last_hops}\n{text}"
    );
}
