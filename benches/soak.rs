//! Soak benchmark (issue 12): one agent at a high canary rate for a long run, to show that its
//! memory and its state store stop growing once warm — the books are bounded by count, not by
//! time — and to project what a week at the default `forget_after` costs at 1,000 probes.
//!
//! N probes (default 100) round-robin over M mailboxes (default 10, the stack's box01..),
//! IMAP IDLE, the 3 default classes, a short interval (default 10 s: 30 canaries a second, a
//! week's worth of deliveries for one probe in under 6 minutes). After a warm-up it samples
//! every SAMPLE seconds: RSS,
//! peak RSS, the store's size on disk, sent/delivered/lost/in flight; at the end it prints the
//! growth per 10 minutes and the projection.
//!
//! `cargo bench --bench soak [-- N=100 MAILBOXES=10 INTERVAL=10 RUN=1800 WARMUP=300 SAMPLE=600]`
//! (also as environment variables; times in seconds). Prints figures, asserts nothing. Needs
//! root and starts its own private stack (`/tmp/mailcanary-bench-soak`, ports 30xxx), which it
//! stops at the end.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::agent::{Agent, free_port, param, probe_section, scrape, status_kb, total};
use common::{Env, empty_mailboxes, mailstack, stack_up};

const STACK: &str = "/tmp/mailcanary-bench-soak";
const PORT_BASE: &str = "30000";
/// Prometheus' usual scrape interval: the agent renders at this rate during the whole run.
const SCRAPE_EVERY: Duration = Duration::from_secs(15);
/// The default `forget_after`, over which the projection runs.
const WEEK_S: f64 = 7.0 * 86_400.0;

/// N probes round-robin over M mailboxes at `interval` seconds.
fn config(env: &Env, probes: u64, mailboxes: u64, interval: u64) -> String {
    let mut text = String::from("[agent]\nid = \"bench-soak\"\n");
    for i in 0..probes {
        let user = format!("box{:02}@example.test", i % mailboxes + 1);
        let section = probe_section(env, &format!("s{i:04}"), &user, interval);
        // Long enough that a loaded machine's slow delivery is not counted lost.
        text.push_str(&section.replace("classes =", "lost_after = \"10m\"\nclasses ="));
    }
    text
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => bytes_under(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// One sample of the run.
struct Sample {
    at_s: f64,
    rss_kb: u64,
    store: u64,
    delivered: f64,
}

/// Stops the private stack when dropped (data kept for a look at the logs).
struct Stack;

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = mailstack(&["down", STACK], None);
    }
}

/// Scrapes every [`SCRAPE_EVERY`] until `until`, returning the last body.
fn scrape_until(port: u16, until: Instant, mut last: String) -> String {
    while Instant::now() < until {
        if let Some((body, _)) = scrape(port) {
            last = body;
        }
        std::thread::sleep(SCRAPE_EVERY.min(until.saturating_duration_since(Instant::now())));
    }
    last
}

fn main() {
    let probes = param("N", 100).max(1);
    let mailboxes = param("MAILBOXES", 10).clamp(1, 40);
    let interval = param("INTERVAL", 10).max(1);
    let run = param("RUN", 1800).max(60);
    let warmup = param("WARMUP", 300);
    let every = param("SAMPLE", 600).max(10);
    let rate = probes as f64 * 3.0 / interval as f64;
    println!(
        "soak | {probes} probes into {mailboxes} mailboxes, interval {interval} s, 3 classes \
         ({rate:.1} canaries/s) | warm-up {warmup} s, measured {run} s, a sample every {every} s"
    );
    let env = stack_up(STACK, Some(PORT_BASE));
    let _stack = Stack;
    empty_mailboxes(
        &env,
        (1..=mailboxes).map(|i| format!("box{i:02}@example.test")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("probes.toml"),
        config(&env, probes, mailboxes, interval),
    )
    .expect("write config");
    let port = free_port();
    let agent = Agent::start(&env, dir.path(), port);
    let pid = agent.0.id();
    let state = dir.path().join("state");

    let mut last = scrape_until(
        port,
        Instant::now() + Duration::from_secs(warmup),
        String::new(),
    );
    let start = Instant::now();
    let mut samples = Vec::new();
    println!(
        "soak |   minute |  RSS MB | peak MB | store KiB |     sent | delivered | lost | in flight | send failures"
    );
    loop {
        let s = Sample {
            at_s: start.elapsed().as_secs_f64(),
            rss_kb: status_kb(pid, "VmRSS"),
            store: bytes_under(&state),
            delivered: total(&last, "mailcanary_delivered_total"),
        };
        println!(
            "soak | {:>8.1} | {:>7.2} | {:>7.2} | {:>9.1} | {:>8.0} | {:>9.0} | {:>4.0} | {:>9.0} | {:>13.0}",
            s.at_s / 60.0,
            s.rss_kb as f64 / 1024.0,
            status_kb(pid, "VmHWM") as f64 / 1024.0,
            s.store as f64 / 1024.0,
            total(&last, "mailcanary_sent_total"),
            s.delivered,
            total(&last, "mailcanary_lost_total"),
            total(&last, "mailcanary_in_flight"),
            total(&last, "mailcanary_send_failures_total"),
        );
        samples.push(s);
        if start.elapsed().as_secs() >= run {
            break;
        }
        let next = start + Duration::from_secs(every * samples.len() as u64);
        let until = next.min(start + Duration::from_secs(run));
        last = scrape_until(port, until, last);
    }
    drop(agent);
    report(&samples, probes, interval);
}

/// Growth between samples, and the week's projection at 1,000 probes from the second half of
/// the run: the first minutes after the warm-up still see the allocator settle (arenas, the
/// store's page cache filling up to the file's size), which is not growth with time.
fn report(samples: &[Sample], probes: u64, interval: u64) {
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        println!(
            "soak | minute {:>5.1} → {:>5.1}: RSS {:+.0} KiB, store {:+.1} KiB, {:.0} deliveries",
            a.at_s / 60.0,
            b.at_s / 60.0,
            b.rss_kb as f64 - a.rss_kb as f64,
            (b.store as f64 - a.store as f64) / 1024.0,
            b.delivered - a.delivered
        );
    }
    let (from, last) = (&samples[samples.len() / 2], &samples[samples.len() - 1]);
    let delivered = (last.delivered - from.delivered).max(1.0);
    let per_delivery_kb = (last.rss_kb as f64 - from.rss_kb as f64).max(0.0) / delivered;
    // 1,000 probes × 3 classes every 60 s, for `forget_after`.
    let week_deliveries = 1000.0 * 3.0 / 60.0 * WEEK_S;
    println!(
        "soak | second half: {delivered:.0} deliveries ({probes} probes, {interval} s), RSS growth \
         per delivery {per_delivery_kb:.4} KiB (clamped at 0); projected for 1,000 probes over 7 \
         days ({week_deliveries:.0} deliveries): {:+.1} MB on top of the warm agent",
        per_delivery_kb * week_deliveries / 1024.0
    );
}
