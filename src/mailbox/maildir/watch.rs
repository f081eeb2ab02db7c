//! Being told of new mail files by the kernel (inotify, through the `notify` crate).
//!
//! The watcher runs its own thread and calls back on every event of the watched `new/` and
//! `cur/` directories. The callback does two things, both cheap and neither waiting on the
//! probe: it stamps the time a mail key is first named by an event (that stamp, not the later
//! scan, is the mail's `seen_ms`, so the measured delay does not include the time until the next
//! look), and it sends [`Signal::News`] down a channel the probe's `wait_for_news` listens on.
//!
//! Only a key never noticed before is news: a reader moving a known mail to `cur/` or flagging
//! it renames the file, and our own deletions remove files; neither should wake a rescan. Bursts
//! coalesce on their own, because every scan first drains the signals already queued: whatever
//! they announced, the listing that follows sees.

use std::path::{Path, PathBuf};

use notify::event::{CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::scan::{Folder, Noticed, mail_key};
use crate::clock;

/// What the watcher's thread tells the probe.
#[derive(Debug)]
pub enum Signal {
    /// A mail file not seen before appeared, or the kernel dropped events: rescan.
    News,
    /// The watch broke (an error, or a watched directory went away): no more events will come.
    Lost(WatchError),
}

/// Why the watch could not start, or stopped. The Maildir is still rescanned every
/// `poll_interval`; the adapter reports this as a [`MailboxError`](crate::mailbox::MailboxError)
/// of the `idle` stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// No watcher could be created (no inotify instance left, for example).
    #[error("cannot start a watcher")]
    Start(#[source] notify::Error),
    /// A directory could not be watched (missing, or the inotify watch limit reached).
    #[error("cannot watch {}", dir.display())]
    Watch {
        /// The `new/` or `cur/` directory.
        dir: PathBuf,
        /// What the watcher said.
        #[source]
        source: notify::Error,
    },
    /// The watcher's thread reported an error: events may be lost from now on.
    #[error("the watcher failed")]
    Failed(#[source] notify::Error),
    /// A watched directory was removed or renamed.
    #[error("{} was removed or renamed", dir.display())]
    DirGone {
        /// The directory.
        dir: PathBuf,
    },
    /// The watcher's thread is gone.
    #[error("the watcher stopped")]
    Stopped,
    /// The blocking task starting the watch died.
    #[error("the task starting the watch failed")]
    Task(#[source] tokio::task::JoinError),
}

/// A running watcher and the receiving end of its signals. Dropping it stops the watcher.
pub struct Watching {
    _watcher: RecommendedWatcher,
    signals: UnboundedReceiver<Signal>,
}

impl Watching {
    /// Watches `new/` and `cur/` of every folder (not recursively). Fails as a whole if any
    /// directory cannot be watched, e.g. when the inotify watch limit is reached.
    pub fn start(folders: &[Folder], noticed: Noticed) -> Result<Watching, WatchError> {
        let (tx, signals) = mpsc::unbounded_channel();
        let dirs: Vec<PathBuf> = folders.iter().flat_map(Folder::mail_dirs).collect();
        let watched = dirs.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            let ms = clock::now_ms();
            on_event(event, ms, &watched, &noticed, &tx);
        })
        .map_err(WatchError::Start)?;
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    dir: dir.clone(),
                    source,
                })?;
        }
        Ok(Watching {
            _watcher: watcher,
            signals,
        })
    }

    /// Takes the signals already queued, without waiting. Returns whether any was news.
    pub fn drain(&mut self) -> Result<bool, WatchError> {
        let mut news = false;
        loop {
            match self.signals.try_recv() {
                Ok(Signal::News) => news = true,
                Ok(Signal::Lost(why)) => return Err(why),
                Err(TryRecvError::Empty) => return Ok(news),
                Err(TryRecvError::Disconnected) => return Err(WatchError::Stopped),
            }
        }
    }

    /// Waits for news, at most `max`; the rest of a burst is drained with it.
    pub async fn wait(&mut self, max: std::time::Duration) -> Result<(), WatchError> {
        match tokio::time::timeout(max, self.signals.recv()).await {
            Err(_) => Ok(()),
            Ok(None) => Err(WatchError::Stopped),
            Ok(Some(Signal::Lost(why))) => Err(why),
            Ok(Some(Signal::News)) => self.drain().map(|_| ()),
        }
    }
}

/// What one event means to us.
#[derive(Debug, PartialEq, Eq)]
enum Meaning<'a> {
    /// A file appeared under this path (created, or renamed into a watched directory).
    Appeared(&'a Path),
    /// The kernel's queue overflowed: events were lost.
    Rescan,
    /// A watched directory itself was removed or renamed.
    DirGone(&'a Path),
    /// Nothing for us: reads, writes, deletions, renames away.
    Nothing,
}

fn meaning<'a>(event: &'a Event, watched: &[PathBuf]) -> Meaning<'a> {
    if event.need_rescan() {
        return Meaning::Rescan;
    }
    let last = event.paths.last();
    match (&event.kind, last) {
        (EventKind::Create(CreateKind::Folder), _) => Meaning::Nothing,
        (EventKind::Create(_), Some(path))
        | (
            EventKind::Modify(ModifyKind::Name(
                RenameMode::To | RenameMode::Both | RenameMode::Any,
            )),
            Some(path),
        ) => Meaning::Appeared(path),
        (EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)), _) => event
            .paths
            .iter()
            .find(|p| watched.contains(p))
            .map_or(Meaning::Nothing, |p| Meaning::DirGone(p)),
        _ => Meaning::Nothing,
    }
}

/// The watcher thread's callback. `ms` is taken on entry, as close to the kernel's event as
/// this process gets.
fn on_event(
    event: notify::Result<Event>,
    ms: u64,
    watched: &[PathBuf],
    noticed: &Noticed,
    tx: &UnboundedSender<Signal>,
) {
    let signal = match event {
        Err(e) => Some(Signal::Lost(WatchError::Failed(e))),
        Ok(event) => match meaning(&event, watched) {
            Meaning::Appeared(path) => path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(mail_key)
                .filter(|key| noticed.note(key, ms))
                .map(|_| Signal::News),
            Meaning::Rescan => Some(Signal::News),
            Meaning::DirGone(dir) => Some(Signal::Lost(WatchError::DirGone {
                dir: dir.to_path_buf(),
            })),
            Meaning::Nothing => None,
        },
    };
    if let Some(signal) = signal {
        // The receiver is gone only while the mailbox drops the watcher: nothing to tell.
        let _ = tx.send(signal);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use notify::event::{AccessKind, AccessMode, Flag, RemoveKind};

    use super::super::scan::tests::{ORDINARY, maildir, put};
    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    #[test]
    fn only_appearing_files_and_lost_events_are_news() {
        let watched = [PathBuf::from("/m/new"), PathBuf::from("/m/cur")];
        let name = |mode| EventKind::Modify(ModifyKind::Name(mode));
        let file = Path::new("/m/new/1.A");
        let cases = [
            (
                event(EventKind::Create(CreateKind::File), &["/m/new/1.A"]),
                Meaning::Appeared(file),
            ),
            (
                event(name(RenameMode::To), &["/m/new/1.A"]),
                Meaning::Appeared(file),
            ),
            (
                event(name(RenameMode::Both), &["/m/tmp/1.A", "/m/new/1.A"]),
                Meaning::Appeared(file),
            ),
            (
                event(EventKind::Create(CreateKind::Folder), &["/m/new/d"]),
                Meaning::Nothing,
            ),
            (
                event(name(RenameMode::From), &["/m/new/1.A"]),
                Meaning::Nothing,
            ),
            (
                event(EventKind::Remove(RemoveKind::File), &["/m/new/1.A"]),
                Meaning::Nothing,
            ),
            (
                event(
                    EventKind::Access(AccessKind::Close(AccessMode::Read)),
                    &["/m/new/1.A"],
                ),
                Meaning::Nothing,
            ),
            (
                event(
                    EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)),
                    &["/m/new/1.A"],
                ),
                Meaning::Nothing,
            ),
            (
                event(EventKind::Remove(RemoveKind::Folder), &["/m/new"]),
                Meaning::DirGone(Path::new("/m/new")),
            ),
            (
                event(name(RenameMode::From), &["/m/cur"]),
                Meaning::DirGone(Path::new("/m/cur")),
            ),
            (
                Event::new(EventKind::Other).set_flag(Flag::Rescan),
                Meaning::Rescan,
            ),
        ];
        for (event, expected) in &cases {
            assert_eq!(&meaning(event, &watched), expected, "{event:?}");
        }
    }

    #[test]
    fn a_known_key_is_not_news() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let noticed = Noticed::default();
        let created = || Ok(event(EventKind::Create(CreateKind::File), &["/m/new/1.A"]));
        let flagged = || {
            let kind = EventKind::Modify(ModifyKind::Name(RenameMode::To));
            Ok(event(kind, &["/m/cur/1.A:2,S"]))
        };
        on_event(created(), 7, &[], &noticed, &tx);
        on_event(flagged(), 9, &[], &noticed, &tx);
        assert!(matches!(rx.try_recv(), Ok(Signal::News)));
        assert!(rx.try_recv().is_err(), "the rename of a known mail woke us");
        assert_eq!(noticed.first("1.A"), Some(7));
    }

    #[tokio::test]
    async fn a_delivery_is_announced_with_its_time() {
        let root = maildir();
        let folders = vec![Folder::resolve(root.path(), "INBOX").unwrap()];
        let noticed = Noticed::default();
        let mut watching = Watching::start(&folders, noticed.clone()).unwrap();
        // As an MDA delivers: written in tmp/, then renamed into new/.
        let tmp = put(root.path(), "tmp/600.A.h", ORDINARY);
        let before = clock::now_ms();
        fs::rename(&tmp, root.path().join("new/600.A.h")).unwrap();
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            watching.wait(Duration::from_secs(3600)),
        );
        waited.await.expect("no event within 5 s").unwrap();
        let at = noticed.first("600.A.h").expect("noticed by the watcher");
        assert!(at >= before && at <= clock::now_ms());
    }

    #[tokio::test]
    async fn a_removed_directory_breaks_the_watch() {
        let root = maildir();
        let folders = vec![Folder::resolve(root.path(), "Junk").unwrap()];
        let mut watching = Watching::start(&folders, Noticed::default()).unwrap();
        fs::remove_dir_all(root.path().join(".Junk")).unwrap();
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            watching.wait(Duration::from_secs(3600)),
        );
        let err = waited.await.expect("no event within 5 s").unwrap_err();
        assert!(matches!(err, WatchError::DirGone { .. }), "{err:?}");
        assert!(err.to_string().contains(".Junk/"), "{err}");
    }

    #[test]
    fn a_missing_directory_cannot_be_watched() {
        let root = maildir();
        let folders = vec![Folder::resolve(root.path(), "Spam").unwrap()];
        let err = Watching::start(&folders, Noticed::default()).err().unwrap();
        let dir = root.path().join(".Spam/new");
        assert_eq!(err.to_string(), format!("cannot watch {}", dir.display()));
        let chain = crate::setup::chain(&err);
        assert!(
            chain.starts_with(&format!("cannot watch {}: ", dir.display())),
            "the cause is kept: {chain}"
        );
    }
}
