use super::*;
use crate::canary::Canary;
use crate::stage::MailboxStage;

fn canary(id: &str) -> Canary {
    Canary {
        id: id.into(),
        probe: "p1".into(),
        class: "bulk".into(),
        seq: 1,
        sent_ms: 1_000,
        agent: "a".into(),
    }
}

async fn commit(store: &Store, probe: &str, writes: Vec<Write>) {
    assert!(
        store.wait_committed(store.submit(probe, writes)).await,
        "commit failed"
    );
}

fn close(opened: Opened) -> BTreeMap<String, Ledger> {
    let Opened {
        store,
        ledgers,
        writer,
        lock,
    } = opened;
    store.stop(writer);
    drop(lock);
    ledgers
}

#[tokio::test]
async fn books_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(dir.path()).unwrap();
    assert!(opened.ledgers.is_empty());
    let mut live = Ledger::default();
    let store = opened.store.clone();
    let w = live.open_class("bulk").into_iter().collect();
    commit(&store, "p1", w).await;
    for id in ["A", "B", "C"] {
        let (_, w) = live.begin_send(id, "bulk", 1_000);
        commit(&store, "p1", w).await;
    }
    let (_, w) = live.arrived_at(&canary("A"), "INBOX", "INBOX/1.1", 5_000);
    commit(&store, "p1", w).await;
    let (_, w) = live.arrived_at(&canary("A"), "INBOX", "INBOX/1.2", 6_000);
    commit(&store, "p1", w).await;
    assert!(!live.repeated.is_empty(), "a duplicate mail is remembered");
    let (_, w) = live.expire(
        10_000_000,
        |_| std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(86_400),
    );
    commit(&store, "p1", w).await;
    let w = live.mailbox_error(MailboxStage::Connect);
    commit(&store, "p1", w).await;
    let mut other = Ledger::default();
    let (_, w) = other.begin_send("Z", "interpersonal", 7);
    commit(&store, "p2", w).await;
    drop(store);
    close(opened);

    let again = close(Store::open(dir.path()).unwrap());
    assert_eq!(again["p1"], live);
    assert_eq!(again["p2"], other);
}

#[tokio::test]
async fn a_second_opener_is_refused_with_the_lock_named() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path())
        .err()
        .expect("second open must fail");
    let text = err.to_string();
    assert!(matches!(err, OpenError::Locked { .. }), "{text}");
    // The refused opener did not wipe the holder's pid.
    let pid = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
    assert!(
        text.contains("locked by another mailcanary process"),
        "{text}"
    );
    assert!(
        text.contains(&format!("(pid {})", std::process::id())),
        "{text}"
    );
    assert!(
        text.contains(&dir.path().join(LOCK_FILE).display().to_string()),
        "{text}"
    );
    close(first);
    close(Store::open(dir.path()).expect("free again once the first is closed"));
}

#[tokio::test]
async fn the_store_can_be_read_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(dir.path()).unwrap();
    let mut live = Ledger::default();
    let (_, w) = live.begin_send("A", "bulk", 1);
    commit(&opened.store, "p1", w).await;
    let seen = read(dir.path()).unwrap();
    assert_eq!(seen["p1"].in_flight().len(), 1);
    close(opened);
}

#[test]
fn damaged_files_give_a_clear_error() {
    for (what, bytes) in [
        (
            "garbage",
            b"this is not a database at all, just text".repeat(200),
        ),
        ("truncated", Vec::new()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        if what == "truncated" {
            // A real store cut short, as a full disk or a bad copy leaves it.
            let opened = Store::open(dir.path()).unwrap();
            let mut live = Ledger::default();
            for i in 0..200 {
                let (_, w) = live.begin_send(&format!("C{i:04}"), "bulk", i);
                runtime.block_on(commit(&opened.store, "p1", w));
            }
            close(opened);
            let path = dir.path().join(STORE_FILE);
            let len = std::fs::metadata(&path).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len / 3)
                .unwrap();
        } else {
            std::fs::write(dir.path().join(STORE_FILE), &bytes).unwrap();
        }
        let err = Store::open(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{what}: must not open"));
        let text = err.to_string();
        assert!(matches!(err, OpenError::Unusable { .. }), "{what}: {text}");
        assert!(text.contains("move it aside"), "{what}: {text}");
    }
}

#[tokio::test]
async fn a_failed_commit_is_counted_and_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let Opened {
        store,
        writer,
        lock,
        ..
    } = Store::open(dir.path()).unwrap();
    store.stop(writer);
    let mut live = Ledger::default();
    let (_, w) = live.begin_send("A", "bulk", 1);
    assert!(
        !store.wait_committed(store.submit("p1", w)).await,
        "the writer is gone"
    );
    assert_eq!(store.errors(), 1);
    assert_eq!(live.in_flight().len(), 1, "the books in memory carry on");
    drop(lock);
}

#[tokio::test]
async fn a_reset_removes_exactly_one_probes_records() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(dir.path()).unwrap();
    for probe in ["p1", "p10", "p2"] {
        let mut l = Ledger::default();
        let (_, w) = l.begin_send("A", "bulk", 1);
        commit(&opened.store, probe, w).await;
    }
    commit(&opened.store, "p1", vec![Write::Reset]).await;
    close(opened);
    let books = close(Store::open(dir.path()).unwrap());
    assert!(!books.contains_key("p1"));
    assert_eq!(books["p10"].in_flight().len(), 1);
    assert_eq!(books["p2"].in_flight().len(), 1);
}

#[test]
fn a_symlinked_lock_file_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::symlink(&victim, state.join(LOCK_FILE)).unwrap();
    let err = Store::open(&state)
        .err()
        .expect("a symlinked lock must be refused");
    assert!(matches!(err, OpenError::Directory { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // Also when the link dangles: nothing is created at its target.
    let dangling = dir.path().join("made-by-the-agent");
    std::fs::remove_file(state.join(LOCK_FILE)).unwrap();
    std::os::unix::fs::symlink(&dangling, state.join(LOCK_FILE)).unwrap();
    assert!(Store::open(&state).is_err());
    assert!(!dangling.exists());
}

#[test]
fn a_lock_path_that_is_not_a_regular_file_is_refused() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(LOCK_FILE);
    let c_path = std::ffi::CString::new(lock.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let err = Store::open(dir.path()).err().expect("must be refused");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_commit_error_names_the_store_and_keeps_the_cause() {
    let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
    let e = CommitError::Write {
        path: "/var/lib/mailcanary/state.redb".into(),
        source: Arc::new(redb::Error::Io(io)),
    };
    assert_eq!(
        e.to_string(),
        "cannot commit to the state store /var/lib/mailcanary/state.redb"
    );
    assert_eq!(
        crate::setup::chain(&e),
        "cannot commit to the state store /var/lib/mailcanary/state.redb: \
         I/O error: No space left on device"
    );
    assert_eq!(
        crate::setup::chain(&e.clone()),
        crate::setup::chain(&e),
        "every batch of the group gets the same error"
    );
}

#[test]
fn a_malformed_record_names_its_key_and_keeps_the_decoder_error() {
    let source = serde_json::from_slice::<u8>(b"x").unwrap_err();
    let e = LoadError::Record {
        what: "lost",
        key: "p1/01J".into(),
        source,
    };
    assert_eq!(e.to_string(), r#"malformed lost record "p1/01J""#);
    assert_eq!(
        crate::setup::chain(&e),
        r#"malformed lost record "p1/01J": expected value at line 1 column 1"#
    );
}

#[tokio::test]
async fn a_full_rewrite_keeps_the_mails_already_counted() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(dir.path()).unwrap();
    let store = opened.store.clone();
    let mut live = Ledger::default();
    let (_, w) = live.begin_send("A", "bulk", 1_000);
    commit(&store, "p1", w).await;
    let (_, w) = live.arrived_at(&canary("A"), "INBOX", "INBOX/1.1", 5_000);
    commit(&store, "p1", w).await;
    let (_, w) = live.arrived_at(&canary("A"), "INBOX", "INBOX/1.2", 6_000);
    commit(&store, "p1", w).await;
    let w = live.forged("bulk", "INBOX/9.9", 7_000);
    commit(&store, "p1", w).await;
    // What a probe writes after the store was reopened following an I/O error.
    commit(&store, "p1", live.full_writes()).await;
    drop(store);
    close(opened);

    let mut again = close(Store::open(dir.path()).unwrap())
        .remove("p1")
        .unwrap();
    assert_eq!(again, live);
    assert!(
        again.forged("bulk", "INBOX/9.9", 8_000).is_empty(),
        "forged: counted once"
    );
    assert_eq!(
        again
            .arrived_at(&canary("A"), "INBOX", "INBOX/1.2", 8_000)
            .0,
        crate::ledger::Delivery::AlreadyCounted,
        "duplicate: counted once"
    );
}

#[tokio::test]
async fn a_store_without_the_history_table_loads_and_histories_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STORE_FILE);
    // A store as a version before the history left it: no history table.
    {
        let db = builder().create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut classes = txn.open_table(CLASSES).unwrap();
            let tally = crate::ledger::ClassTally::default();
            let record = serde_json::to_vec(&tally).unwrap();
            classes.insert("p1/bulk", record.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    // Read beside an agent of that version (read-only: the table cannot be made).
    let old = load(&builder().open_read_only(&path).unwrap()).unwrap();
    assert!(old["p1"].classes.contains_key("bulk"));
    assert!(old["p1"].history.is_empty());

    let opened = Store::open(dir.path()).unwrap();
    let store = opened.store.clone();
    let mut live = opened.ledgers["p1"].clone();
    for (id, seen_ms) in [("A", 5_000), ("B", 65_000)] {
        let (_, w) = live.begin_send(id, "bulk", 1_000);
        commit(&store, "p1", w).await;
        let (_, w) = live.arrived_at(&canary(id), "INBOX", &format!("INBOX/{id}"), seen_ms);
        let histories = w.iter().filter(|w| matches!(w, Write::History(..))).count();
        assert_eq!(histories, usize::from(id == "A"), "once per half hour");
        commit(&store, "p1", w).await;
    }
    // What the agent queues as it stops.
    let w = live.unsaved_history();
    assert_eq!(w.len(), 1);
    commit(&store, "p1", w).await;
    drop(store);
    close(opened);
    let again = close(Store::open(dir.path()).unwrap());
    assert_eq!(again["p1"].history, live.history);
    assert_eq!(again["p1"].history["bulk"].points(65_000)[0].count, 2);
}
