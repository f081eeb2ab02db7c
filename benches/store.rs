//! Benchmark of the durable store: how many book-keeping operations per second it commits,
//! and what 100,000 in-flight canaries cost on disk and at start-up.
//!
//! `cargo bench --bench store` (prints figures; asserts nothing about speed).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use mailcanary::ledger::Ledger;
use mailcanary::state::{STORE_FILE, Store};

const PROBES: usize = 1_000;
const PER_PROBE: usize = 100;
const SEQUENTIAL: usize = 2_000;

fn id(probe: usize, n: usize) -> String {
    format!("01J{probe:011}{n:012}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened = Store::open(dir.path()).expect("open store");
    let store = opened.store.clone();

    // One caller at a time: every operation waits for its own commit (fsync).
    let mut lone = Ledger::default();
    let start = Instant::now();
    for n in 0..SEQUENTIAL {
        let (_, writes) = lone.begin_send(&id(PROBES, n), "bulk", n as u64);
        assert!(store.wait_committed(store.submit("lone", writes)).await);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sequential: {SEQUENTIAL} sends, one commit each: {:.0} ops/s, {:.2} ms/op",
        SEQUENTIAL as f64 / secs,
        secs * 1000.0 / SEQUENTIAL as f64
    );

    // 1,000 probes sending at once: commits are grouped.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PROBES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let ledger = Arc::new(Mutex::new(Ledger::default()));
            let name = format!("probe-{p}");
            for n in 0..PER_PROBE {
                let pending = {
                    let mut l = ledger.lock().unwrap();
                    let (_, writes) = l.begin_send(&id(p, n), "bulk", n as u64);
                    store.submit(&name, writes)
                };
                assert!(store.wait_committed(pending).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let total = PROBES * PER_PROBE;
    println!(
        "concurrent: {PROBES} probes x {PER_PROBE} sends = {total} in flight: {:.0} ops/s ({secs:.1} s)",
        total as f64 / secs
    );
    store.stop(opened.writer);
    drop(opened.lock);
    drop(store);

    let bytes = std::fs::metadata(dir.path().join(STORE_FILE))
        .unwrap()
        .len();
    println!(
        "on disk: {:.1} MiB for {} in-flight canaries ({:.0} bytes each)",
        bytes as f64 / (1024.0 * 1024.0),
        total + SEQUENTIAL,
        bytes as f64 / (total + SEQUENTIAL) as f64
    );

    let start = Instant::now();
    let reopened = Store::open(dir.path()).expect("reopen");
    let loaded: usize = reopened.ledgers.values().map(|l| l.in_flight().len()).sum();
    println!(
        "start-up: open with integrity check + load {loaded} in-flight canaries: {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(loaded, total + SEQUENTIAL);
    reopened.store.stop(reopened.writer);
}
