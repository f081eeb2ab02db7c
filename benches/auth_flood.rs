//! Benchmark of the basic-auth endpoint under a flood of wrong passwords (issue 10): how long
//! a scrape with the right credentials takes, with and without 50 wrong-password requests a
//! second (every fifth from an unknown user) hitting the same agent.
//!
//! `cargo bench --bench auth_flood [-- RATE SECONDS]` (prints figures; asserts nothing about
//! speed). Needs no mail stack: the agent's one probe sends to a closed port and watches an
//! empty Maildir. `MAILCANARY_BENCH_BIN=/path/to/mailcanary` runs another build of the agent
//! (e.g. an older commit) through the same load.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// htpasswd's default cost.
const COST: u32 = 10;
const PASSWORD: &str = "scrape-pass";
const SCRAPE_EVERY: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(10);

/// GET `/metrics` on a fresh connection; the status and how long until the whole answer was in
/// (status 0: no answer within TIMEOUT).
fn get(port: u16, user: &str, password: &str) -> (u16, Duration) {
    let start = Instant::now();
    let attempt = || -> std::io::Result<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let credentials = STANDARD.encode(format!("{user}:{password}"));
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let status = response.get(9..12).unwrap_or_default();
        Ok(String::from_utf8_lossy(status).parse().unwrap_or(0))
    };
    (attempt().unwrap_or(0), start.elapsed())
}

/// Scrapes with the right password every SCRAPE_EVERY until `stop`; the latencies of the
/// successful ones and the number that failed.
fn scrape_until(port: u16, stop: &AtomicBool) -> (Vec<Duration>, usize) {
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let (status, took) = get(port, "prometheus", PASSWORD);
        if status == 200 {
            latencies.push(took);
        } else {
            failed += 1;
        }
        std::thread::sleep(SCRAPE_EVERY.saturating_sub(took));
    }
    (latencies, failed)
}

/// `rate` requests a second for `duration`, open loop (one thread each); their statuses.
fn flood(port: u16, rate: u32, duration: Duration) -> Vec<u16> {
    let start = Instant::now();
    let mut threads = Vec::new();
    let mut n = 0u32;
    while start.elapsed() < duration {
        threads.push(std::thread::spawn(move || {
            if n % 5 == 4 {
                get(port, &format!("intruder{n}"), PASSWORD).0
            } else {
                get(port, "prometheus", &format!("guess-{n}")).0
            }
        }));
        n += 1;
        let next = start + Duration::from_secs(1) * n / rate;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn report(what: &str, mut latencies: Vec<Duration>, failed: usize) {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{what:<14} scrapes ok {:>4}, failed {failed:>3}; latency ms p50 {:>8.2}  p99 {:>8.2}  max {:>8.2}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0),
    );
}

fn phase(port: u16, flood_rate: Option<u32>, seconds: u64) -> (Vec<Duration>, usize, Vec<u16>) {
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || scrape_until(port, &stop))
    };
    let statuses = match flood_rate {
        Some(rate) => flood(port, rate, Duration::from_secs(seconds)),
        None => {
            std::thread::sleep(Duration::from_secs(seconds));
            Vec::new()
        }
    };
    stop.store(true, Ordering::Relaxed);
    let (latencies, failed) = scraper.join().unwrap();
    (latencies, failed, statuses)
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path, port: u16) -> Agent {
    let maildir = dir.join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("probes.toml"),
        format!(
            "[agent]\nid = \"bench-auth\"\n\n[defaults]\ninterval = \"1h\"\n\n[[probe]]\nname = \"bench\"\n\
             from = \"probe@example.test\"\nto = \"box@example.test\"\nclasses = [\"interpersonal\"]\n\
             \x20 [probe.smtp]\n  host = \"127.0.0.1\"\n  port = {closed}\n  tls = \"none\"\n\
             \x20 [probe.mailbox]\n  protocol = \"maildir\"\n  path = \"{}\"\n  folders = [\"INBOX\"]\n",
            maildir.display()
        ),
    )
    .unwrap();
    let hash = bcrypt::hash(PASSWORD, COST).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!("basic_auth_users:\n  prometheus: {hash}\n"),
    )
    .unwrap();
    let bin = std::env::var("MAILCANARY_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mailcanary").to_string());
    let child = Command::new(&bin)
        .arg("--config")
        .arg(dir.join("probes.toml"))
        .args(["run", "--web.listen-address", &format!("127.0.0.1:{port}")])
        .arg("--web.config.file")
        .arg(dir.join("web.yml"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    Agent(child)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rate: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _agent = start_agent(dir.path(), port);
    let started = Instant::now();
    while get(port, "nobody", "x").0 != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the agent did not come up:\n{}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first scrape verifies the credentials (one bcrypt); later ones hit the cache.
    let (status, first) = get(port, "prometheus", PASSWORD);
    assert_eq!(status, 200, "the right password is accepted");
    println!(
        "bcrypt cost {COST}; first scrape (verifies) {:.1} ms; scraping every {} ms for {seconds} s",
        first.as_secs_f64() * 1000.0,
        SCRAPE_EVERY.as_millis()
    );

    let (quiet, quiet_failed, _) = phase(port, None, seconds);
    report("no flood", quiet, quiet_failed);
    let (busy, busy_failed, statuses) = phase(port, Some(rate), seconds);
    report(&format!("flood {rate}/s"), busy, busy_failed);
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    println!(
        "flood answers: {} requests, 401 {}, 503 {}, other/none {}",
        statuses.len(),
        count(401),
        count(503),
        statuses.len() - count(401) - count(503)
    );
}
