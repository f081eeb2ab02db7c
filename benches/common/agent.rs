//! Running one agent under a benchmark and reading it from outside, as an operator would:
//! its `/metrics`, its `/proc` figures, and the probe sections of its config.

use std::io::{Read as _, Write as _};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Env;

/// A parameter from `NAME=value` on the command line, else the environment, else `default`.
pub fn param(name: &str, default: u64) -> u64 {
    let prefix = format!("{name}=");
    std::env::args()
        .skip(1)
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
        .or_else(|| std::env::var(name).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One `[[probe]]` sending through the stack's submission port (probe1's account, STARTTLS)
/// to `user`, watched over IMAPS with IDLE, the 3 default classes (the fields of
/// tests/it/support.rs `probe_section`, with the run's interval).
pub fn probe_section(env: &Env, name: &str, user: &str, interval_s: u64) -> String {
    format!(
        r#"
[[probe]]
name = "{name}"
from = "probe1@example.test"
to = "{user}"
interval = "{interval_s}s"
classes = ["interpersonal", "transactional", "bulk"]
  [probe.smtp]
  host = "127.0.0.1"
  port = {submission}
  tls = "starttls"
  username = "probe1@example.test"
  password_env = "MC_PROBE1_PASSWORD"
  ca_file = "{ca}"
  timeout = "30s"
  [probe.mailbox]
  protocol = "imap"
  host = "127.0.0.1"
  port = {imaps}
  tls = "tls"
  username = "{user}"
  password_env = "MAILSTACK_TEST_PASSWORD"
  ca_file = "{ca}"
  watch = "idle"
"#,
        submission = env["MAILSTACK_SUBMISSION_PORT"],
        imaps = env["MAILSTACK_IMAPS_PORT"],
        ca = env["MAILSTACK_CA_FILE"],
    )
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Size of the last response, so the next one is read into a buffer that need not grow.
static LAST_RESPONSE: AtomicUsize = AtomicUsize::new(64 * 1024);

/// The body of `/metrics` and how long it took to get all of it (connect to last byte, as a
/// scraper sees it: the buffer is sized from the previous answer and the text is checked only
/// after the clock stops, so a 20 MiB body's reallocations are not counted); `None` unless 200.
pub fn scrape(port: u16) -> Option<(String, Duration)> {
    fetch(port, "/metrics")
}

/// `GET path`: the body of a 200 answer and how long it took, from connect to the last byte.
pub fn fetch(port: u16, path: &str) -> Option<(String, Duration)> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut raw = Vec::with_capacity(LAST_RESPONSE.load(Ordering::Relaxed) + 64 * 1024);
    s.read_to_end(&mut raw).ok()?;
    let took = start.elapsed();
    LAST_RESPONSE.store(raw.len(), Ordering::Relaxed);
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.lines()
        .next()
        .is_some_and(|l| l.contains(" 200 "))
        .then(|| (body.to_string(), took))
}

/// Sum of every sample of a metric family (`mailcanary_sent_total{…} 3` …).
pub fn total(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A `/proc/<pid>/status` line in kB (`VmHWM`, `VmRSS`).
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The agent, stopped with SIGTERM (SIGKILL after 30 s) when dropped.
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Agent {
    /// Starts `mailcanary run` on `dir/probes.toml` (log level warn, into `dir/agent.log`, the
    /// state in `dir`) listening on `port`, and waits until it serves `/metrics`; panics with the
    /// log's tail if it exits or is not up within 2 minutes.
    pub fn start(env: &Env, dir: &std::path::Path, port: u16) -> Agent {
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let mut agent = Agent(
            Command::new(env!("CARGO_BIN_EXE_mailcanary"))
                .arg("--config")
                .arg(dir.join("probes.toml"))
                .args(["--log-level", "warn", "run"])
                .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
                .current_dir(dir)
                .envs(env)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start the agent"),
        );
        let up = Instant::now();
        while scrape(port).is_none() {
            let exited = agent.0.try_wait().ok().flatten();
            if exited.is_some() || up.elapsed() > Duration::from_secs(120) {
                let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "the agent did not serve /metrics (exit {exited:?}); log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        agent
    }
}
