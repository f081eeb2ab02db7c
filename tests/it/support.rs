//! Shared test plumbing: the real mail stack, configs, the agent binary, metrics, Maildirs.
//!
//! Every test gets its own mailbox user (`box01`…`box40`), its own agent id and signing key,
//! and its own state directory, so tests run in parallel on one stack without seeing each
//! other's canaries.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Directory of the stack shared by most tests: the default one, so the shipped `probes.toml`
/// (which names its ports and CA) works against it.
pub const SHARED_STACK: &str = "/tmp/mailcanary-stack";

/// Arguments that log every canary sent and delivered (debug level since they became too many
/// for info), for tests that read those lines, and every folder scan of the mailbox adapters,
/// so that a failing test's log says what each look saw.
pub const CANARY_LINES: &[&str] = &[
    "--log-level",
    "info,mailcanary::probe=debug,mailcanary::mailbox=debug",
];

/// `MAILCANARY_IT_PORT_OFFSET=N` moves every stack the tests start by N ports and into
/// directories of their own (`…-N`), so two checkouts can run the suite side by side on one
/// machine. Unset (CI, README), the tests use the default stack and ports.
fn port_offset() -> Option<u16> {
    std::env::var("MAILCANARY_IT_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &u16| n > 0)
}

/// A running mail stack, as described by its `stack.env`.
#[derive(Debug, Clone)]
pub struct Stack {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

impl Stack {
    /// The shared stack, started once per test binary (idempotent if already running).
    pub fn shared() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| Stack::up(Path::new(SHARED_STACK), None))
    }

    /// Starts (or reuses) the stack in `dir`, with `port_base` on its first start (both moved
    /// by `MAILCANARY_IT_PORT_OFFSET` when it is set).
    pub fn up(dir: &Path, port_base: Option<u16>) -> Stack {
        let (dir, port_base) = match port_offset() {
            Some(n) => (
                PathBuf::from(format!("{}-{n}", dir.display())),
                Some(port_base.unwrap_or(10000) + n),
            ),
            None => (dir.to_path_buf(), port_base),
        };
        let dir = dir.as_path();
        let mut cmd = Command::new(script("mailstack"));
        cmd.arg("up").arg(dir);
        if let Some(base) = port_base {
            cmd.env("MAILSTACK_PORT_BASE", base.to_string());
        }
        let out = cmd.output().expect("run scripts/mailstack");
        assert!(
            out.status.success(),
            "mailstack up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.join("stack.env")).expect("stack.env");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Stack {
            dir: dir.to_path_buf(),
            env,
        }
    }

    /// Runs a `scripts/mailstack` subcommand on this stack.
    pub fn ctl(&self, action: &str, extra: &[&str]) {
        let out = Command::new(script("mailstack"))
            .arg(action)
            .arg(&self.dir)
            .args(extra)
            .output()
            .expect("run scripts/mailstack");
        assert!(
            out.status.success(),
            "mailstack {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A value from `stack.env`.
    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from stack.env"))
    }

    /// A port from `stack.env`.
    pub fn port(&self, key: &str) -> u16 {
        self.get(key).parse().expect("port number")
    }

    /// The Maildir of a user.
    pub fn maildir(&self, user: &str) -> PathBuf {
        PathBuf::from(self.get("MAILSTACK_MAILDIR_TEMPLATE").replace("%u", user))
    }
}

/// A test's private stack, stopped when the test ends, pass or fail. For tests that disturb
/// the stack (stop Dovecot, load Postfix rules) and would upset the others on the shared one.
pub struct StackGuard(pub Stack);

impl Drop for StackGuard {
    fn drop(&mut self) {
        let _ = Command::new(script("mailstack"))
            .arg("down")
            .arg(&self.0.dir)
            .output();
    }
}

/// A path under the repository's `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// A `[[probe]]` section: submission (STARTTLS + AUTH as probe1) to `user`, watched over IMAPS.
pub fn probe_section(stack: &Stack, name: &str, user: &str, smtp_password_env: &str) -> String {
    format!(
        r#"
[[probe]]
name = "{name}"
from = "probe1@example.test"
to = "{user}"
jitter = "100ms"
  [probe.smtp]
  host = "127.0.0.1"
  port = {submission}
  tls = "starttls"
  username = "probe1@example.test"
  password_env = "{smtp_password_env}"
  ca_file = "{ca}"
  timeout = "10s"
  [probe.mailbox]
  protocol = "imap"
  host = "127.0.0.1"
  port = {imaps}
  tls = "tls"
  username = "{user}"
  password_env = "MAILSTACK_TEST_PASSWORD"
  ca_file = "{ca}"
  folders = ["INBOX", "Junk"]
  poll_interval = "250ms"
  timeout = "5s"
"#,
        submission = stack.port("MAILSTACK_SUBMISSION_PORT"),
        imaps = stack.port("MAILSTACK_IMAPS_PORT"),
        ca = stack.get("MAILSTACK_CA_FILE"),
    )
}

/// A test's working directory with a config file in it.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    /// Writes `probes.toml` with an `[agent]` section named after the test, then `probes`.
    pub fn new(agent: &str, probes: &str) -> Workdir {
        let work = Workdir {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        work.rewrite(agent, probes);
        work
    }

    /// Replaces the probes of the config (same agent, same state directory).
    pub fn rewrite(&self, agent: &str, probes: &str) {
        let text = format!("[agent]\nid = \"{agent}\"\n\n[defaults]\ninterval = \"1h\"\n{probes}");
        std::fs::write(self.config(), text).expect("write config");
    }

    /// Path of the config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("probes.toml")
    }

    /// A `mailcanary` command with this config and the stack's environment.
    pub fn command(&self, stack: &Stack, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailcanary"));
        cmd.arg("--config").arg(self.config()).args(args);
        cmd.envs(&stack.env)
            .env("MC_WRONG_PASSWORD", "not-the-password");
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Runs `once --wait WAIT --textfile …`, requires success, and returns the metrics written.
    pub fn once(&self, stack: &Stack, wait: &str) -> String {
        self.once_with_log(stack, wait).0
    }

    /// [`Workdir::once`] with per-canary log lines on, returning the metrics written and the
    /// run's log, for tests whose failure message should say what `once` saw.
    pub fn once_with_log(&self, stack: &Stack, wait: &str) -> (String, String) {
        let textfile = self.dir.path().join("out.prom");
        let mut args = CANARY_LINES.to_vec();
        args.extend([
            "once",
            "--wait",
            wait,
            "--textfile",
            textfile.to_str().unwrap(),
        ]);
        let out = self.run(stack, &args);
        assert!(out.status.success(), "{}", output_text(&out));
        let text = std::fs::read_to_string(&textfile).expect("textfile written");
        (text, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Runs a command to completion.
    pub fn run(&self, stack: &Stack, args: &[&str]) -> Output {
        self.command(stack, args).output().expect("run mailcanary")
    }

    /// Starts `mailcanary run` on a free port; it is killed when the handle drops.
    pub fn daemon(&self, stack: &Stack) -> Daemon {
        self.daemon_on(stack, free_port())
    }

    /// Starts `mailcanary run` on a free port with extra arguments (e.g. `--log-level`) and
    /// waits until it is ready; it is killed when the handle drops.
    pub fn daemon_with(&self, stack: &Stack, extra: &[&str]) -> Daemon {
        let port = free_port();
        let daemon = self.spawn_daemon(stack, port, extra);
        daemon.wait_for("ready", Duration::from_secs(10), || {
            http_get(port, "/-/ready").is_some_and(|(status, _)| status == 200)
        });
        daemon
    }

    /// Starts `mailcanary run` on `port` (for a Prometheus configured before the agent starts).
    pub fn daemon_on(&self, stack: &Stack, port: u16) -> Daemon {
        let daemon = self.spawn_daemon(stack, port, &[]);
        daemon.wait_for("ready", Duration::from_secs(10), || {
            http_get(port, "/-/ready").is_some_and(|(status, _)| status == 200)
        });
        daemon
    }

    /// Starts `mailcanary run` on `port` with extra arguments, without waiting for it.
    pub fn spawn_daemon(&self, stack: &Stack, port: u16, extra: &[&str]) -> Daemon {
        let listen = format!("127.0.0.1:{port}");
        let log = self.dir.path().join("daemon.log");
        let mut args = vec!["run", "--web.listen-address", &listen];
        args.extend_from_slice(extra);
        let child = self
            .command(stack, &args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn mailcanary run");
        Daemon { child, port, log }
    }
}

/// A running `mailcanary run`.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Daemon {
    /// The body of `/metrics`.
    pub fn scrape(&self) -> String {
        match http_get(self.port, "/metrics") {
            Some((200, body)) => body,
            other => panic!("scrape failed: {other:?}\nlog:\n{}", self.log_text()),
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `cond` every 50 ms until it holds; fails the test after `limit`, with the log.
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        if !poll_until(limit, &mut cond) {
            panic!(
                "timed out after {limit:?} waiting for {what}\nlog:\n{}",
                self.log_text()
            );
        }
    }

    /// Polls `/metrics` until `series` has `value`.
    pub fn wait_metric(&self, series: &str, value: f64, limit: Duration) {
        self.wait_for(&format!("{series} == {value}"), limit, || {
            metric(&self.scrape(), series) == Some(value)
        });
    }
}

impl Daemon {
    /// Sends SIGTERM, as an init system stopping the service would, and waits for the exit
    /// (at most 60 s, then SIGKILL and a failed test).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for mailcanary") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "mailcanary did not exit within 60 s of SIGTERM\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    /// SIGKILL, like a crash: tests that restart a daemon rely on nothing being flushed here.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A helper server (node_exporter, Pushgateway) on a free loopback port, killed on drop.
pub struct Service {
    child: Child,
    pub port: u16,
}

impl Service {
    /// Starts `program` with `--web.listen-address=127.0.0.1:<free port>` plus `args`, and
    /// waits until it answers on `/metrics`.
    pub fn start(program: &str, args: &[&str]) -> Service {
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} (scripts/mailstack install --all): {e}"));
        let service = Service { child, port };
        let ok = poll_until(Duration::from_secs(15), &mut || {
            http_get(port, "/metrics").is_some_and(|(s, _)| s == 200)
        });
        assert!(ok, "{program} did not come up on port {port}");
        service
    }

    /// The body of `/metrics`.
    pub fn scrape(&self) -> String {
        http_get(self.port, "/metrics").expect("scrape").1
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `cond` every 50 ms until it returns true or `limit` passes; bounded in time.
pub fn poll_until(limit: Duration, cond: &mut impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A minimal HTTP/1.0 GET; returns status and body, or `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of one series in a text exposition, e.g.
/// `mailcanary_sent_total{class="bulk",probe="p"}` (labels in any order).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let (name, labels) = match series.split_once('{') {
        Some((n, l)) => (n, l.trim_end_matches('}')),
        None => (series, ""),
    };
    let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let (line_name, line_labels) = match head.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (head, ""),
            };
            let have: Vec<&str> = line_labels.split(',').filter(|l| !l.is_empty()).collect();
            let same = line_name == name
                && have.len() == wanted.len()
                && wanted.iter().all(|w| have.contains(w));
            same.then(|| value.parse().ok()).flatten()
        })
}

/// Submits a raw message over the stack's plain SMTP port (no auth), as an outside sender would.
pub fn inject(stack: &Stack, from: &str, to: &str, message: &str) {
    use lettre::AsyncTransport as _;
    let port = stack.port("MAILSTACK_SMTP_PORT");
    let envelope = lettre::address::Envelope::new(
        Some(from.parse().expect("from")),
        vec![to.parse().expect("to")],
    )
    .expect("envelope");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(port)
                .build();
        transport
            .send_raw(&envelope, message.replace('\n', "\r\n").as_bytes())
            .await
            .expect("inject a mail over plain SMTP");
    });
}

/// Every mail file in a Maildir (INBOX and Junk), with its content.
pub fn mail_files(maildir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for sub in ["new", "cur", ".Junk/new", ".Junk/cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                out.push((entry.path(), text));
            }
        }
    }
    out
}

/// Waits until a mail containing `needle` is in the Maildir (delivery is asynchronous).
pub fn wait_for_mail(maildir: &Path, needle: &str) -> (PathBuf, String) {
    let mut found = None;
    let ok = poll_until(Duration::from_secs(10), &mut || {
        found = mail_files(maildir)
            .into_iter()
            .find(|(_, t)| t.contains(needle));
        found.is_some()
    });
    assert!(
        ok,
        "no mail containing {needle:?} arrived in {}",
        maildir.display()
    );
    found.expect("found")
}

/// Delivers an ordinary (non-canary) mail with Message-ID `<ordinary-TAG@example.test>` to
/// `user` and returns its file and content once it is in the Maildir.
pub fn place_ordinary_mail(stack: &Stack, user: &str, tag: &str) -> (PathBuf, String) {
    let message_id = format!("ordinary-{tag}@example.test");
    inject(
        stack,
        "friend@example.test",
        user,
        &format!(
            "From: friend@example.test\nTo: {user}\nSubject: lunch\n\
             Message-ID: <{message_id}>\n\nSee you at noon.\n"
        ),
    );
    wait_for_mail(&stack.maildir(user), &message_id)
}

/// Checks that the ordinary mail `tag` is still in `maildir` with the same content, not flagged
/// seen or deleted, and that no canary is left.
pub fn assert_untouched(maildir: &Path, tag: &str, before: &str) {
    let files = mail_files(maildir);
    let left: Vec<_> = files
        .iter()
        .filter(|(_, t)| t.contains("X-Mailcanary"))
        .map(|(p, _)| p)
        .collect();
    assert!(left.is_empty(), "canaries left in the mailbox: {left:?}");
    let (path, after) = files
        .iter()
        .find(|(_, t)| t.contains(&format!("ordinary-{tag}@example.test")))
        .expect("the ordinary mail is still there");
    assert_eq!(after, before, "the ordinary mail's content changed");
    let name = path.to_string_lossy();
    let flags = name.rsplit_once(":2,").map_or("", |(_, f)| f);
    assert!(
        !flags.contains('S') && !flags.contains('T'),
        "ordinary mail got flags {flags:?}"
    );
}

/// Removes every mail of a user, so a test starts from an empty mailbox.
pub fn empty_mailbox(stack: &Stack, user: &str) {
    for (path, _) in mail_files(&stack.maildir(user)) {
        let _ = std::fs::remove_file(path);
    }
}

/// Every counter-like sample (`_total`, `_bucket`, `_count`, `_sum`) of an exposition.
pub fn cumulative_samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or_default();
            ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|s| name.ends_with(s))
        })
        .filter_map(|(series, v)| Some((series.to_string(), v.parse().ok()?)))
        .collect()
}

/// The sum of every sample of `name` for `probe` (over classes, folders, stages).
pub fn probe_total(text: &str, name: &str, probe: &str) -> f64 {
    let (start, label) = (format!("{name}{{"), format!("probe=\"{probe}\""));
    text.lines()
        .filter(|l| l.starts_with(&start) && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `section` (from [`probe_section`]) reading its mailbox over plain IMAP through `port` (a
/// proxy in front of the stack's IMAP port, which sees the commands) instead of IMAPS.
pub fn via_plain_imap(stack: &Stack, section: &str, port: u16) -> String {
    section
        .replace(
            &format!("port = {}", stack.port("MAILSTACK_IMAPS_PORT")),
            &format!("port = {port}"),
        )
        .replace("tls = \"tls\"", "tls = \"none\"")
}

/// A probe section limited to some classes, with extra probe keys (e.g. `lost_after`).
pub fn with_probe_keys(section: &str, keys: &str) -> String {
    section.replacen("  [probe.smtp]", &format!("{keys}\n  [probe.smtp]"), 1)
}

/// Standard output and error of a finished command, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The DOM of `url` as headless Chromium (Debian's `chromium`) renders it, after keeping a
/// screenshot of it as a test artefact, `target/it-pages/NAME.png`. Bounded: each Chromium run
/// is killed after 60 s.
pub fn in_chromium(url: &str, name: &str) -> String {
    let pages = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/it-pages");
    std::fs::create_dir_all(&pages).expect("target/it-pages");
    let profile = tempfile::tempdir().expect("a Chromium profile directory");
    let run = |extra: &[String]| {
        let out = Command::new("timeout")
            .args([
                "60",
                "chromium",
                "--headless",
                "--disable-gpu",
                "--window-size=1400,900",
            ])
            // Tests run as root, where Chromium's sandbox refuses to start.
            .arg("--no-sandbox")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("run chromium (installed by scripts/mailstack install --all)");
        assert!(out.status.success(), "chromium: {}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shot = pages.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    run(&[format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    run(&["--dump-dom".to_string()])
}

/// `/api/status` of `daemon`, parsed (it must answer 200).
pub fn api_status(daemon: &Daemon) -> serde_json::Value {
    let (code, body) = http_get(daemon.port, "/api/status").expect("/api/status answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// The object of probe `name` in an `/api/status` answer.
pub fn status_of<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no probe {name} in {status}"))
}

/// The table of `page` with `id="ID"`, up to its end (panics naming it when it is missing).
pub fn table<'a>(page: &'a str, id: &str) -> &'a str {
    page.split(&format!("id=\"{id}\""))
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no table {id:?} in:\n{page}"))
}

/// The rows (`<tr>…</tr>`) of an HTML document that contain `needle`.
pub fn rows_with<'a>(html: &'a str, needle: &str) -> Vec<&'a str> {
    html.split("<tr>")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap_or(r))
        .filter(|r| r.contains(needle))
        .collect()
}
