//! The fault matrix: each fault is injected into a running agent, and each must show up as its
//! metric and its log line, and heal by itself once the fault is gone, with no restart. Runs on
//! a private stack, since it stops Postfix, loads rejecting rules and denies logins. The time
//! from repair to the next success is printed (`--nocapture`) for the matrix.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::proxy::{Fault, FaultProxy};
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A private stack per test: they stop servers and change rules under each other otherwise.
fn faults_stack(dir: &str, port_base: u16) -> StackGuard {
    let stack = Stack::up(Path::new(dir), Some(port_base));
    stack.ctl("rule", &["clear"]);
    stack.ctl("rcpt-rule", &["clear"]);
    StackGuard(stack)
}

/// Sum of every sample of `name` whose labels contain all of `labels`.
fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Denies or allows a user's logins (IMAP, POP3, SMTP AUTH) through the stack's deny file, and
/// waits until Dovecot (which re-reads the file at most once a second) acts on it: a direct
/// POP3 login is the observable event.
fn deny(stack: &Stack, user: &str, denied: bool) {
    let path = stack.get("MAILSTACK_DENY_FILE");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().filter(|l| *l != user).collect();
    if denied {
        lines.push(user);
    }
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let password = if user.starts_with("probe1") {
        "MC_PROBE1_PASSWORD"
    } else {
        "MAILSTACK_TEST_PASSWORD"
    };
    let ok = poll_until(LIMIT, &mut || {
        pop3_login(stack, user, stack.get(password)) != denied
    });
    assert!(
        ok,
        "Dovecot did not take up the deny file for {user} (denied: {denied})"
    );
}

/// Whether a plain POP3 login as `user` succeeds right now.
fn pop3_login(stack: &Stack, user: &str, password: &str) -> bool {
    use std::io::{BufRead as _, BufReader, Write as _};
    let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", stack.port("MAILSTACK_POP3_PORT")))
    else {
        return false;
    };
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    let mut say = |command: String| {
        line.clear();
        writer.write_all(command.as_bytes()).is_ok()
            && reader.read_line(&mut line).is_ok()
            && line.starts_with("+OK")
    };
    let greeted = say(String::new());
    let ok = greeted && say(format!("USER {user}\r\n")) && say(format!("PASS {password}\r\n"));
    let _ = say("QUIT\r\n".to_string());
    ok
}

/// One row of the matrix: inject, see the counter and the log line, repair, see recovery.
struct Row<'a> {
    daemon: &'a Daemon,
    counter: String,
    healthy: Box<dyn Fn(&str) -> f64 + 'a>,
}

impl Row<'_> {
    fn check(&self, fault: &str, log: &str, inject: impl FnOnce(), repair: impl FnOnce()) {
        let before = metric(&self.daemon.scrape(), &self.counter).unwrap_or(0.0);
        let log_before = self.daemon.log_text().len();
        inject();
        self.daemon.wait_for(
            &format!("{fault}: {} and a log line with {log:?}", self.counter),
            LIMIT,
            || {
                metric(&self.daemon.scrape(), &self.counter).unwrap_or(0.0) > before
                    && self.daemon.log_text()[log_before..].contains(log)
            },
        );
        let baseline = (self.healthy)(&self.daemon.scrape());
        let repaired = Instant::now();
        repair();
        self.daemon
            .wait_for(&format!("{fault}: recovery"), LIMIT, || {
                (self.healthy)(&self.daemon.scrape()) > baseline
            });
        println!(
            "matrix | {fault} | {} | recovered {:.2} s after repair",
            self.counter,
            repaired.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn smtp_faults_are_staged_logged_and_heal_without_a_restart() {
    let stack = faults_stack("/tmp/mailcanary-it-faults", 25000);
    let stack = &stack.0;
    deny(stack, "probe1@example.test", false);
    let proxy = FaultProxy::start(stack.port("MAILSTACK_SUBMISSION_PORT"));
    let main = probe_section(stack, "smtpf", "box04@example.test", "MC_PROBE1_PASSWORD")
        .replace(
            &format!("port = {}", stack.port("MAILSTACK_SUBMISSION_PORT")),
            &format!("port = {}", proxy.port),
        )
        .replace("timeout = \"10s\"", "timeout = \"2s\"");
    // No ca_file on the SMTP side: the stack's certificate is then not trusted.
    let untrusted = probe_section(
        stack,
        "untrusted",
        "box05@example.test",
        "MC_PROBE1_PASSWORD",
    )
    .replacen(
        &format!("  ca_file = \"{}\"\n", stack.get("MAILSTACK_CA_FILE")),
        "",
        1,
    );
    let keys = "classes = [\"interpersonal\"]\ninterval = \"1s\"";
    let work = Workdir::new(
        "it-smtp-faults",
        &(with_probe_keys(&main, keys) + &with_probe_keys(&untrusted, keys)),
    );
    let daemon = work.daemon(stack);
    let sent = |t: &str| total(t, "mailcanary_sent_total", &["probe=\"smtpf\""]);
    daemon.wait_for("a first canary", LIMIT, || sent(&daemon.scrape()) >= 1.0);
    let row = |stage: &str| Row {
        daemon: &daemon,
        counter: format!(
            "mailcanary_send_failures_total{{class=\"interpersonal\",probe=\"smtpf\",stage=\"{stage}\"}}"
        ),
        healthy: Box::new(sent),
    };
    row("connect").check(
        "SMTP refusing (421)",
        "421",
        || proxy.push(&[Fault::Say(b"421 4.3.2 Service shutting down\r\n")]),
        || {},
    );
    row("tls").check(
        "STARTTLS not offered",
        "does not offer STARTTLS",
        || proxy.push(&[Fault::SmtpWithoutStartTls]),
        || {},
    );
    row("timeout").check(
        "SMTP server hangs",
        "no answer",
        || proxy.push(&[Fault::Silent]),
        || {},
    );
    row("auth").check(
        "SMTP auth refused",
        "stage=\"auth\"",
        || deny(stack, "probe1@example.test", true),
        || deny(stack, "probe1@example.test", false),
    );
    row("rejected").check(
        "SMTP rejects (5xx)",
        "550",
        || {
            stack.ctl(
                "rule",
                &[
                    "add",
                    "/^X-Mailcanary:/ REJECT 5.7.1 mailstack rejects canaries",
                ],
            )
        },
        || stack.ctl("rule", &["clear"]),
    );
    row("rejected").check(
        "SMTP temp-fails (4xx)",
        "450",
        || {
            stack.ctl(
                "rcpt-rule",
                &["add", "/^box04@/ 450 4.7.1 mailstack says later"],
            )
        },
        || stack.ctl("rcpt-rule", &["clear"]),
    );
    row("connect").check(
        "SMTP server down",
        "stage=\"connect\"",
        || stack.ctl("stop-postfix", &[]),
        || stack.ctl("up", &[]),
    );

    let scrape = daemon.scrape();
    let untrusted_tls =
        "mailcanary_send_failures_total{class=\"interpersonal\",probe=\"untrusted\",stage=\"tls\"}";
    assert!(
        metric(&scrape, untrusted_tls).unwrap_or(0.0) >= 1.0,
        "an untrusted certificate is a tls failure"
    );
    assert!(
        daemon.log_text().contains("certificate verify failed"),
        "the log says why"
    );
    assert_eq!(
        total(&scrape, "mailcanary_sent_total", &["probe=\"untrusted\""]),
        0.0
    );
}

#[test]
fn mailbox_faults_are_staged_logged_and_heal_without_a_restart() {
    let stack = faults_stack("/tmp/mailcanary-it-faults-mbox", 26000);
    let stack = &stack.0;
    for user in ["box06@example.test", "box07@example.test"] {
        deny(stack, user, false);
        empty_mailbox(stack, user);
    }
    let imap = FaultProxy::start(stack.port("MAILSTACK_IMAP_PORT"));
    let pop3 = FaultProxy::start(stack.port("MAILSTACK_POP3_PORT"));
    let plain = |section: String, port: u16, protocol: &str| {
        section
            .replace(
                &format!("port = {}", stack.port("MAILSTACK_IMAPS_PORT")),
                &format!("port = {port}"),
            )
            .replace("tls = \"tls\"", "tls = \"none\"")
            .replace("protocol = \"imap\"", &format!("protocol = \"{protocol}\""))
            .replace("timeout = \"5s\"", "timeout = \"2s\"")
    };
    let imap_probe = plain(
        probe_section(stack, "imapf", "box06@example.test", "MC_PROBE1_PASSWORD"),
        imap.port,
        "imap",
    );
    let pop3_probe = plain(
        probe_section(stack, "pop3f", "box07@example.test", "MC_PROBE1_PASSWORD"),
        pop3.port,
        "pop3",
    )
    .replace("  folders = [\"INBOX\", \"Junk\"]\n", "");
    let keys = "classes = [\"interpersonal\"]\ninterval = \"1s\"";
    let work = Workdir::new(
        "it-mailbox-faults",
        &(with_probe_keys(&imap_probe, keys) + &with_probe_keys(&pop3_probe, keys)),
    );
    let daemon = work.daemon(stack);
    for (probe, proxy, user) in [
        ("imapf", &imap, "box06@example.test"),
        ("pop3f", &pop3, "box07@example.test"),
    ] {
        let protocol = if probe == "imapf" { "imap" } else { "pop3" };
        let up = format!("mailcanary_mailbox_up{{probe=\"{probe}\",protocol=\"{protocol}\"}}");
        daemon.wait_metric(&up, 1.0, LIMIT);
        let looks = move |t: &str| {
            total(
                t,
                "mailcanary_delivered_total",
                &[&format!("probe=\"{probe}\"")],
            )
        };
        let row = |stage: &str| Row {
            daemon: &daemon,
            counter: format!(
                "mailcanary_mailbox_errors_total{{probe=\"{probe}\",stage=\"{stage}\"}}"
            ),
            healthy: Box::new(looks),
        };
        let greeting = greeting_len(if probe == "imapf" {
            stack.port("MAILSTACK_IMAP_PORT")
        } else {
            stack.port("MAILSTACK_POP3_PORT")
        });
        let inject = |fault: Fault| {
            proxy.push(&[fault]);
            proxy.cut_all();
        };
        row("timeout").check(
            &format!("{protocol}: greeting never sent"),
            "mailbox check failed",
            || inject(Fault::Silent),
            || {},
        );
        row("greeting").check(
            &format!("{protocol}: garbage greeting"),
            "stage=\"greeting\"",
            || inject(Fault::Say(b"\x00\xffgarbage\r\n")),
            || {},
        );
        row("timeout").check(
            &format!("{protocol}: reply stops mid-command"),
            "no answer",
            || inject(Fault::StallAfter(greeting + 12)),
            || {},
        );
        row("auth").check(
            &format!("{protocol}: login refused"),
            "stage=\"auth\"",
            || {
                deny(stack, user, true);
                proxy.cut_all();
            },
            || deny(stack, user, false),
        );
    }
}

/// Length of a server's first line, to stall a session just after it.
fn greeting_len(port: u16) -> usize {
    use std::io::BufRead as _;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    line.len()
}
