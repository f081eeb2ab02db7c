//! Precision benchmark on the local stack: how long after Dovecot delivered a canary does
//! mailcanary record it, per receiver and mode; and how far `server_delay_seconds` is from the
//! truth when a 20 s delay is injected and the mailbox is polled only every 60 s.
//!
//! Ground truth is Dovecot's Maildir file name, which starts with the delivery time
//! (`<secs>.M<usecs>P<pid>…`). Canaries are kept (`cleanup = "keep"`) so their files remain.
//!
//! `cargo bench --bench precision [-- MODE…]` (prints figures; asserts nothing about speed).
//! Needs root and the stack (`scripts/mailstack up`, started here if not running).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Env, stack_up};

const STACK: &str = "/tmp/mailcanary-stack";
const CANARIES: usize = 50;

struct Mode {
    name: &'static str,
    user: &'static str,
    mailbox: fn(&Env, &str) -> String,
}

fn imap(env: &Env, user: &str, extra: &str) -> String {
    format!(
        "  protocol = \"imap\"\n  host = \"127.0.0.1\"\n  port = {}\n  tls = \"tls\"\n  username = \"{user}\"\n  \
         password_env = \"MAILSTACK_TEST_PASSWORD\"\n  ca_file = \"{}\"\n  cleanup = \"keep\"\n{extra}",
        env["MAILSTACK_IMAPS_PORT"], env["MAILSTACK_CA_FILE"]
    )
}

const MODES: [Mode; 4] = [
    Mode {
        name: "imap-idle",
        user: "box24@example.test",
        mailbox: |env, user| {
            imap(
                env,
                user,
                "  watch = \"idle\"\n  poll_interval = \"10min\"\n",
            )
        },
    },
    Mode {
        name: "imap-poll-50ms",
        user: "box25@example.test",
        mailbox: |env, user| {
            imap(
                env,
                user,
                "  watch = \"poll\"\n  poll_interval = \"50ms\"\n",
            )
        },
    },
    Mode {
        name: "pop3-poll-50ms",
        user: "box26@example.test",
        mailbox: |env, user| {
            format!(
                "  protocol = \"pop3\"\n  host = \"127.0.0.1\"\n  port = {}\n  tls = \"tls\"\n  username = \"{user}\"\n  \
                 password_env = \"MAILSTACK_TEST_PASSWORD\"\n  ca_file = \"{}\"\n  cleanup = \"keep\"\n  poll_interval = \"50ms\"\n",
                env["MAILSTACK_POP3S_PORT"], env["MAILSTACK_CA_FILE"]
            )
        },
    },
    Mode {
        name: "maildir-inotify",
        user: "box27@example.test",
        mailbox: |env, user| {
            let path = env["MAILSTACK_MAILDIR_TEMPLATE"].replace("%u", user);
            format!(
                "  protocol = \"maildir\"\n  path = \"{path}\"\n  cleanup = \"keep\"\n  poll_interval = \"10min\"\n"
            )
        },
    },
];

fn main() {
    let env = stack_up(STACK, None);
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!(
        "detection overhead = time mailcanary recorded the canary - delivery time in Dovecot's file name"
    );
    for mode in MODES
        .iter()
        .filter(|m| wanted.is_empty() || wanted.iter().any(|w| w == m.name))
    {
        let probe = format!("  [probe.mailbox]\n{}", (mode.mailbox)(&env, mode.user));
        match run_mode(
            &env,
            mode.name,
            mode.user,
            &probe,
            "",
            CANARIES,
            Duration::from_secs(60),
        ) {
            Ok(samples) => {
                let overhead: Vec<f64> = samples
                    .iter()
                    .map(|s| s.seen_ms as f64 - s.delivered_ms)
                    .collect();
                report(mode.name, &overhead);
            }
            Err(e) => println!("{:<18} failed: {e}", mode.name),
        }
    }
    if wanted.is_empty() || wanted.iter().any(|w| w == "server-delay") {
        server_delay(&env);
    }
}

/// A canary as the agent recorded it, with the truth from the Maildir.
struct Sample {
    sent_ms: u64,
    seen_ms: u64,
    server_ms: Option<u64>,
    delivered_ms: f64,
}

/// 10 canaries delayed 20 s by the stack, found by a 60 s poll: server delay vs truth.
fn server_delay(env: &Env) {
    let user = "box28@example.test";
    let probe = format!(
        "  [probe.mailbox]\n{}",
        imap(env, user, "  watch = \"poll\"\n  poll_interval = \"60s\"\n")
    );
    let class =
        "[class.delayed]\ntemplate = \"interpersonal\"\nheaders = { \"X-Test-Delay\" = \"20\" }\n";
    match run_mode(
        env,
        "server-delay",
        user,
        &probe,
        class,
        10,
        Duration::from_secs(150),
    ) {
        Ok(samples) => {
            let error: Vec<f64> = samples
                .iter()
                .filter_map(|s| Some(s.server_ms? as f64 + 500.0 - s.delivered_ms))
                .collect();
            let true_delay: Vec<f64> = samples
                .iter()
                .map(|s| s.delivered_ms - s.sent_ms as f64)
                .collect();
            let polled: Vec<f64> = samples
                .iter()
                .map(|s| s.seen_ms as f64 - s.delivered_ms)
                .collect();
            println!(
                "server-delay: {} canaries, true delay {:.1}..{:.1} s, poll_interval 60 s",
                samples.len(),
                min(&true_delay) / 1000.0,
                max(&true_delay) / 1000.0
            );
            report("  server delay err", &error);
            report("  delivery lag", &polled);
        }
        Err(e) => println!("server-delay failed: {e}"),
    }
}

fn run_mode(
    env: &Env,
    name: &str,
    user: &str,
    mailbox: &str,
    classes: &str,
    want: usize,
    limit: Duration,
) -> Result<Vec<Sample>, String> {
    let maildir = PathBuf::from(env["MAILSTACK_MAILDIR_TEMPLATE"].replace("%u", user));
    clear(&maildir);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let class_list = if classes.is_empty() {
        "[\"interpersonal\"]"
    } else {
        "[\"delayed\"]"
    };
    let config = format!(
        "[agent]\nid = \"bench-{name}\"\n\n[[probe]]\nname = \"bench\"\nfrom = \"probe1@example.test\"\nto = \"{user}\"\n\
         interval = \"{}\"\njitter = \"0s\"\nclasses = {class_list}\n  [probe.smtp]\n  host = \"127.0.0.1\"\n  port = {}\n  \
         tls = \"starttls\"\n  username = \"probe1@example.test\"\n  password_env = \"MC_PROBE1_PASSWORD\"\n  ca_file = \"{}\"\n\
         {mailbox}\n{classes}",
        if classes.is_empty() { "300ms" } else { "1s" },
        env["MAILSTACK_SUBMISSION_PORT"],
        env["MAILSTACK_CA_FILE"],
    );
    std::fs::write(dir.path().join("probes.toml"), config).map_err(|e| e.to_string())?;
    let port = free_port();
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mailcanary"))
            .arg("--config")
            .arg(dir.path().join("probes.toml"))
            .args([
                "--log-level",
                "warn",
                "run",
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
            ])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let start = Instant::now();
    let series = "mailcanary_delivered_total{";
    let sent_enough = |text: &str, name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    loop {
        let text = scrape(port).unwrap_or_default();
        if sent_enough(&text, "mailcanary_sent_total{") as usize >= want {
            break;
        }
        if start.elapsed() > limit {
            return Err(format!(
                "only {} sent in {limit:?}",
                sent_enough(&text, "mailcanary_sent_total{")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stop sending by stopping the agent only once everything sent is recorded.
    let target = sent_enough(&scrape(port).unwrap_or_default(), "mailcanary_sent_total{");
    while sent_enough(&scrape(port).unwrap_or_default(), series) < target {
        if start.elapsed() > limit * 2 {
            let text = scrape(port).unwrap_or_default();
            let interesting: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("mailcanary_") && !l.contains("_bucket") && !l.ends_with(" 0")
                })
                .collect();
            return Err(format!(
                "not every canary was recorded:\n{}",
                interesting.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon);
    let books = mailcanary::state::read(&dir.path().join("state")).map_err(|e| e.to_string())?;
    let seen = &books.get("bench").ok_or("no books")?.seen;
    let truth = delivered_at(&maildir);
    let samples: Vec<Sample> = seen
        .iter()
        .filter_map(|(id, s)| {
            Some(Sample {
                sent_ms: s.sent_ms,
                seen_ms: s.seen_ms,
                server_ms: s.server_ms,
                delivered_ms: *truth.get(id)?,
            })
        })
        .collect();
    clear(&maildir);
    Ok(samples)
}

/// Canary id → delivery time (ms, with the µs of the file name) for every file of a Maildir.
fn delivered_at(maildir: &Path) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for sub in ["new", "cur", ".Junk/new", ".Junk/cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((secs, rest)) = name.split_once(".M") else {
                continue;
            };
            let usecs: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let (Ok(secs), Ok(usecs)) = (secs.parse::<f64>(), usecs.parse::<f64>()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if let Some(id) = text
                .split("mailcanary-id: ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
            {
                out.insert(id.to_string(), secs * 1000.0 + usecs / 1000.0);
            }
        }
    }
    out
}

fn report(name: &str, values_ms: &[f64]) {
    if values_ms.is_empty() {
        println!("{name:<18} no samples");
        return;
    }
    let mut v = values_ms.to_vec();
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<18} n={:<3} p50 {:>8.1} ms  p95 {:>8.1} ms  max {:>8.1} ms  min {:>8.1} ms",
        v.len(),
        pct(0.5),
        pct(0.95),
        max(&v),
        min(&v)
    );
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn clear(maildir: &Path) {
    for sub in ["new", "cur", ".Junk/new", ".Junk/cur"] {
        if let Ok(entries) = std::fs::read_dir(maildir.join(sub)) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

struct Daemon(Child);

impl Drop for Daemon {
    /// SIGTERM, so the agent closes its store cleanly before the books are read.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}
