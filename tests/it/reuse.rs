//! A connection that has just submitted a canary is kept for the next canary of the same
//! account: a busy probe does not pay a TLS handshake per canary, and a kept connection ends
//! with QUIT (when it goes stale, or when the agent stops). Read from Postfix's own log.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// One SMTP session of the submission service, from Postfix's `disconnect` line.
#[derive(Debug, Default)]
struct Session {
    login: Option<String>,
    /// `name=count` pairs of the disconnect line (`mail=3`, `quit=1`, …).
    commands: HashMap<String, u32>,
}

/// Submission sessions that ended in `log` (each smtpd process serves one session at a time,
/// so a process's lines between `connect from` and `disconnect from` are one session).
fn ended_sessions(log: &str) -> Vec<Session> {
    let mut open: HashMap<String, Session> = HashMap::new();
    let mut ended = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("postfix/submission/smtpd[").nth(1) else {
            continue;
        };
        let Some((pid, text)) = rest.split_once("]: ") else {
            continue;
        };
        if text.starts_with("connect from ") {
            open.insert(pid.to_string(), Session::default());
        } else if let Some(counts) = text.strip_prefix("disconnect from ") {
            let mut session = open.remove(pid).unwrap_or_default();
            session.commands = counts
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect();
            ended.push(session);
        } else if let Some((_, user)) = text.split_once("sasl_username=")
            && !text.contains("authentication failed")
            && let Some(session) = open.get_mut(pid)
        {
            session.login = Some(user.trim().to_string());
        }
    }
    ended
}

#[test]
fn a_busy_probe_reuses_its_submission_connection_and_ends_it_with_quit() {
    let stack = Stack::shared();
    let user = "box39@example.test";
    let login = "probe2@example.test";
    empty_mailbox(stack, user);
    let log_path = stack.get("MAILSTACK_POSTFIX_LOG");
    let start = std::fs::read_to_string(log_path).unwrap_or_default().len();
    let section = probe_section(stack, "reuse", user, "MC_PROBE2_PASSWORD")
        .replace("probe1@example.test", login);
    let section = with_probe_keys(
        &section,
        "classes = [\"interpersonal\", \"transactional\", \"bulk\"]\ninterval = \"1s\"",
    );
    let work = Workdir::new("it-reuse", &section);
    let mut daemon = work.daemon(stack);
    let sent = |text: &str| probe_total(text, "mailcanary_sent_total", "reuse");
    daemon.wait_for("twelve canaries sent", Duration::from_secs(30), || {
        sent(&daemon.scrape()) >= 12.0
    });
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    let mine = || -> Vec<Session> {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        ended_sessions(&log[start.min(log.len())..])
            .into_iter()
            .filter(|s| s.login.as_deref() == Some(login))
            .collect()
    };
    // Postfix logs a session's end once it has seen the QUIT; give it a moment.
    let mut sessions = mine();
    poll_until(Duration::from_secs(10), &mut || {
        sessions = mine();
        let mails: u32 = sessions
            .iter()
            .map(|s| s.commands.get("mail").copied().unwrap_or(0))
            .sum();
        mails >= 12
    });
    let count = |s: &Session, k: &str| s.commands.get(k).copied().unwrap_or(0);
    let mails: u32 = sessions.iter().map(|s| count(s, "mail")).sum();
    assert!(
        mails >= 12,
        "{mails} canaries in ended sessions: {sessions:?}"
    );
    assert!(
        sessions.len() * 2 <= mails as usize,
        "{} sessions for {mails} canaries: not reused\n{sessions:?}",
        sessions.len()
    );
    assert!(
        sessions.iter().any(|s| count(s, "mail") >= 3),
        "no session carried several canaries: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|s| count(s, "noop") == 0),
        "a kept connection was tested with NOOP first: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|s| count(s, "quit") == 1),
        "a kept session ended without QUIT: {sessions:?}"
    );
}

/// Sets one Postfix parameter of `stack` and waits until the master has taken the reload.
fn postconf(stack: &Stack, setting: &str) {
    let conf = stack.get("MAILSTACK_POSTFIX_CONF");
    let log_path = stack.get("MAILSTACK_POSTFIX_LOG");
    let reloads = || {
        std::fs::read_to_string(log_path)
            .unwrap_or_default()
            .matches("reload -- version")
            .count()
    };
    let before = reloads();
    for args in [vec!["-e", setting], vec![]] {
        let program = if args.is_empty() {
            "postfix"
        } else {
            "postconf"
        };
        let mut command = Command::new(program);
        command.args(["-c", conf]).args(&args);
        if args.is_empty() {
            command.arg("reload");
        }
        let out = command.output().expect("postconf/postfix runs");
        assert!(out.status.success(), "{program}: {}", output_text(&out));
    }
    assert!(
        poll_until(Duration::from_secs(10), &mut || reloads() > before),
        "Postfix did not log its reload"
    );
}

#[test]
fn a_kept_connection_the_server_closed_meanwhile_costs_no_canary_pipelined_or_not() {
    // Postfix ends a session that waits 1 s for the client (smtpd_timeout: 421, then it
    // closes), and the probe's rounds are 1.5 s apart: every round finds the connection it
    // kept closed, at MAIL, before anything was accepted. Its own stack: the timeout would
    // reach every other test's sessions.
    let stack = StackGuard(Stack::up(
        Path::new("/tmp/mailcanary-it-reuse"),
        Some(28000),
    ));
    let stack = &stack.0;
    postconf(stack, "smtpd_timeout=1s");
    let user = "box07@example.test";
    empty_mailbox(stack, user);
    let log_path = stack.get("MAILSTACK_POSTFIX_LOG");
    let start = std::fs::read_to_string(log_path).unwrap_or_default().len();
    let section = with_probe_keys(
        &probe_section(stack, "closed", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"interpersonal\", \"transactional\", \"bulk\"]\ninterval = \"1500ms\"",
    );
    let work = Workdir::new("it-reuse-closed", &section);
    let mut daemon = work.daemon(stack);
    let total = |name: &str| probe_total(&daemon.scrape(), name, "closed");
    let timeouts = || {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        log[start.min(log.len())..]
            .lines()
            .filter(|l| l.contains("postfix/submission/smtpd[") && l.contains("timeout after"))
            .count()
    };
    daemon.wait_for(
        "twelve canaries delivered, two kept connections closed by Postfix",
        Duration::from_secs(40),
        || total("mailcanary_delivered_total") >= 12.0 && timeouts() >= 2,
    );
    let text = daemon.scrape();
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    assert_eq!(
        probe_total(&text, "mailcanary_send_failures_total", "closed"),
        0.0,
        "a closed kept connection counted as a failed submission:\n{}",
        daemon.log_text()
    );
    assert_eq!(probe_total(&text, "mailcanary_lost_total", "closed"), 0.0);

    // The same with PIPELINING not offered: one command at a time (which the scripted servers
    // of `send::dialogue` check; Postfix takes pipelined commands without a word either way).
    postconf(stack, "smtpd_discard_ehlo_keywords=pipelining");
    let work = Workdir::new("it-reuse-unpipelined", &section);
    let mut daemon = work.daemon(stack);
    let total = |name: &str| probe_total(&daemon.scrape(), name, "closed");
    daemon.wait_for(
        "six canaries delivered without PIPELINING",
        Duration::from_secs(30),
        || total("mailcanary_delivered_total") >= 6.0,
    );
    let text = daemon.scrape();
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    assert_eq!(
        probe_total(&text, "mailcanary_send_failures_total", "closed"),
        0.0
    );
    assert_eq!(probe_total(&text, "mailcanary_lost_total", "closed"), 0.0);
}
