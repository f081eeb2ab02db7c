//! `mailcanary check`: config validation and a login to every endpoint.

use std::path::Path;
use std::process::Command;

use crate::support::*;

#[test]
fn shipped_config_checks_out_against_the_stack() {
    let stack = Stack::shared();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_mailcanary"))
        .arg("check")
        .arg("--config")
        .arg(&shipped)
        .envs(&stack.env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("probe example-local smtp 127.0.0.1:10587: ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("probe example-local imap 127.0.0.1:10993: ok"),
        "{stdout}"
    );
}

#[test]
fn wrong_password_fails_the_check_and_names_the_endpoint() {
    let stack = Stack::shared();
    let probes = probe_section(stack, "wrongpw", "box06@example.test", "MC_WRONG_PASSWORD");
    let work = Workdir::new("it-check", &probes);
    let out = work.run(stack, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let port = stack.port("MAILSTACK_SUBMISSION_PORT");
    assert!(
        stdout.contains(&format!("probe wrongpw smtp 127.0.0.1:{port}: FAILED auth")),
        "{stdout}"
    );
    assert!(
        stdout.contains("probe wrongpw imap") && stdout.contains(": ok"),
        "{stdout}"
    );
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
