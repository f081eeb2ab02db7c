//! `mailcanary check`: config validation and a login to every endpoint.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// What `check` printed for one endpoint (after `probe NAME KIND HOST:PORT: `): there must be
/// exactly one such line.
fn endpoint_result<'a>(stdout: &'a str, probe: &str, kind: &str, port: u16) -> &'a str {
    let prefix = format!("probe {probe} {kind} 127.0.0.1:{port}: ");
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect();
    assert_eq!(lines.len(), 1, "one line for {prefix:?} in:\n{stdout}");
    lines[0]
}

/// Every endpoint line (`probe …`) of `check`'s output.
fn endpoint_lines(stdout: &str) -> usize {
    stdout.lines().filter(|l| l.starts_with("probe ")).count()
}

/// `check` reports success on an endpoint as `ok (N ms)`.
fn assert_ok(result: &str, stdout: &str) {
    let (mechanism, ms) = result
        .strip_prefix("ok (")
        .and_then(|r| r.strip_suffix(" ms)"))
        .and_then(|r| r.split_once(", "))
        .unwrap_or_else(|| panic!("{result:?} is not `ok (MECHANISM, N ms)` in:\n{stdout}"));
    assert!(
        ["password", "no auth", "XOAUTH2", "OAUTHBEARER"].contains(&mechanism),
        "{result:?}"
    );
    assert!(ms.parse::<u64>().is_ok(), "{result:?}");
}

#[test]
fn shipped_config_checks_out_against_the_stack() {
    let stack = Stack::shared();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes.toml");
    let (smtp, imap) = (
        stack.port("MAILSTACK_SUBMISSION_PORT"),
        stack.port("MAILSTACK_IMAPS_PORT"),
    );
    // The shipped file names the default stack; a moved stack (MAILCANARY_IT_PORT_OFFSET) gets
    // a copy with its own ports and CA, and nothing else changed.
    let moved = tempfile::tempdir().unwrap();
    let config = if (smtp, imap) == (10587, 10993) {
        shipped
    } else {
        let text = std::fs::read_to_string(&shipped)
            .unwrap()
            .replace("port = 10587 ", &format!("port = {smtp} "))
            .replace("port = 10993 ", &format!("port = {imap} "))
            .replace(
                "\"/tmp/mailcanary-stack/tls/ca.pem\"",
                &format!("\"{}\"", stack.get("MAILSTACK_CA_FILE")),
            );
        let path = moved.path().join("probes.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let out = Command::new(env!("CARGO_BIN_EXE_mailcanary"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .envs(&stack.env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(endpoint_lines(&stdout), 2, "{stdout}");
    assert_ok(
        endpoint_result(&stdout, "example-local", "smtp", smtp),
        &stdout,
    );
    assert_ok(
        endpoint_result(&stdout, "example-local", "imap", imap),
        &stdout,
    );
}

#[test]
fn wrong_password_fails_the_check_and_names_the_endpoint() {
    let stack = Stack::shared();
    // Two probes: one with a wrong SMTP password, one with a wrong mailbox password.
    let probes = probe_section(stack, "wrongpw", "box06@example.test", "MC_WRONG_PASSWORD")
        + &probe_section(
            stack,
            "wrongimap",
            "box06@example.test",
            "MC_PROBE1_PASSWORD",
        )
        .replace(
            "password_env = \"MAILSTACK_TEST_PASSWORD\"",
            "password_env = \"MC_WRONG_PASSWORD\"",
        );
    let work = Workdir::new("it-check", &probes);
    let out = work.run(stack, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(endpoint_lines(&stdout), 4, "{stdout}");
    // The SMTP login fails (wrong password), and is reported as failing at auth...
    let smtp = endpoint_result(
        &stdout,
        "wrongpw",
        "smtp",
        stack.port("MAILSTACK_SUBMISSION_PORT"),
    );
    assert!(smtp.starts_with("FAILED auth"), "{stdout}");
    // ... while the IMAP login (its own, right password) has its own line, and that says ok.
    let imap = endpoint_result(
        &stdout,
        "wrongpw",
        "imap",
        stack.port("MAILSTACK_IMAPS_PORT"),
    );
    assert_ok(imap, &stdout);
    // The other way round: SMTP ok, the mailbox login reported as failing at its endpoint.
    let smtp = endpoint_result(
        &stdout,
        "wrongimap",
        "smtp",
        stack.port("MAILSTACK_SUBMISSION_PORT"),
    );
    assert_ok(smtp, &stdout);
    let imap = endpoint_result(
        &stdout,
        "wrongimap",
        "imap",
        stack.port("MAILSTACK_IMAPS_PORT"),
    );
    assert!(imap.starts_with("FAILED auth"), "{stdout}");
    assert!(
        !stdout.contains("not-the-password") && !stdout.contains(stack.get("MC_PROBE1_PASSWORD"))
    );
}

#[test]
fn misspelled_key_names_file_and_line() {
    let stack = Stack::shared();
    let probes = probe_section(stack, "typo", "box06@example.test", "MC_PROBE1_PASSWORD")
        .replace("poll_interval", "poll_intervall");
    let work = Workdir::new("it-typo", &probes);
    let out = work.run(stack, &["check", "--no-login"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let config = work.config();
    let line = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .position(|l| l.contains("poll_intervall"))
        .unwrap()
        + 1;
    let want = format!(
        "{}:{line}:3: poll_intervall: unknown field `poll_intervall`",
        config.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in {stderr}");
}
