//! Exit codes (issue 10): each class of failure its own code, so cron and systemd can tell "the
//! config is wrong" (1) from "the Pushgateway is down" (3). And `status` for an operator who holds
//! none of the daemon's secrets.
//!
//! None of these needs the mail stack: SMTP points at a closed loopback port and the mailbox is a
//! local Maildir, so every test is about what the agent does with the failure, not the failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{free_port, output_text};

/// A working directory with a one-probe config whose SMTP port is closed.
struct Setup {
    dir: tempfile::TempDir,
    smtp_port: u16,
}

impl Setup {
    fn new() -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().expect("tempdir"),
            smtp_port: free_port(),
        };
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(setup.maildir().join(sub)).expect("maildir");
        }
        setup.write("", "", "");
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn maildir(&self) -> PathBuf {
        self.path("Maildir")
    }

    fn config(&self) -> PathBuf {
        self.path("probes.toml")
    }

    /// Writes the config with extra `[agent]`, `[probe.smtp]` and `[probe.mailbox]` lines.
    fn write(&self, agent: &str, smtp: &str, mailbox: &str) {
        let text = format!(
            r#"[agent]
id = "it-exit"
{agent}

[[probe]]
name = "p"
from = "a@example.test"
to = "b@example.test"
classes = ["interpersonal"]
  [probe.smtp]
  host = "127.0.0.1"
  port = {port}
  tls = "none"
  timeout = "5s"
{smtp}
  [probe.mailbox]
  protocol = "maildir"
  path = "{maildir}"
{mailbox}
"#,
            port = self.smtp_port,
            maildir = self.maildir().display(),
        );
        std::fs::write(self.config(), text).expect("write config");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailcanary"));
        cmd.arg("--config").arg(self.config()).args(args);
        cmd.current_dir(self.dir.path())
            .env_remove("MAILCANARY_CONFIG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mailcanary")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", output_text(out));
}

#[test]
fn config_and_usage_errors_exit_1_and_help_lists_the_codes() {
    let s = Setup::new();
    // clap's own usage code would be 2, the code of a failed probe.
    let out = s.run(&["once", "--wait", "soon"]);
    assert_code(&out, 1);
    let out = s.run(&["once", "--no-such-flag"]);
    assert_code(&out, 1);

    s.write("color = \"red\"", "", "");
    let out = s.run(&["once", "--wait", "1s"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("unknown field `color`"),
        "{}",
        stderr(&out)
    );

    let out = s.run(&["--help"]);
    assert_code(&out, 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Exit status:",
        "  1  config or usage error",
        "  2  once: a probe could not send or read at all; check: an endpoint failed",
        "  3  metrics not delivered",
        "  4  state store unusable",
        "  5  run: the web listener cannot bind",
        "  6  internal error",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

/// Pins the existing code 2 next to the new ones (this passed before issue 10 too).
#[test]
fn a_probe_that_can_neither_send_nor_read_exits_2_with_its_metrics_written() {
    let s = Setup::new();
    // The config checks the Maildir itself; a folder in it that is missing fails at run time.
    s.write("", "", "  folders = [\"INBOX\", \"Missing\"]");
    let textfile = s.path("out.prom");
    let out = s.run(&[
        "once",
        "--wait",
        "2s",
        "--textfile",
        textfile.to_str().unwrap(),
    ]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("probe could not send or read at all"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&textfile).expect("metrics written all the same");
    assert!(text.contains("mailcanary_mailbox_up"), "{text}");

    let out = s.run(&["check"]);
    assert_code(&out, 2);
}

#[test]
fn metrics_that_cannot_be_delivered_exit_3() {
    let s = Setup::new();
    let nowhere = s.path("no-such-dir/mailcanary.prom");
    let out = s.run(&[
        "once",
        "--wait",
        "1s",
        "--textfile",
        nowhere.to_str().unwrap(),
    ]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains(&format!("writing textfile {}", nowhere.display())),
        "{}",
        stderr(&out)
    );

    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = s.run(&["once", "--wait", "1s", "--push", &closed]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains(&format!("pushing to {closed}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unusable_state_store_exits_4() {
    let s = Setup::new();
    // Another agent holds the state directory.
    let state = s.path("state");
    std::fs::create_dir(&state).unwrap();
    let held = std::fs::File::create(state.join("lock")).unwrap();
    held.try_lock()
        .expect("take the lock as another agent would");
    let out = s.run(&["once", "--wait", "1s"]);
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("locked by another mailcanary process"),
        "{}",
        stderr(&out)
    );
    drop(held);

    // The state directory is a file.
    s.write("state_dir = \"not-a-dir\"", "", "");
    std::fs::write(s.path("not-a-dir"), "").unwrap();
    let out = s.run(&["once", "--wait", "1s"]);
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("cannot use state directory"),
        "{}",
        stderr(&out)
    );

    // The store is damaged.
    s.write("state_dir = \"damaged\"", "", "");
    std::fs::create_dir(s.path("damaged")).unwrap();
    std::fs::write(
        s.path("damaged/mailcanary.redb"),
        b"\x00garbage\n".repeat(500),
    )
    .unwrap();
    for args in [&["once", "--wait", "1s"][..], &["status"]] {
        let out = s.run(args);
        assert_code(&out, 4);
        assert!(
            stderr(&out).contains("cannot open the state store"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_listen_address_in_use_exits_5() {
    let s = Setup::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = s.run(&["run", "--web.listen-address", &addr]);
    assert_code(&out, 5);
    assert!(
        stderr(&out).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_needs_none_of_the_secrets() {
    let s = Setup::new();
    let login = "  username = \"a@example.test\"\n  password_env = \"MC_EXIT_TEST_PASSWORD\"";
    s.write("", login, "");
    // The daemon's side: it has the password and makes a key; the send fails (closed port),
    // which puts the class on the books.
    let out = s
        .command(&["once", "--wait", "1s"])
        .env("MC_EXIT_TEST_PASSWORD", "hunter2")
        .output()
        .unwrap();
    assert_code(&out, 2);

    // The operator's side: no password variable, and a signing key that is nowhere.
    s.write(
        "secret_file = \"/nonexistent/mailcanary/canary.key\"",
        login,
        "",
    );
    let out = s
        .command(&["status"])
        .env_remove("MC_EXIT_TEST_PASSWORD")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout
        .lines()
        .skip_while(|l| *l != "Last results:")
        .find(|l| l.starts_with("p "));
    assert!(
        row.is_some_and(|r| r.split_whitespace().take(3).eq(["p", "interpersonal", "0"])),
        "{stdout}"
    );
    assert!(!Path::new("/nonexistent/mailcanary").exists());

    // A syntax error is still a config error with its place.
    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(s.config(), text.replace("id = \"it-exit\"", "id = it-exit")).unwrap();
    let out = s.run(&["status"]);
    assert_code(&out, 1);
    let want = format!("{}:2:6", s.config().display());
    assert!(
        stderr(&out).contains(&want),
        "want {want} in {}",
        stderr(&out)
    );
}

/// The textfile's own mode, not the umask's: node_exporter, another user, must read it.
#[test]
fn the_textfile_is_readable_by_others_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let s = Setup::new();
    let textfile = s.path("out.prom");
    let mut cmd = s.command(&[
        "once",
        "--wait",
        "1s",
        "--textfile",
        textfile.to_str().unwrap(),
    ]);
    // SAFETY: umask is async-signal-safe and changes only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        })
    };
    let out = cmd.output().unwrap();
    assert_code(&out, 2);
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "{}", output_text(&out));
}

#[test]
fn a_weak_signing_key_file_is_warned_about_never_shown() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = Setup::new();
    let key = s.path("canary.key");
    std::fs::write(&key, "short-secret\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.run(&["once", "--wait", "1s"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{} has mode 0644", key.display())),
        "{err}"
    );
    assert!(err.contains("only 12 bytes long"), "{err}");
    assert!(
        !err.contains("short-secret"),
        "the key is in the log: {err}"
    );
}
