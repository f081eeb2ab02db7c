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

/// The value of one series, which must be in the exposition: a missing series is a failure,
/// not a zero.
fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} is missing from:\n{text}"))
}

/// Denies or allows a user's logins (IMAP, POP3, SMTP AUTH) through the stack's deny file, and
/// waits until Dovecot (which re-reads the file at most once a second) acts on it: a direct
/// POP3 login is the observable event.
pub(crate) fn deny(stack: &Stack, user: &str, denied: bool) {
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
    probe: &'a str,
    stage: &'a str,
    /// The log message of this kind of failure (`canary not sent`, `mailbox check failed`).
    event: &'a str,
    counter: String,
    healthy: Box<dyn Fn(&str) -> f64 + 'a>,
}

impl Row<'_> {
    /// Whether `line` is this row's log line: its message, this probe, this stage in the `stage`
    /// field, and every one of `error` in the `error` field (the last field: the server's reply
    /// code and text, or the OS error). Structured fields only, never a bare number that a
    /// timestamp, a port or an id could contain too.
    fn logged(&self, line: &str, error: &[&str]) -> bool {
        let Some((head, error_field)) = line.split_once(" error=") else {
            return false;
        };
        head.contains(&format!(" {} ", self.event))
            && head.contains(&format!(" probe={} ", self.probe))
            && head.contains(&format!(" stage=\"{}\"", self.stage))
            && error.iter().all(|e| error_field.contains(e))
    }

    fn check(&self, fault: &str, error: &[&str], inject: impl FnOnce(), repair: impl FnOnce()) {
        let before = metric(&self.daemon.scrape(), &self.counter).unwrap_or(0.0);
        let log_before = self.daemon.log_text().len();
        inject();
        self.daemon.wait_for(
            &format!(
                "{fault}: {} and a {:?} line at stage {:?} with {error:?} in its error",
                self.counter, self.event, self.stage
            ),
            LIMIT,
            || {
                metric(&self.daemon.scrape(), &self.counter).unwrap_or(0.0) > before
                    && self.daemon.log_text()[log_before..]
                        .lines()
                        .any(|l| self.logged(l, error))
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

/// Sets up a fault that only a new connection meets (the proxy's next connection, a login),
/// then cuts the open ones: the agent keeps a submission connection for the next canary for a
/// moment, and a kept one would go on working (as it would against a real server).
fn fresh_connection(proxy: &FaultProxy, fault: impl FnOnce()) {
    fault();
    proxy.cut_all();
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
    let sent = |t: &str| {
        value(
            t,
            "mailcanary_sent_total{class=\"interpersonal\",probe=\"smtpf\"}",
        )
    };
    daemon.wait_for("a first canary", LIMIT, || {
        metric(
            &daemon.scrape(),
            "mailcanary_sent_total{class=\"interpersonal\",probe=\"smtpf\"}",
        )
        .is_some_and(|n| n >= 1.0)
    });
    let row = |stage: &'static str| Row {
        daemon: &daemon,
        probe: "smtpf",
        stage,
        event: "canary not sent",
        counter: format!(
            "mailcanary_send_failures_total{{class=\"interpersonal\",probe=\"smtpf\",stage=\"{stage}\"}}"
        ),
        healthy: Box::new(sent),
    };
    row("connect").check(
        "SMTP refusing (421)",
        &["(421)", "Service shutting down"],
        || {
            fresh_connection(&proxy, || {
                proxy.push(&[Fault::Say(b"421 4.3.2 Service shutting down\r\n")])
            })
        },
        || {},
    );
    row("tls").check(
        "STARTTLS not offered",
        &["does not offer STARTTLS"],
        || fresh_connection(&proxy, || proxy.push(&[Fault::SmtpWithoutStartTls])),
        || {},
    );
    row("timeout").check(
        "SMTP server hangs",
        &["no answer"],
        || fresh_connection(&proxy, || proxy.push(&[Fault::Silent])),
        || {},
    );
    row("auth").check(
        "SMTP auth refused",
        &[],
        || fresh_connection(&proxy, || deny(stack, "probe1@example.test", true)),
        || deny(stack, "probe1@example.test", false),
    );
    row("rejected").check(
        "SMTP rejects (5xx)",
        &["(550)", "mailstack rejects canaries"],
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
        &["(450)", "mailstack says later"],
        // Postfix reloads its tables for new sessions only.
        || {
            fresh_connection(&proxy, || {
                stack.ctl(
                    "rcpt-rule",
                    &["add", "/^box04@/ 450 4.7.1 mailstack says later"],
                )
            })
        },
        || stack.ctl("rcpt-rule", &["clear"]),
    );
    // Down means nothing listens: the connection is refused, not accepted and then closed
    // (which is what a proxy in front of a stopped server would otherwise do).
    row("connect").check(
        "SMTP server down",
        &["Connection refused"],
        || {
            stack.ctl("stop-postfix", &[]);
            proxy.stop_listening();
            let refused =
                std::net::TcpStream::connect(("127.0.0.1", proxy.port)).map_err(|e| e.kind());
            assert_eq!(
                refused.err(),
                Some(std::io::ErrorKind::ConnectionRefused),
                "the SMTP port must refuse connections while the server is down"
            );
        },
        || {
            stack.ctl("up", &[]);
            proxy.listen_again();
        },
    );

    let scrape = daemon.scrape();
    let untrusted_tls =
        "mailcanary_send_failures_total{class=\"interpersonal\",probe=\"untrusted\",stage=\"tls\"}";
    assert!(
        value(&scrape, untrusted_tls) >= 1.0,
        "an untrusted certificate is a tls failure"
    );
    assert!(
        daemon.log_text().contains("certificate verify failed"),
        "the log says why"
    );
    assert_eq!(
        value(
            &scrape,
            "mailcanary_sent_total{class=\"interpersonal\",probe=\"untrusted\"}"
        ),
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
        via_plain_imap(stack, &section, port)
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
        let delivered = format!(
            "mailcanary_delivered_total{{class=\"interpersonal\",folder=\"INBOX\",probe=\"{probe}\"}}"
        );
        let looks = move |t: &str| value(t, &delivered);
        let row = |stage: &'static str| Row {
            daemon: &daemon,
            probe,
            stage,
            event: "mailbox check failed",
            counter: format!(
                "mailcanary_mailbox_errors_total{{probe=\"{probe}\",stage=\"{stage}\"}}"
            ),
            healthy: Box::new(looks.clone()),
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
            &["no answer"],
            || inject(Fault::Silent),
            || {},
        );
        row("greeting").check(
            &format!("{protocol}: garbage greeting"),
            &[],
            || inject(Fault::Say(b"\x00\xffgarbage\r\n")),
            || {},
        );
        row("timeout").check(
            &format!("{protocol}: reply stops mid-command"),
            &["no answer"],
            || inject(Fault::StallAfter(greeting + 12)),
            || {},
        );
        row("auth").check(
            &format!("{protocol}: login refused"),
            &[],
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
