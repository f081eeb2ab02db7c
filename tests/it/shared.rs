//! Probes that watch the same mailbox share one watcher: one IMAP connection for all of them,
//! each probe counting only the canaries it sent, and a fault of the mailbox showing in every
//! probe's `mailbox_up`.

use std::collections::HashSet;
use std::time::Duration;

use crate::matrix::deny;
use crate::proxy::FaultProxy;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);
const PROBES: [&str; 2] = ["share_a", "share_b"];

/// Established TCP connections of process `pid` to `127.0.0.1:port`, from its socket inodes
/// and the kernel's connection table.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .expect("tcp table")
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // rem_address, state (01 = established), inode
            f.len() > 9 && f[2] == remote && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}

/// Takes `user` off the stack's deny file when dropped, so a failing test does not leave the
/// mailbox locked for the next run (without waiting for Dovecot: a drop must not panic).
struct Allow<'a>(&'a Stack, &'a str);

impl Drop for Allow<'_> {
    fn drop(&mut self) {
        let path = self.0.get("MAILSTACK_DENY_FILE");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| *l != self.1)
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write(path, kept);
    }
}

#[test]
fn probes_sharing_a_mailbox_hold_one_connection_count_their_own_and_fail_together() {
    let stack = Stack::shared();
    let user = "box36@example.test";
    deny(stack, user, false);
    let _allow = Allow(stack, user);
    empty_mailbox(stack, user);
    // In front of IMAPS, only to cut the session after a login is denied: a session already
    // logged in would not notice.
    let proxy = FaultProxy::start(stack.port("MAILSTACK_IMAPS_PORT"));
    let imaps = format!("port = {}", stack.port("MAILSTACK_IMAPS_PORT"));
    let sections: String = PROBES
        .iter()
        .map(|name| {
            let section = probe_section(stack, name, user, "MC_PROBE1_PASSWORD")
                .replace(&imaps, &format!("port = {}", proxy.port));
            with_probe_keys(
                &section,
                "classes = [\"interpersonal\", \"bulk\"]\ninterval = \"1s\"",
            )
        })
        .collect();
    let work = Workdir::new("it-shared", &sections);
    let mut daemon = work.daemon_with(stack, CANARY_LINES);

    daemon.wait_for("two rounds delivered to each probe", LIMIT, || {
        let text = daemon.scrape();
        PROBES
            .iter()
            .all(|p| probe_total(&text, "mailcanary_delivered_total", p) >= 4.0)
    });
    let text = daemon.scrape();
    for probe in PROBES {
        assert_eq!(
            probe_total(&text, "mailcanary_forged_total", probe),
            0.0,
            "{text}"
        );
        let up = format!("mailcanary_mailbox_up{{probe=\"{probe}\",protocol=\"imap\"}}");
        assert_eq!(metric(&text, &up), Some(1.0), "{text}");
    }
    assert_eq!(
        connections_to(daemon.pid(), proxy.port),
        1,
        "IMAP connections held for two probes on one mailbox\n{}",
        daemon.log_text()
    );

    deny(stack, user, true);
    proxy.cut_all();
    for probe in PROBES {
        let up = format!("mailcanary_mailbox_up{{probe=\"{probe}\",protocol=\"imap\"}}");
        daemon.wait_metric(&up, 0.0, LIMIT);
        let errors = probe_total(&daemon.scrape(), "mailcanary_mailbox_errors_total", probe);
        assert!(errors >= 1.0, "{probe}: {errors} mailbox errors");
    }
    // Logged once per failed look, naming both probes, not once per probe.
    let log = daemon.log_text();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" mailbox check failed "))
        .collect();
    assert!(!failed.is_empty(), "{log}");
    assert!(
        failed.iter().all(|l| l.contains(" probe=share_a,share_b ")),
        "{log}"
    );
    deny(stack, user, false);
    for probe in PROBES {
        let up = format!("mailcanary_mailbox_up{{probe=\"{probe}\",protocol=\"imap\"}}");
        daemon.wait_metric(&up, 1.0, Duration::from_secs(90));
    }
    assert!(daemon.terminate().success(), "{}", daemon.log_text());

    // `once` shares the watcher too, and waits until both probes' canaries are in.
    let (text, log) = work.once_with_log(stack, "30s");
    for probe in PROBES {
        for class in ["interpersonal", "bulk"] {
            let labels = format!("class=\"{class}\",probe=\"{probe}\"");
            let in_flight = format!("mailcanary_in_flight{{{labels}}}");
            assert_eq!(
                metric(&text, &in_flight),
                Some(0.0),
                "{in_flight}\nonce's log:\n{log}\nthe daemon's log:\n{}",
                daemon.log_text()
            );
        }
        assert_eq!(
            probe_total(&text, "mailcanary_forged_total", probe),
            0.0,
            "{text}"
        );
    }
}

/// IMAP logins of `user` in Dovecot's log so far.
fn imap_logins(stack: &Stack, user: &str) -> usize {
    let needle = format!("imap-login: Info: Login: user=<{user}>");
    std::fs::read_to_string(stack.get("MAILSTACK_DOVECOT_LOG"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

#[test]
fn check_logs_in_once_per_shared_mailbox_and_reports_it_for_each_probe() {
    let stack = Stack::shared();
    let user = "box37@example.test";
    let sections: String = ["check_a", "check_b"]
        .iter()
        .map(|name| probe_section(stack, name, user, "MC_PROBE1_PASSWORD"))
        .collect();
    let work = Workdir::new("it-shared-check", &sections);
    let before = imap_logins(stack, user);
    let out = work.run(stack, &["check"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["check_a", "check_b"] {
        let line = format!(
            "probe {name} imap 127.0.0.1:{}: ok",
            stack.port("MAILSTACK_IMAPS_PORT")
        );
        assert!(stdout.contains(&line), "{stdout}");
    }
    // Dovecot logs a login as it happens; give it a moment to show a second one, if any.
    assert!(poll_until(Duration::from_secs(5), &mut || imap_logins(
        stack, user
    ) > before));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(imap_logins(stack, user) - before, 1, "{stdout}");
}
