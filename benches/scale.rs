//! Scale benchmark (issue 12): one agent, N probes (default 1,000) each sending (submission,
//! STARTTLS, probe1's account) into one of M mailboxes (the stack's box01..boxMM, round-robin),
//! all watched with IMAP IDLE, interval 60 s, the 3 default classes, default jitter. Two shapes:
//!
//! - fan-in, M < N (default M = 10): many probes into few mailboxes, one IDLE connection each;
//! - per-probe, M ≥ N (`MAILBOXES=1000` with `N=1000`): a mailbox of its own for every probe,
//!   so the agent holds N IMAP connections. The stack is then started with N test users
//!   (`MAILSTACK_USERS`, which also raises Dovecot's limits for N sessions from 127.0.0.1).
//!
//! After a warm-up it measures a window and prints the agent's CPU (% of one core), peak and
//! current RSS, `/metrics` scrape time p50/max (one scrape every `SCRAPE` seconds, default 15 as
//! Prometheus is usually set; the figures before were taken at 5) and body size, series per
//! probe, sent/delivered/lost, send failures, IMAP connections held and the load average.
//!
//! The cost of an IMAP connection held is measured as a difference, not guessed: every run
//! appends its figures to `scale-results.tsv` in the stack's directory, and a run with more
//! connections than an earlier run of the same N (the per-probe shape after the fan-in one)
//! prints (RSS now − that run's RSS now) / (connections − that run's connections): same probes,
//! same sending, only the mailboxes differ, so what remains is the connections' cost (their TLS
//! session, buffers, IDLE task and the watcher around each). Current RSS at the end, not the
//! peak, so start-up transients do not count.
//!
//! `cargo bench --bench scale [-- N=1000 MAILBOXES=10 RUN=180 WARMUP=60]` (the same names also
//! work as environment variables; RUN and WARMUP in seconds). Prints figures, asserts nothing.
//! Needs root and starts its own private stack (`/tmp/mailcanary-bench-scale`, ports 29xxx),
//! which it stops at the end. `PORT_BASE=31000` gives a second run its own stack
//! (`/tmp/mailcanary-bench-scale-31000`), so two builds can be measured side by side.

use std::collections::HashSet;
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::agent::{Agent, fetch, free_port, param, probe_section, scrape, status_kb, total};
use common::{Env, empty_mailboxes, mailstack, stack_up_with_users};

/// The private stack's directory and port base; `PORT_BASE=…` runs a second bench beside a
/// first (two builds measured at once, on the same machine in the same moment, compare better
/// than two runs minutes apart), with its stack in a directory of its own.
const PORT_BASE: u64 = 29000;

fn port_base() -> u64 {
    param("PORT_BASE", PORT_BASE)
}

fn stack_dir() -> String {
    match port_base() {
        PORT_BASE => "/tmp/mailcanary-bench-scale".to_string(),
        other => format!("/tmp/mailcanary-bench-scale-{other}"),
    }
}

/// N probes round-robin over M mailboxes (the fields of tests/it/support.rs `probe_section`,
/// with the run's interval and IDLE).
fn config(env: &Env, probes: u64, mailboxes: u64) -> String {
    let mut text = String::from("[agent]\nid = \"bench-scale\"\n");
    for i in 0..probes {
        let user = format!("box{:02}@example.test", i % mailboxes + 1);
        text.push_str(&probe_section(env, &format!("p{i:04}"), &user, 60));
    }
    text
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the comm: state is field 3, utime 14 and stime 15 (1-based).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Context switches (voluntary and not) of every thread of `pid` so far: each is a wake-up, and
/// wake-ups are where an idle-looking agent spends its CPU.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Established TCP connections of `pid` to `remote_port` (its socket inodes in /proc/net/tcp*).
fn connections(pid: u32, remote_port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let port = format!(":{remote_port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&port) && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}

/// The 1, 5 and 15 minute load averages (another build on the machine skews CPU figures).
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Appends this run's figures to the results file and, if an earlier run of the same number of
/// probes had fewer mailboxes (and held fewer IMAP connections), prints the RSS each extra
/// connection costs against the latest such run. RSS varies by some 15 MB between runs of the
/// same shape, so with few extra connections the figure is noise; compare several runs.
fn per_connection_cost(probes: u64, mailboxes: u64, held: usize, rss_kb: u64) {
    let path = std::path::Path::new(&stack_dir()).join("scale-results.tsv");
    let earlier = std::fs::read_to_string(&path).unwrap_or_default();
    let baseline = earlier.lines().rev().find_map(|l| {
        let f: Vec<u64> = l.split('\t').filter_map(|v| v.parse().ok()).collect();
        (f.len() == 4 && f[0] == probes && f[1] < mailboxes && (f[2] as usize) < held)
            .then(|| (f[1], f[2], f[3]))
    });
    let line = format!("{probes}\t{mailboxes}\t{held}\t{rss_kb}\n");
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = appended {
        eprintln!(
            "scale | cannot record the figures in {}: {e}",
            path.display()
        );
    }
    match baseline {
        Some((base_mailboxes, base_held, base_rss)) => println!(
            "scale | per IMAP connection held: {:.1} KiB of RSS ((RSS {:.1} MB − {:.1} MB of the \
             run with {base_mailboxes} mailboxes) / ({held} − {base_held} connections))",
            (rss_kb as f64 - base_rss as f64) / (held - base_held as usize) as f64,
            rss_kb as f64 / 1024.0,
            base_rss as f64 / 1024.0,
        ),
        None => println!(
            "scale | per IMAP connection: no earlier run of {probes} probes with fewer \
             connections in {} to compare with",
            path.display()
        ),
    }
}

/// The log's lines by kind (the message, without time, fields or span), most frequent first.
fn log_kinds(log: &str) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for line in log.lines() {
        // `TIME  LEVEL target: message key=value …`
        let rest = line.split_once(": ").map_or(line, |(_, r)| r);
        let message: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| !w.contains('='))
            .collect();
        let kind = message.join(" ");
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds
}

/// Stops the private stack when dropped (data kept for a look at the logs).
struct Stack;

impl Drop for Stack {
    fn drop(&mut self) {
        let out = mailstack(&["down", &stack_dir()], None);
        if !out.status.success() {
            eprintln!(
                "scale | mailstack down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn main() {
    let probes = param("N", 1000).max(1);
    let mailboxes = param("MAILBOXES", 10).clamp(1, probes);
    let run = Duration::from_secs(param("RUN", 180).max(5));
    let warmup = Duration::from_secs(param("WARMUP", 60));
    // Prometheus' usual 15 s; the figures before it were taken at 5 s (SCRAPE=5).
    let scrape_every = Duration::from_secs(param("SCRAPE", 15).max(1));
    let shape = if mailboxes == probes && probes > 1 {
        "per-probe (one mailbox each)"
    } else {
        "fan-in"
    };
    println!(
        "scale | {shape}: {probes} probes into {mailboxes} mailboxes, IMAP IDLE, interval 60 s, 3 \
         classes | warm-up {} s, measured {} s | {} cores | load average {}",
        warmup.as_secs(),
        run.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    let users = (mailboxes > 40).then_some(mailboxes);
    let env = stack_up_with_users(&stack_dir(), Some(&port_base().to_string()), users);
    let _stack = Stack;
    empty_mailboxes(
        &env,
        (1..=mailboxes).map(|i| format!("box{i:02}@example.test")),
    );
    let imaps: u16 = env["MAILSTACK_IMAPS_PORT"].parse().expect("IMAPS port");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("probes.toml"),
        config(&env, probes, mailboxes),
    )
    .expect("write config");
    let port = free_port();
    let up = Instant::now();
    let agent = Agent::start(&env, dir.path(), port);
    let pid = agent.0.id();
    println!(
        "scale | /metrics up after {:.1} s",
        up.elapsed().as_secs_f64()
    );

    // Warm-up: scrape on the same schedule, measure nothing.
    let warm_end = Instant::now() + warmup;
    let mut last = String::new();
    while Instant::now() < warm_end {
        if let Some((body, _)) = scrape(port) {
            last = body;
        }
        std::thread::sleep(scrape_every.min(warm_end.saturating_duration_since(Instant::now())));
    }
    let before = last.clone();

    let ticks0 = cpu_ticks(pid);
    let switches0 = context_switches(pid);
    let start = Instant::now();
    let mut times = Vec::new();
    let mut failed_scrapes = 0;
    let mut conns = Vec::new();
    while start.elapsed() < run {
        let next = Instant::now() + scrape_every;
        match scrape(port) {
            Some((body, took)) => {
                times.push(took);
                last = body;
            }
            None => failed_scrapes += 1,
        }
        conns.push(connections(pid, imaps));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let window = start.elapsed();
    let ticks = cpu_ticks(pid) - ticks0;
    let switches = context_switches(pid).saturating_sub(switches0);
    let cpu = ticks as f64 / clock_ticks() / window.as_secs_f64() * 100.0;
    let hwm = status_kb(pid, "VmHWM");
    let rss = status_kb(pid, "VmRSS");
    let held = connections(pid, imaps);

    times.sort();
    let p50 = times.get(times.len().saturating_sub(1) / 2).copied();
    let max = times.last().copied();
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    let samples = last
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let count = |body: &str, name: &str| total(body, &format!("mailcanary_{name}"));
    let figures = [
        ("sent_total", "sent"),
        ("delivered_total", "delivered"),
        ("lost_total", "lost"),
        ("send_failures_total", "send failures"),
        ("in_flight", "in flight"),
        ("mailbox_errors_total", "mailbox errors"),
    ];

    println!(
        "scale | agent CPU {cpu:.2} % of one core over {:.0} s",
        window.as_secs_f64()
    );
    println!(
        "scale | context switches {:.0} a second (every thread of the agent)",
        switches as f64 / window.as_secs_f64()
    );
    println!(
        "scale | RSS peak {:.1} MB, now {:.1} MB",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    println!(
        "scale | /metrics scrape p50 {:.1} ms, max {:.1} ms ({} scrapes every {scrape_every:?}, {failed_scrapes} failed) | \
         body {:.1} KiB, {samples} samples = {:.1} series per probe",
        ms(p50),
        ms(max),
        times.len(),
        last.len() as f64 / 1024.0,
        samples as f64 / probes as f64
    );
    for (name, label) in figures {
        let now = count(&last, name);
        let delta = now - count(&before, name);
        println!(
            "scale | {label:<15} {now:>8.0} since start, {delta:>+8.0} in the measured window"
        );
    }
    let mut stages: Vec<(String, f64)> = Vec::new();
    for l in last
        .lines()
        .filter(|l| l.starts_with("mailcanary_send_failures_total{"))
    {
        let stage = l
            .split("stage=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let v: f64 = l
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        match stages.iter_mut().find(|(s, _)| s == stage) {
            Some((_, n)) => *n += v,
            None => stages.push((stage.to_string(), v)),
        }
    }
    let stages: Vec<String> = stages
        .iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(s, n)| format!("{s} {n:.0}"))
        .collect();
    println!("scale | send failures by stage: {}", stages.join(", "));
    println!(
        "scale | IMAP connections held at the end {held}, over the window {}..{}",
        conns.iter().min().unwrap_or(&0),
        conns.iter().max().unwrap_or(&0)
    );
    println!("scale | load average at the end {}", load_average());
    per_connection_cost(probes, mailboxes, held, rss);
    pages(port);
    drop(agent);
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    println!(
        "scale | agent log lines (level warn): {}",
        log.lines().count()
    );
    for (kind, n) in log_kinds(&log).iter().take(5) {
        println!("scale |   {n:>6} × {kind}");
    }
}

/// The status pages of the same agent, after the measured window (so their cost is not in its
/// CPU figure): each fetched 10 times, p50/max and size.
fn pages(port: u16) {
    for path in ["/", "/api/status", "/probe/p0000"] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..10 {
            if let Some((body, took)) = fetch(port, path) {
                times.push(took);
                size = body.len();
            }
        }
        times.sort();
        let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        println!(
            "scale | page {path}: p50 {:.1} ms, max {:.1} ms ({} of 10 answered), {:.1} KiB",
            ms(times.get(times.len().saturating_sub(1) / 2)),
            ms(times.last()),
            times.len(),
            size as f64 / 1024.0
        );
    }
}
