//! The failures table ([`crate::ledger::failures`]): kept across a reopen, removed by a reset,
//! and absent from stores of older versions without harm.

use super::*;
use crate::ledger::Failure;

async fn commit(store: &Store, probe: &str, writes: Vec<Write>) {
    assert!(store.wait_committed(store.submit(probe, writes)).await);
}

fn failure(at_ms: u64) -> Failure {
    let lines = vec!["C: AUTH PLAIN <redacted>".into(), "S: 535 5.7.8 no".into()];
    Failure::new(at_ms, "smtp", "auth", "auth: 535 5.7.8 no", lines)
}

#[tokio::test]
async fn failures_survive_a_reopen_and_a_reset_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(dir.path()).unwrap();
    let mut live = Ledger::default();
    for at in 1..=7 {
        let writes = live.failed(failure(at * 1_000));
        commit(&opened.store, "p1", writes).await;
    }
    commit(&opened.store, "p2", Ledger::default().failed(failure(500))).await;
    opened.store.stop(opened.writer);
    drop(opened.lock);

    let opened = Store::open(dir.path()).unwrap();
    assert_eq!(opened.ledgers["p1"].failures, live.failures);
    assert_eq!(opened.ledgers["p1"].failures.len(), 5);
    assert_eq!(opened.ledgers["p1"].failures[0].at_ms, 7_000);
    commit(&opened.store, "p1", vec![Write::Reset]).await;
    opened.store.stop(opened.writer);
    drop(opened.lock);
    let ledgers = read(dir.path()).unwrap();
    assert!(ledgers.get("p1").is_none_or(|l| l.failures.is_empty()));
    assert_eq!(ledgers["p2"].failures.len(), 1, "another probe's are kept");
}

#[test]
fn a_store_without_the_failures_table_loads_also_while_its_agent_runs() {
    let dir = tempfile::tempdir().unwrap();
    {
        // As an older version left it: its tables, none for failures.
        let db = builder().create(dir.path().join(STORE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut probes = txn.open_table(PROBES).unwrap();
            let tally = serde_json::to_vec(&crate::ledger::ProbeTally::default()).unwrap();
            probes.insert("p1/", tally.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    // An agent of that version holds the lock: `status` reads next to it, read-only.
    let lock = take_lock(dir.path()).unwrap();
    let ledgers = read(dir.path()).unwrap();
    assert!(ledgers["p1"].failures.is_empty());
    drop(lock);
    let opened = Store::open(dir.path()).unwrap();
    assert!(opened.ledgers["p1"].failures.is_empty());
    opened.store.stop(opened.writer);
}
