//! The durable store of every probe's books, in `agent.state_dir` (redb).
//!
//! One writer thread owns the database and commits writes in groups: whatever arrived while
//! the previous commit was syncing goes into the next transaction. A caller waits for the
//! commit of its own writes before acting (a canary is stored before its SMTP transaction
//! starts), yet 1,000 probes share one fsync instead of queueing for 1,000.
//!
//! One process per state directory: a lock file is taken first, so a second `run` or `once`
//! fails at once with a message naming the lock instead of waiting on or damaging the store.
//! The database is opened in redb's single-writer mode, which lets `mailcanary status` read it
//! while the daemon writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ConcurrencyMode, Database, ReadableTable as _, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::ledger::{DelayHistory, Ledger, Write};
use crate::setup::chain;

/// Every table maps `probe/…` keys to JSON records, but for [`HISTORY`]'s binary ones.
type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const IN_FLIGHT: Table = TableDefinition::new("in_flight");
const LOST: Table = TableDefinition::new("lost");
const SEEN: Table = TableDefinition::new("seen");
const FORGED: Table = TableDefinition::new("forged");
const REPEATED: Table = TableDefinition::new("repeated");
const CLASSES: Table = TableDefinition::new("classes");
const PROBES: Table = TableDefinition::new("probes");
const SCAN: Table = TableDefinition::new("scan");
/// Failed attempts with their transcripts, keyed `probe/id` ([`crate::ledger::failures`]).
const FAILURES: Table = TableDefinition::new("failures");
/// Delay histories, `probe/class`: binary ([`DelayHistory::to_bytes`]), not JSON, and written
/// once per half hour per class rather than with every delivery (see [`DelayHistory`]).
const HISTORY: Table = TableDefinition::new("history");

/// The key (after `probe/`) of a probe's bounce mailbox memory in the scan table.
const BOUNCES: &str = "bounces";

/// File name of the database inside the state directory.
pub const STORE_FILE: &str = "mailcanary.redb";
/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the state directory.
    #[error(
        "state directory {dir} is locked by another mailcanary process{holder} (lock file {lock}); \
         only one `run` or `once` may use a state directory at a time"
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// " (pid N)" when the lock file names its holder.
        holder: String,
    },
    /// The database exists but cannot be used.
    #[error(
        "cannot open the state store {path}: {reason}. If the file is damaged, move it aside \
         (mv {path} {path}.broken) and start again: canaries in flight and counters then start \
         from zero"
    )]
    Unusable {
        /// The database file.
        path: PathBuf,
        /// What redb or the file system said.
        reason: String,
    },
    /// The directory or lock file cannot be created.
    #[error("cannot use state directory {dir}: {reason}")]
    Directory {
        /// The state directory.
        dir: PathBuf,
        /// What the file system said.
        reason: String,
    },
}

/// Why a write did not reach the disk. Every batch of a failed group gets a clone, so the
/// database's error is shared.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The database failed earlier and could not be reopened.
    #[error("cannot reopen the state store {}", path.display())]
    Reopen {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Arc<redb::DatabaseError>,
    },
    /// The transaction failed (disk full or read-only, an I/O error).
    #[error("cannot commit to the state store {}", path.display())]
    Write {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Arc<redb::Error>,
    },
    /// The writer thread has stopped: the agent is shutting down.
    #[error("the store writer has stopped")]
    Stopped,
}

/// The result of a commit, as the waiting caller sees it.
pub type Committed = Result<(), CommitError>;

struct Batch {
    probe: String,
    writes: Vec<Write>,
    done: oneshot::Sender<Committed>,
}

/// What the writer thread is asked to do.
enum Job {
    /// Commit these writes.
    Write(Batch),
    /// Commit what came before, then stop.
    Stop,
}

/// A handle to the store's writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    queue: mpsc::UnboundedSender<Job>,
    errors: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
}

/// The open store: the handle, the books as stored, and the means to shut it down cleanly.
pub struct Opened {
    /// Submit writes here.
    pub store: Store,
    /// Every probe's books, by probe name, as of the last commit.
    pub ledgers: BTreeMap<String, Ledger>,
    /// The writer thread; see [`Store::stop`].
    pub writer: std::thread::JoinHandle<()>,
    /// Held for as long as the process uses the state directory.
    pub lock: File,
}

impl Store {
    /// Locks `dir`, opens (or creates) the store and loads every probe's books.
    pub fn open(dir: &Path) -> Result<Opened, OpenError> {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::Directory {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let lock = take_lock(dir)?;
        let path = dir.join(STORE_FILE);
        let unusable = |reason: String| OpenError::Unusable {
            path: path.clone(),
            reason,
        };
        // A damaged file must give an error, not a panic deep inside the database.
        let db =
            std::panic::catch_unwind(|| builder().set_check_integrity_on_open(true).create(&path))
                .map_err(|_| unusable("the database panicked while opening it".into()))?
                .map_err(|e| unusable(e.to_string()))?;
        create_tables(&db).map_err(|e| unusable(chain(&e)))?;
        let ledgers = load(&db).map_err(|e| unusable(chain(&e)))?;
        let (queue, rx) = mpsc::unbounded_channel();
        let errors = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(0));
        let writer = {
            let (path, generation) = (path.clone(), Arc::clone(&generation));
            std::thread::Builder::new()
                .name("mailcanary-store".into())
                .spawn(move || Writer::new(db, path, generation).run(rx))
                .map_err(|e| unusable(format!("cannot start the writer thread: {e}")))?
        };
        Ok(Opened {
            store: Store {
                queue,
                errors,
                generation,
            },
            ledgers,
            writer,
            lock,
        })
    }

    /// Queues writes for `probe`; the receiver resolves once they are committed (or not).
    ///
    /// Queuing does not wait, so callers can queue while holding their ledger's lock: writes
    /// then reach the store in the order the ledger changed.
    pub fn submit(&self, probe: &str, writes: Vec<Write>) -> oneshot::Receiver<Committed> {
        let (done, rx) = oneshot::channel();
        if writes.is_empty() {
            let _ = done.send(Ok(()));
        } else {
            let batch = Batch {
                probe: probe.to_string(),
                writes,
                done,
            };
            if let Err(mpsc::error::SendError(Job::Write(batch))) =
                self.queue.send(Job::Write(batch))
            {
                let _ = batch.done.send(Err(CommitError::Stopped));
            }
        }
        rx
    }

    /// Waits for a commit; a failure is logged and counted, never fatal: the agent keeps
    /// probing with its books in memory.
    pub async fn wait_committed(&self, pending: oneshot::Receiver<Committed>) -> bool {
        let result = pending.await.unwrap_or_else(|_| Err(CommitError::Stopped));
        match result {
            Ok(()) => true,
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %chain(&e), "state store write failed; continuing in memory");
                false
            }
        }
    }

    /// Lets the writer commit everything queued so far, then stop; waits for it. Writes
    /// submitted afterwards fail (and are counted as state errors).
    pub fn stop(&self, writer: std::thread::JoinHandle<()>) {
        let _ = self.queue.send(Job::Stop);
        if writer.join().is_err() {
            tracing::error!("the state store writer panicked");
        }
    }

    /// Changes each time the writer had to reopen the database after an I/O error. The writes
    /// that failed meanwhile are lost on disk, so every probe writes its whole books once when
    /// it sees a new generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Failed commits since start (`mailcanary_state_errors_total`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
impl Store {
    /// A store that acknowledges every write at once from a task on the calling runtime, with
    /// no disk and no thread: tests with paused time then never wait on anything tokio cannot
    /// see (which would let the paused clock jump ahead). Writes after [`Store::stop`]-like
    /// shutdown (dropping the runtime) fail and are counted in [`Store::errors`].
    pub(crate) fn acknowledging() -> Store {
        let (queue, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Write(batch) => {
                        let _ = batch.done.send(Ok(()));
                    }
                    Job::Stop => break,
                }
            }
        });
        Store {
            queue,
            errors: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Stops an [`Store::acknowledging`] store: later writes fail and are counted.
    pub(crate) fn stop_acknowledging(&self) {
        let _ = self.queue.send(Job::Stop);
    }
}

/// Reads every probe's books, for `mailcanary status`. With no agent running it opens the
/// store like an agent would (repairing it after a crash); while one runs it opens it read-only
/// next to the writer, which redb's single-writer mode allows.
pub fn read(dir: &Path) -> Result<BTreeMap<String, Ledger>, OpenError> {
    let path = dir.join(STORE_FILE);
    if !path.exists() {
        return Err(OpenError::Unusable {
            path,
            reason: "no state store here yet (nothing has run with this state_dir)".into(),
        });
    }
    match Store::open(dir) {
        Ok(opened) => {
            opened.store.stop(opened.writer);
            Ok(opened.ledgers)
        }
        Err(OpenError::Locked { .. }) => {
            let db = builder()
                .open_read_only(&path)
                .map_err(|e| OpenError::Unusable {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            load(&db).map_err(|e| OpenError::Unusable {
                path,
                reason: chain(&e),
            })
        }
        Err(e) => Err(e),
    }
}

/// Every open of the store uses redb's single-writer mode: the agent writes, `status` may read
/// alongside it.
fn builder() -> redb::Builder {
    let mut builder = Database::builder();
    builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    builder
}

/// Opens and flocks the lock file. A symbolic link there is refused, not followed (`O_NOFOLLOW`,
/// in the same call that opens, so there is no check-then-open race): following it would let
/// whoever can write the state directory make the agent write its pid into any file it can
/// write. The file is never truncated before the lock is held, so an agent that is refused
/// leaves the running one's pid in place.
fn take_lock(dir: &Path) -> Result<File, OpenError> {
    use std::os::unix::fs::OpenOptionsExt as _;

    let path = dir.join(LOCK_FILE);
    let refused = |reason: String| OpenError::Directory {
        dir: dir.to_path_buf(),
        reason: format!("lock file {}: {reason}", path.display()),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("is a symbolic link; refusing to follow it".into()),
            _ => refused(e.to_string()),
        })?;
    // Asked of the open file, not the path: what was opened is what is checked.
    match file.metadata() {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(refused("is not a regular file".into())),
        Err(e) => return Err(refused(e.to_string())),
    }
    match file.try_lock() {
        Ok(()) => {
            // Diagnostics only: the lock itself is the flock, released by the kernel on exit.
            // Truncated only now that the lock is ours.
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            Err(OpenError::Locked {
                dir: dir.to_path_buf(),
                lock: path.clone(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(OpenError::Directory {
            dir: dir.to_path_buf(),
            reason: format!("lock file {}: {e}", path.display()),
        }),
    }
}

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    for table in [
        IN_FLIGHT, LOST, SEEN, FORGED, REPEATED, CLASSES, PROBES, SCAN, FAILURES, HISTORY,
    ] {
        txn.open_table(table)?;
    }
    txn.commit()?;
    Ok(())
}

/// Why the stored books could not be read back.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    /// The database refused.
    #[error(transparent)]
    Database(#[from] redb::Error),
    /// A key without the `probe/` prefix.
    #[error("malformed {what} key {key:?}")]
    Key {
        /// The table's records.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// A record that does not decode.
    #[error("malformed {what} record {key:?}")]
    Record {
        /// The table's records.
        what: &'static str,
        /// The key.
        key: String,
        /// What the decoder said.
        #[source]
        source: serde_json::Error,
    },
}

/// Keys are `probe/…`: probe names cannot contain `/`, so a prefix scan is exact.
fn key(probe: &str, rest: &str) -> String {
    format!("{probe}/{rest}")
}

/// Turns a stored record (with the key's part after the probe) back into a write.
type Decode = fn(&str, &[u8]) -> serde_json::Result<Write>;

/// Every table, what its records are called in errors, and how to read them.
const TABLES: [(Table, &str, Decode); 10] = [
    (IN_FLIGHT, "in-flight", |_, v| {
        serde_json::from_slice(v).map(Write::InFlight)
    }),
    (LOST, "lost", |_, v| {
        serde_json::from_slice(v).map(Write::Lost)
    }),
    (SEEN, "seen", |id, v| {
        serde_json::from_slice(v).map(|s| Write::Seen(id.into(), s))
    }),
    (FORGED, "forged", |mail, v| {
        serde_json::from_slice(v).map(|at| Write::Forged(mail.into(), at))
    }),
    (REPEATED, "repeated", |mail, v| {
        serde_json::from_slice(v).map(|at| Write::Repeated(mail.into(), at))
    }),
    (CLASSES, "class", |class, v| {
        serde_json::from_slice(v).map(|t| Write::Class(class.into(), Box::new(t)))
    }),
    (PROBES, "probe", |_, v| {
        serde_json::from_slice(v).map(Write::Probe)
    }),
    (SCAN, "scan memory", |which, v| {
        serde_json::from_slice(v).map(match which {
            BOUNCES => Write::BounceScanMemory,
            _ => Write::ScanMemory,
        })
    }),
    (FAILURES, "failure", |_, v| {
        serde_json::from_slice(v).map(|f| Write::Failed(Box::new(f)))
    }),
    (HISTORY, "history", |class, v| {
        Ok(Write::History(
            class.into(),
            Box::new(DelayHistory::from_stored(v)),
        ))
    }),
];

fn load(db: &impl redb::ReadableDatabase) -> Result<BTreeMap<String, Ledger>, LoadError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let mut ledgers: BTreeMap<String, Ledger> = BTreeMap::new();
    for (definition, what, decode) in TABLES {
        // A store of an older version, read while its agent runs, lacks the newer tables.
        let table = match txn.open_table(definition) {
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            opened => opened.map_err(redb::Error::from)?,
        };
        for entry in table.iter().map_err(redb::Error::from)? {
            let (k, v) = entry.map_err(redb::Error::from)?;
            let key = k.value();
            let (probe, rest) = key.split_once('/').ok_or_else(|| LoadError::Key {
                what,
                key: key.to_string(),
            })?;
            let write = decode(rest, v.value()).map_err(|source| LoadError::Record {
                what,
                key: key.to_string(),
                source,
            })?;
            ledgers.entry(probe.to_string()).or_default().replay(write);
        }
    }
    Ok(ledgers)
}

mod writer;

use writer::Writer;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod failures_tests;
