//! Benchmark of the `/metrics` renderer alone: 1,000 probes' books built in memory (3 classes,
//! one delivery each through a `Received:` chain of 3 or 8 hops, 50 canaries of each class in
//! flight), rendered 50 times each.
//!
//! `cargo bench --bench render [-- PROBES=1000 RENDERS=50 HOPS=3]` prints, per hop count, the render
//! time p50 and max, the body size, the series per probe and how far the process's peak RSS
//! rose above its RSS before the renders (so the transient memory of a scrape shows). Asserts
//! nothing about speed: a benchmark, not a test.

use std::time::{Duration, Instant};

use mailcanary::ledger::example_books;
use mailcanary::metrics::{AgentFigures, BooksInMemory, render};

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs` 5), so `VmHWM` then shows the
/// peak of what follows only.
fn reset_peak_rss() {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("cannot reset the peak RSS; growth figures include earlier peaks");
    }
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .find_map(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(probes: usize, renders: usize, hops: usize) {
    let ledger = example_books(3, hops, 50);
    let all: Vec<BooksInMemory> = (0..probes)
        .map(|i| BooksInMemory::new(&format!("probe-{i:04}"), &["INBOX"], ledger.clone()))
        .collect();
    let figures = AgentFigures { state_errors: 0 };
    reset_peak_rss();
    let before_kib = status_kib("VmRSS");
    let mut times = Vec::with_capacity(renders);
    let mut body_len = 0;
    let mut series = 0;
    for _ in 0..renders {
        let start = Instant::now();
        let body = render(&all, figures, 100_000);
        times.push(start.elapsed());
        body_len = body.len();
        series = body.lines().filter(|l| !l.starts_with('#')).count();
    }
    let peak_kib = status_kib("VmHWM");
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{probes} probes x 3 classes, {hops} hops, 50 in flight: render p50 {:.1} ms, max {:.1} ms \
         ({renders} renders); body {:.2} MiB; {:.1} series per probe; peak RSS +{:.1} MiB over {:.1} MiB",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        body_len as f64 / (1024.0 * 1024.0),
        series as f64 / probes as f64,
        peak_kib.saturating_sub(before_kib) as f64 / 1024.0,
        before_kib as f64 / 1024.0,
    );
}

/// Each hop count in a process of its own (this program run again with `HOPS=`), so one run's
/// freed but retained heap does not hide the next run's peak.
fn main() {
    let probes = arg("PROBES", 1_000);
    let renders = arg("RENDERS", 50).max(1);
    if let Some(hops) = std::env::args().find_map(|a| a.strip_prefix("HOPS=")?.parse().ok()) {
        run(probes, renders, hops);
        return;
    }
    let me = std::env::current_exe().expect("own path");
    for hops in [3, 8] {
        let status = std::process::Command::new(&me)
            .args([format!("PROBES={probes}"), format!("RENDERS={renders}")])
            .arg(format!("HOPS={hops}"))
            .status()
            .expect("run again");
        assert!(status.success(), "the {hops}-hop run failed");
    }
}
