//! Resilience beyond the network: a state directory that turns read-only, a mailbox full of
//! other mail, a replayed canary, an IMAP answer that never comes.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::proxy::FaultProxy;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// The value of one series (name and every label): it must be in the exposition, since a
/// missing series would otherwise read as 0 and pass any "nothing happened" check.
fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} is missing from:\n{text}"))
}

/// `mailcanary_NAME{class=CLASS,probe=PROBE}`.
fn series(name: &str, class: &str, probe: &str) -> String {
    format!("mailcanary_{name}{{class=\"{class}\",probe=\"{probe}\"}}")
}

/// Canaries of `class` delivered into the INBOX for `probe`.
fn delivered_series(class: &str, probe: &str) -> String {
    format!("mailcanary_delivered_total{{class=\"{class}\",folder=\"INBOX\",probe=\"{probe}\"}}")
}

/// A small tmpfs, unmounted when the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root");
        Tmpfs(path.to_path_buf())
    }

    /// Fills the file system (the store can no longer write), or frees it again.
    fn fill(&self, full: bool) {
        let filler = self.0.join("filler");
        if full {
            // dd stops with "No space left on device": that is the point.
            let _ = Command::new("dd")
                .args(["if=/dev/zero", "bs=1M"])
                .arg(format!("of={}", filler.display()))
                .output();
        } else {
            std::fs::remove_file(filler).unwrap();
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_state_dir_turning_read_only_is_counted_and_probing_goes_on() {
    let stack = Stack::shared();
    let user = "box29@example.test";
    empty_mailbox(stack, user);
    let section = with_probe_keys(
        &probe_section(stack, "rostate", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"interpersonal\"]\ninterval = \"1s\"",
    );
    let work = Workdir::new("it-rostate", &section);
    let state = Tmpfs::mount(&work.dir.path().join("state"));
    let mut daemon = work.daemon(stack);
    let delivered = |t: &str| value(t, &delivered_series("interpersonal", "rostate"));
    daemon.wait_for("a first delivery", LIMIT, || {
        delivered(&daemon.scrape()) >= 1.0
    });

    state.fill(true);
    daemon.wait_for("state_errors_total to count", LIMIT, || {
        value(&daemon.scrape(), "mailcanary_state_errors_total") >= 1.0
    });
    assert!(
        daemon.log_text().contains("state store write failed"),
        "{}",
        daemon.log_text()
    );
    let before = delivered(&daemon.scrape());
    daemon.wait_for("deliveries to go on with a read-only store", LIMIT, || {
        delivered(&daemon.scrape()) >= before + 2.0
    });

    state.fill(false);
    let start = Instant::now();
    let errors = || value(&daemon.scrape(), "mailcanary_state_errors_total");
    // Healed: for two seconds deliveries went on and no store write failed.
    let mut last = (errors(), delivered(&daemon.scrape()), Instant::now());
    daemon.wait_for("store writes to succeed again", LIMIT, || {
        let now = (errors(), delivered(&daemon.scrape()));
        if now.0 != last.0 {
            last = (now.0, now.1, Instant::now());
        }
        last.2.elapsed() >= Duration::from_secs(2) && now.1 >= last.1 + 2.0
    });
    println!(
        "matrix | state dir unwritable (disk full) | mailcanary_state_errors_total | recovered {:.2} s after space was freed",
        start.elapsed().as_secs_f64() - 2.0
    );
    // What the agent knew is on disk again, including what happened while it could not write.
    // Stopped as a service is (SIGTERM): a kill -9 may cut the commit of a delivery the scrape
    // already showed (the next run would read that mail again; `state.rs` covers crashes).
    let known = delivered(&daemon.scrape());
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    let status = work.run(stack, &["status"]);
    assert!(status.status.success(), "{}", output_text(&status));
    let table = String::from_utf8_lossy(&status.stdout);
    let row = table
        .lines()
        .rev()
        .find(|l| l.starts_with("rostate"))
        .expect("a results row");
    let stored: f64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(
        stored >= known,
        "the store has {stored} deliveries, the agent knew {known}:\n{table}"
    );
}

/// Every file of a Maildir (INBOX and Junk) by name, with its bytes.
fn snapshot(maildir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["new", "cur", ".Junk/new", ".Junk/cur"] {
        for e in std::fs::read_dir(maildir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push((
                format!("{sub}/{}", e.file_name().to_string_lossy()),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn ten_thousand_ordinary_mails_are_left_exactly_as_they_were() {
    let stack = Stack::shared();
    let user = "box30@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let vmail = std::fs::metadata(&maildir).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    for n in 0..10_000u32 {
        // Already seen and in cur/, as in a long-lived mailbox, so Dovecot has no reason to
        // rename them: any change to a name or a byte is ours. `S=` must be the true size:
        // Dovecot drops the connection when it reads a mail whose size is not the one the name
        // says.
        let body = format!(
            "From: someone{n}@example.org\r\nTo: {user}\r\nSubject: ordinary mail {n}\r\n\
             Message-ID: <ordinary-{n}@example.org>\r\n\r\nNothing to see here, number {n}.\r\n"
        );
        let path = maildir.join(format!("cur/1795000000.M{n}P1.vm,S={}:2,S", body.len()));
        std::fs::write(&path, body).unwrap();
        chown(&path, Some(vmail.uid()), Some(vmail.gid())).unwrap();
    }
    let before = snapshot(&maildir);
    let section = probe_section(stack, "crowded", user, "MC_PROBE1_PASSWORD")
        .replace("timeout = \"5s\"", "timeout = \"60s\"");
    let work = Workdir::new("it-crowded", &section);
    let start = Instant::now();
    let text = work.once(stack, "60s");
    println!(
        "matrix | mailbox with 10,000 ordinary mails | once round trip {:.2} s",
        start.elapsed().as_secs_f64()
    );
    for class in ["interpersonal", "transactional", "bulk"] {
        assert_eq!(value(&text, &delivered_series(class, "crowded")), 1.0);
        assert_eq!(value(&text, &series("forged_total", class, "crowded")), 0.0);
    }
    assert!(
        snapshot(&maildir) == before,
        "an ordinary mail was changed, renamed or removed"
    );
    empty_mailbox(stack, user);
}

#[test]
fn a_replayed_canary_is_a_duplicate_not_a_delivery() {
    let stack = Stack::shared();
    let user = "box31@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let section = with_probe_keys(
        &probe_section(stack, "replay", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"interpersonal\"]",
    );
    let work = Workdir::new("it-replay", &format!("{section}  cleanup = \"keep\"\n"));
    let run = || work.once(stack, "20s");
    let first = run();
    assert_eq!(
        value(&first, &delivered_series("interpersonal", "replay")),
        1.0
    );
    let (_, canary) = mail_files(&maildir)
        .into_iter()
        .find(|(_, t)| t.contains("X-Mailcanary"))
        .expect("the kept canary");
    // The same canary, sent again by someone who captured it.
    let head_end = canary.find("\n\n").map_or(canary.len(), |i| i + 2);
    let replay = canary[head_end..].to_string();
    let headers: String = canary[..head_end]
        .lines()
        .filter(|l| !l.starts_with("Return-Path") && !l.starts_with("Delivered-To"))
        .map(|l| format!("{l}\n"))
        .collect();
    inject(
        stack,
        "probe1@example.test",
        user,
        &format!("{headers}{replay}"),
    );
    wait_for_mail_count(&maildir, 2);
    let second = run();
    assert_eq!(
        value(
            &second,
            &series("duplicates_total", "interpersonal", "replay")
        ),
        1.0
    );
    assert_eq!(
        value(&second, &delivered_series("interpersonal", "replay")),
        2.0,
        "the replay is not a delivery (the second run's own canary is)"
    );
    assert_eq!(
        value(
            &second,
            &series("delivery_delay_seconds_count", "interpersonal", "replay")
        ),
        2.0
    );
    empty_mailbox(stack, user);
}

/// async-imap reads a connection that ends between `UID FETCH` and its answer as an answer
/// with no mail in it; the look then moved its memory past the canary it had just found, which
/// stayed in flight for ever (CI saw it after a cut connection). Now only a completed answer
/// counts: the look reads again on a fresh session and the canary is delivered.
#[test]
fn a_fetch_whose_answer_never_comes_is_read_again_not_skipped() {
    let stack = Stack::shared();
    let user = "box38@example.test";
    empty_mailbox(stack, user);
    let proxy = FaultProxy::start(stack.port("MAILSTACK_IMAP_PORT"));
    proxy.cut_at_command("UID FETCH");
    let section = probe_section(stack, "cutfetch", user, "MC_PROBE1_PASSWORD");
    let section = via_plain_imap(stack, &section, proxy.port);
    let section = with_probe_keys(&section, "classes = [\"interpersonal\"]");
    let work = Workdir::new("it-cut-fetch", &section);
    let (text, log) = work.once_with_log(stack, "30s");
    assert_eq!(proxy.commands_cut(), 1, "no UID FETCH was cut\n{log}");
    assert!(
        log.contains("a chunk of mail could not be read"),
        "the cut answer was not an error\n{log}"
    );
    let delivered = delivered_series("interpersonal", "cutfetch");
    assert_eq!(value(&text, &delivered), 1.0, "{log}");
    assert_eq!(
        value(&text, &series("in_flight", "interpersonal", "cutfetch")),
        0.0,
        "{log}"
    );
    empty_mailbox(stack, user);
}

fn wait_for_mail_count(maildir: &Path, n: usize) {
    let ok = poll_until(Duration::from_secs(10), &mut || {
        mail_files(maildir)
            .iter()
            .filter(|(_, t)| t.contains("X-Mailcanary"))
            .count()
            >= n
    });
    assert!(ok, "{n} canaries never reached {}", maildir.display());
}
