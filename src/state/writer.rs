//! The store's writer thread: it owns the database and commits whatever was queued as one
//! transaction, lingering briefly under concurrent writers so that they share a commit.

use std::time::Duration;

use redb::Database;
use tokio::sync::mpsc;

use super::*;

/// Most batches folded into one transaction; bounds the latency a batch can add to others.
const MAX_GROUP: usize = 1024;

/// How long a commit waits for more writes to share it once writers were seen queueing
/// concurrently: at most this much added to a write's wait under load (none for a lone
/// writer), for a fraction of the commits.
const LINGER: Duration = Duration::from_millis(200);

/// Moves what is queued into `group` (up to [`MAX_GROUP`]); true when a stop was queued.
fn drain(queue: &mut mpsc::UnboundedReceiver<Job>, group: &mut Vec<Batch>) -> bool {
    while group.len() < MAX_GROUP {
        match queue.try_recv() {
            Ok(Job::Write(b)) => group.push(b),
            Ok(Job::Stop) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// Lets the writes of the next [`LINGER`] join `group` (up to [`MAX_GROUP`]); true when a
/// stop was queued.
fn linger(queue: &mut mpsc::UnboundedReceiver<Job>, group: &mut Vec<Batch>) -> bool {
    if group.len() >= MAX_GROUP {
        return false;
    }
    std::thread::sleep(LINGER);
    drain(queue, group)
}

/// The thread that owns the database.
pub(super) struct Writer {
    /// `None` after an I/O error, until it could be reopened.
    db: Option<Database>,
    path: PathBuf,
    generation: Arc<AtomicU64>,
}

impl Writer {
    /// The writer of the open database at `path`; `generation` counts its reopenings.
    pub(super) fn new(db: Database, path: PathBuf, generation: Arc<AtomicU64>) -> Writer {
        Writer {
            db: Some(db),
            path,
            generation,
        }
    }

    /// Commits what `queue` brings until it is closed or asked to stop.
    pub(super) fn run(mut self, mut queue: mpsc::UnboundedReceiver<Job>) {
        let mut stopping = false;
        let mut concurrent = false;
        while !stopping {
            let Some(Job::Write(first)) = queue.blocking_recv() else {
                break;
            };
            let mut group = vec![first];
            stopping = drain(&mut queue, &mut group);
            // Writers that do not wait for each other (many probes) were seen last time: let
            // the writes of the next moments join this commit. A commit costs the same for one
            // write as for hundreds (two fsyncs and the page bookkeeping were a third of a busy
            // agent's CPU, still a sixth at 100 ms), and the wait delays no measurement:
            // callers take their timestamps outside the store. A lone writer that waits for each commit (a probe opening its
            // books, one probe's canary) never finds others queued, so it never waits.
            if concurrent && !stopping {
                stopping = linger(&mut queue, &mut group);
            }
            let result = self.commit(&group);
            concurrent = group.len() > 1 || !queue.is_empty();
            for batch in group {
                let _ = batch.done.send(result.clone());
            }
        }
    }

    /// Commits a group; after a failure redb refuses every later transaction ("previous I/O
    /// error"), so the database is dropped and reopened before the next group: a disk that was
    /// full or read-only for a while heals without restarting the agent.
    fn commit(&mut self, group: &[Batch]) -> Committed {
        if self.db.is_none() {
            let reopened = builder()
                .create(&self.path)
                .map_err(|e| CommitError::Reopen {
                    path: self.path.clone(),
                    source: Arc::new(e),
                })?;
            tracing::info!(path = %self.path.display(), "state store reopened; probes rewrite their books");
            self.db = Some(reopened);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let db = self.db.as_ref().expect("opened above");
        commit(db, group).map_err(|e| {
            self.db = None;
            CommitError::Write {
                path: self.path.clone(),
                source: Arc::new(e),
            }
        })
    }
}

fn commit(db: &Database, group: &[Batch]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut in_flight = txn.open_table(IN_FLIGHT)?;
        let mut lost = txn.open_table(LOST)?;
        let mut seen = txn.open_table(SEEN)?;
        let mut forged = txn.open_table(FORGED)?;
        let mut repeated = txn.open_table(REPEATED)?;
        let mut classes = txn.open_table(CLASSES)?;
        let mut probes = txn.open_table(PROBES)?;
        let mut scan = txn.open_table(SCAN)?;
        let mut failures = txn.open_table(FAILURES)?;
        let mut history = txn.open_table(HISTORY)?;
        for batch in group {
            let p = batch.probe.as_str();
            for write in &batch.writes {
                match write {
                    Write::InFlight(c) => {
                        in_flight.insert(key(p, &c.id).as_str(), json(c).as_slice())?;
                    }
                    Write::Landed(id) => {
                        in_flight.remove(key(p, id).as_str())?;
                    }
                    Write::Lost(l) => {
                        lost.insert(key(p, &l.canary.id).as_str(), json(l).as_slice())?;
                    }
                    Write::Unlost(id) => {
                        lost.remove(key(p, id).as_str())?;
                    }
                    Write::Seen(id, s) => {
                        seen.insert(key(p, id).as_str(), json(s).as_slice())?;
                    }
                    Write::Unseen(id) => {
                        seen.remove(key(p, id).as_str())?;
                    }
                    Write::Forged(mail, at) => {
                        forged.insert(key(p, mail).as_str(), json(at).as_slice())?;
                    }
                    Write::Unforged(mail) => {
                        forged.remove(key(p, mail).as_str())?;
                    }
                    Write::Repeated(mail, at) => {
                        repeated.insert(key(p, mail).as_str(), json(at).as_slice())?;
                    }
                    Write::Unrepeated(mail) => {
                        repeated.remove(key(p, mail).as_str())?;
                    }
                    Write::Class(class, t) => {
                        classes.insert(key(p, class).as_str(), json(t.as_ref()).as_slice())?;
                    }
                    Write::Probe(t) => {
                        probes.insert(key(p, "").as_str(), json(t).as_slice())?;
                    }
                    Write::ScanMemory(memory) => {
                        scan.insert(key(p, "").as_str(), json(memory).as_slice())?;
                    }
                    Write::BounceScanMemory(memory) => {
                        scan.insert(key(p, BOUNCES).as_str(), json(memory).as_slice())?;
                    }
                    Write::Failed(f) => {
                        failures.insert(key(p, &f.id).as_str(), json(f.as_ref()).as_slice())?;
                    }
                    Write::FailureForgotten(id) => {
                        failures.remove(key(p, id).as_str())?;
                    }
                    Write::History(class, h) => {
                        history.insert(key(p, class).as_str(), h.to_bytes().as_slice())?;
                    }
                    Write::Reset => {
                        // Every key of the probe: "probe/" up to "probe0" ('0' follows '/').
                        let (from, to) = (key(p, ""), format!("{p}0"));
                        for table in [
                            &mut in_flight,
                            &mut lost,
                            &mut seen,
                            &mut forged,
                            &mut repeated,
                            &mut classes,
                            &mut probes,
                            &mut scan,
                            &mut failures,
                            &mut history,
                        ] {
                            table.retain_in(from.as_str()..to.as_str(), |_, _| false)?;
                        }
                    }
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn json<T: serde::Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("ledger records serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        let (done, _) = oneshot::channel();
        Batch {
            probe: "p".into(),
            writes: Vec::new(),
            done,
        }
    }

    #[test]
    fn a_linger_takes_what_keeps_coming_up_to_a_group_and_stops_at_a_stop() {
        let (tx, mut queue) = mpsc::unbounded_channel();
        // Nothing comes: the group is as it was.
        let mut group = vec![batch()];
        assert!(!linger(&mut queue, &mut group));
        assert_eq!(group.len(), 1);
        // Writes queued meanwhile join; a group never grows past MAX_GROUP.
        for _ in 0..MAX_GROUP + 10 {
            tx.send(Job::Write(batch())).ok().unwrap();
        }
        assert!(!linger(&mut queue, &mut group));
        assert_eq!(group.len(), MAX_GROUP);
        // A stop ends the linger and is reported.
        let mut group = vec![batch()];
        tx.send(Job::Stop).ok().unwrap();
        assert!(linger(&mut queue, &mut group));
        assert_eq!(
            group.len(),
            12,
            "the eleven writes left before the stop joined"
        );
    }
}
