//! Maildir receiver: a Maildir on this host, watched with inotify, rescanned as a safety net.
//!
//! Folders are laid out Maildir++ as Dovecot does: `INBOX` is the Maildir itself, any other
//! folder `NAME` is its `.NAME` subdirectory; mail lives in each folder's `new/` and `cur/`.
//!
//! The kernel tells us when a mail file appears (`watch.rs`), so a canary is seen within
//! milliseconds of delivery rather than at the next poll, and its `seen_ms` is the moment the
//! event arrived. The watch is only an accelerator: every look lists the folders in full
//! (`scan.rs`), and `wait_for_news` falls back to waiting out the poll interval, so a dropped
//! event, an exhausted inotify limit or a folder recreated under us costs latency, not mail.
//!
//! File system work runs on the blocking pool (`spawn_blocking`), never on a runtime thread:
//! checking the folders, starting a watch (inotify calls and the watcher's thread), listing and
//! reading heads (`scan.rs`), and deleting or moving (`clean.rs`). Listing a large Maildir is not
//! a quick call, and on a network file system even a `stat` can stall, which on a runtime thread
//! would stall every other probe's timers with it. Only draining the watch's channel, which does
//! not wait, runs in place. Clean-up touches only the files of the canaries handed back.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

mod clean;
mod scan;
mod watch;

use self::clean::Action;
pub use self::scan::FolderNameError;
use self::scan::{Cache, Folder, Noticed, folder_dir};
use self::watch::{WatchError, Watching};
use super::{Look, MailId, Mailbox, MailboxError, MailboxStage, Step, Steps};
use crate::config::{Cleanup, MaildirConfig};
use crate::setup::{SetupError, chain};

/// A Maildir, the heads read so far, and the watch on it.
pub struct MaildirMailbox {
    config: MaildirConfig,
    folders: Arc<[Folder]>,
    cache: Cache,
    noticed: Noticed,
    watching: Option<Watching>,
    /// Why the watch broke, learnt while draining it before a scan; the next wait reports it.
    broken: Option<WatchError>,
    /// Whether the failure to watch was logged already: once is enough, rescans go on.
    watch_failed: bool,
    /// How long the last look's scan and clean-up took.
    steps: Steps,
}

impl MaildirMailbox {
    /// Deletes or moves these mail files on the blocking pool.
    async fn apply(&mut self, mails: &[MailId], cleanup: Cleanup) -> Result<(), MailboxError> {
        if mails.is_empty() || cleanup == Cleanup::Keep {
            return Ok(());
        }
        let files = self.files_of(mails);
        let root = self.config.path.clone();
        let task = tokio::task::spawn_blocking(move || match action(&root, &cleanup)? {
            Some(action) => clean::apply(&files, &action),
            None => Ok(()),
        });
        joined(MailboxStage::Cleanup, task.await)?
    }

    /// Prepares the adapter. Folder names that are not Maildir++ names fail here, at start-up;
    /// whether the folders exist is checked on use, as a server's would be.
    pub fn new(config: MaildirConfig) -> Result<MaildirMailbox, SetupError> {
        let path = &config.path;
        let bad_name = |key| {
            move |source| SetupError::MaildirFolder {
                maildir: path.clone(),
                key,
                source,
            }
        };
        let folders = config
            .folders
            .iter()
            .map(|name| Folder::resolve(&config.path, name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad_name("folders"))?;
        if let Cleanup::Move(target) = &config.cleanup {
            folder_dir(&config.path, target).map_err(bad_name("cleanup"))?;
        }
        Ok(MaildirMailbox {
            config,
            folders: folders.into(),
            cache: Cache::new(),
            noticed: Noticed::default(),
            watching: None,
            broken: None,
            watch_failed: false,
            steps: Steps::default(),
        })
    }

    /// Makes sure a watch is running before the folders are listed, so a mail delivered after
    /// the listing is announced. A broken watch is replaced, and its failure kept for the next
    /// wait to report.
    async fn ensure_watching(&mut self) {
        if let Some(watching) = &mut self.watching {
            match watching.drain() {
                Ok(_) => return,
                Err(why) => {
                    self.watching = None;
                    self.broken = Some(why);
                }
            }
        }
        let (folders, noticed) = (Arc::clone(&self.folders), self.noticed.clone());
        let started = tokio::task::spawn_blocking(move || Watching::start(&folders, noticed))
            .await
            .unwrap_or_else(|e| Err(WatchError::Task(e)));
        match started {
            Ok(watching) => {
                if self.watch_failed {
                    tracing::info!(maildir = %self.config.path.display(), "watching the Maildir again");
                }
                self.watch_failed = false;
                self.watching = Some(watching);
            }
            Err(why) if !self.watch_failed => {
                self.watch_failed = true;
                tracing::warn!(
                    maildir = %self.config.path.display(), error = %chain(&why),
                    "cannot watch the Maildir; rescanning every poll_interval instead"
                );
            }
            Err(why) => tracing::debug!(error = %chain(&why), "still cannot watch the Maildir"),
        }
    }

    fn idle_error(&self, why: WatchError) -> MailboxError {
        let what = format!("{}: watching: {}", self.config.path.display(), chain(&why));
        MailboxError::new(MailboxStage::Idle, what)
    }

    /// The canaries' files as last listed, with their folders. Mails not from the last scan are
    /// not ours to touch.
    fn files_of(&self, mails: &[MailId]) -> Vec<(MailId, PathBuf, Folder)> {
        mails
            .iter()
            .filter_map(|id| {
                let entry = self.cache.get(id)?;
                let folder = self.folders.iter().find(|f| f.name == id.folder)?;
                Some((id.clone(), entry.path.clone(), folder.clone()))
            })
            .collect()
    }
}

/// Every watched `new/` and `cur/` can be opened: the Maildir equivalent of connecting.
/// Blocking: run it on the blocking pool.
fn check_folders(folders: &[Folder]) -> Result<(), MailboxError> {
    for folder in folders {
        for dir in folder.mail_dirs() {
            fs::read_dir(&dir).map_err(|e| {
                let what = format!("folder {}: cannot open {}: {e}", folder.name, dir.display());
                MailboxError::new(MailboxStage::Connect, what)
            })?;
        }
    }
    Ok(())
}

/// What clean-up does, with a move's target checked: it must exist, as nothing is created.
/// Blocking: run it on the blocking pool.
fn action(root: &Path, cleanup: &Cleanup) -> Result<Option<Action>, MailboxError> {
    let target = match cleanup {
        Cleanup::Keep => return Ok(None),
        Cleanup::Delete => return Ok(Some(Action::Delete)),
        Cleanup::Move(target) => target,
    };
    let cur = folder_dir(root, target)
        .map_err(|e| MailboxError::new(MailboxStage::Cleanup, e.to_string()))?
        .join("cur");
    if !cur.is_dir() {
        let what = format!("folder {target} does not exist ({})", cur.display());
        return Err(MailboxError::new(MailboxStage::Cleanup, what));
    }
    Ok(Some(Action::MoveTo(cur)))
}

/// A blocking task that died (panicked or was cancelled) is a failure of its stage.
fn joined<T>(
    stage: MailboxStage,
    result: Result<T, tokio::task::JoinError>,
) -> Result<T, MailboxError> {
    result.map_err(|e| MailboxError::new(stage, format!("Maildir task failed: {e}")))
}

#[async_trait]
impl Mailbox for MaildirMailbox {
    fn protocol(&self) -> &'static str {
        "maildir"
    }

    async fn canaries(&mut self) -> Result<Look, MailboxError> {
        let folders = Arc::clone(&self.folders);
        let task = tokio::task::spawn_blocking(move || check_folders(&folders));
        joined(MailboxStage::Connect, task.await)??;
        self.ensure_watching().await;
        let folders = Arc::clone(&self.folders);
        let noticed = self.noticed.clone();
        let mut cache = std::mem::take(&mut self.cache);
        let task = tokio::task::spawn_blocking(move || {
            let found = scan::scan(&folders, &mut cache, &noticed);
            (cache, found)
        });
        let scanned = self.steps.time(Step::Scan, task).await;
        let (cache, found) = joined(MailboxStage::Search, scanned)?;
        self.cache = cache;
        found
    }

    fn steps(&self) -> Steps {
        self.steps
    }

    async fn clean_up(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        let cleanup = self.config.cleanup.clone();
        let start = tokio::time::Instant::now();
        let result = self.apply(mails, cleanup).await;
        if !mails.is_empty() {
            self.steps.record(Step::Cleanup, start.elapsed());
        }
        result
    }

    async fn quarantine(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        match self.config.forged.clone() {
            Some(folder) => self.apply(mails, Cleanup::Move(folder)).await,
            None => Ok(()),
        }
    }

    async fn check_login(&mut self) -> Result<(), MailboxError> {
        let folders = Arc::clone(&self.folders);
        let (root, cleanup) = (self.config.path.clone(), self.config.cleanup.clone());
        let task = tokio::task::spawn_blocking(move || {
            check_folders(&folders)?;
            action(&root, &cleanup).map(|_| ())
        });
        joined(MailboxStage::Connect, task.await)?
    }

    fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }

    async fn wait_for_news(&mut self, max: Duration) -> Result<(), MailboxError> {
        if let Some(why) = self.broken.take() {
            return Err(self.idle_error(why));
        }
        let Some(watching) = &mut self.watching else {
            tokio::time::sleep(max).await;
            return Ok(());
        };
        match watching.wait(max).await {
            Ok(()) => Ok(()),
            Err(why) => {
                // The next look starts a new watch.
                self.watching = None;
                Err(self.idle_error(why))
            }
        }
    }

    async fn close(&mut self) {
        self.watching = None;
        self.broken = None;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use super::scan::tests::{CANARY, ORDINARY, maildir, put};
    use super::*;
    use crate::clock;

    fn mailbox(root: &Path, cleanup: Cleanup) -> MaildirMailbox {
        MaildirMailbox::new(MaildirConfig {
            path: root.to_path_buf(),
            folders: vec!["INBOX".into(), "Junk".into()],
            poll_interval: Duration::from_secs(600),
            cleanup,
            forged: None,
        })
        .expect("valid config")
    }

    /// Delivers like an MDA: written in `tmp/`, renamed into `new/`.
    fn deliver(root: &Path, name: &str, text: &str) -> PathBuf {
        let tmp = put(root, &format!("tmp/{name}"), text);
        let path = root.join("new").join(name);
        fs::rename(tmp, &path).unwrap();
        path
    }

    async fn wait_briefly(mailbox: &mut MaildirMailbox) {
        let wait = mailbox.wait_for_news(Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("no news within 5 s")
            .unwrap();
    }

    #[tokio::test]
    async fn finds_and_deletes_canaries_and_nothing_else() {
        let root = maildir();
        let r = root.path();
        let ordinary = put(r, "cur/1.A:2,S", ORDINARY);
        put(r, "new/2.B", CANARY);
        put(r, ".Junk/cur/3.C:2,", CANARY);
        let mut mailbox = mailbox(r, Cleanup::Delete);
        let found = mailbox.canaries().await.unwrap().arrivals;
        let ids: Vec<String> = found.iter().map(|a| a.id.to_string()).collect();
        assert_eq!(ids, ["INBOX/2.B", "Junk/3.C"]);
        mailbox.clean_up(&[found[0].id.clone()]).await.unwrap();
        assert!(!r.join("new/2.B").exists());
        assert!(r.join(".Junk/cur/3.C:2,").exists());
        assert_eq!(fs::read_to_string(ordinary).unwrap(), ORDINARY);
        assert_eq!(mailbox.canaries().await.unwrap().arrivals.len(), 1);
    }

    #[tokio::test]
    async fn a_delivery_ends_the_wait_and_is_seen_when_announced() {
        let root = maildir();
        let mut mailbox = mailbox(root.path(), Cleanup::Keep);
        assert!(mailbox.canaries().await.unwrap().arrivals.is_empty());
        deliver(root.path(), "10.A", CANARY);
        wait_briefly(&mut mailbox).await;
        let woke_ms = clock::now_ms();
        // Let the clock move on, so a seen time taken by the scan would show.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let found = mailbox.canaries().await.unwrap().arrivals;
        assert_eq!(found.len(), 1);
        assert!(
            found[0].seen_ms <= woke_ms,
            "seen at the scan, not the event"
        );
    }

    #[tokio::test]
    async fn own_deletions_and_known_mail_do_not_end_the_wait() {
        let root = maildir();
        let r = root.path();
        let known = put(r, "new/20.A", ORDINARY);
        put(r, "new/21.B", CANARY);
        let mut mailbox = mailbox(r, Cleanup::Delete);
        let found = mailbox.canaries().await.unwrap().arrivals;
        mailbox.clean_up(&[found[0].id.clone()]).await.unwrap();
        // A reader moving known mail to cur/ renames it: not news either.
        fs::rename(known, r.join("cur/20.A:2,S")).unwrap();
        let start = Instant::now();
        mailbox
            .wait_for_news(Duration::from_millis(300))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300), "woken early");
    }

    #[tokio::test]
    async fn news_that_came_before_the_scan_is_not_news_after_it() {
        let root = maildir();
        let mut mailbox = mailbox(root.path(), Cleanup::Keep);
        mailbox.canaries().await.unwrap();
        deliver(root.path(), "30.A", CANARY);
        wait_briefly(&mut mailbox).await;
        deliver(root.path(), "31.B", CANARY);
        // Give the event time to be queued: the scan must drain it, since it lists the file.
        let noticed = mailbox.noticed.clone();
        let announced = async {
            while noticed.first("31.B").is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), announced)
            .await
            .expect("no event within 5 s");
        assert_eq!(mailbox.canaries().await.unwrap().arrivals.len(), 2);
        let start = Instant::now();
        mailbox
            .wait_for_news(Duration::from_millis(200))
            .await
            .unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "woken by old news"
        );
    }

    #[tokio::test]
    async fn move_goes_to_the_target_folder() {
        let root = maildir();
        let r = root.path();
        put(r, "new/40.A", CANARY);
        let mut mailbox = mailbox(r, Cleanup::Move("Junk".into()));
        let found = mailbox.canaries().await.unwrap().arrivals;
        mailbox.clean_up(&[found[0].id.clone()]).await.unwrap();
        assert!(r.join(".Junk/cur/40.A:2,").is_file());
        assert!(!r.join("new/40.A").exists());
    }

    #[tokio::test]
    async fn move_to_a_missing_folder_fails_and_creates_nothing() {
        let root = maildir();
        let r = root.path();
        let canary = put(r, "new/50.A", CANARY);
        let mut mailbox = mailbox(r, Cleanup::Move("Trash".into()));
        let found = mailbox.canaries().await.unwrap().arrivals;
        let err = mailbox.clean_up(&[found[0].id.clone()]).await.unwrap_err();
        assert_eq!(err.stage, MailboxStage::Cleanup);
        assert!(err.message.contains("Trash"), "{err}");
        assert!(canary.exists() && !r.join(".Trash").exists());
        assert_eq!(
            mailbox.check_login().await.unwrap_err().stage,
            MailboxStage::Cleanup
        );
    }

    #[tokio::test]
    async fn keep_touches_nothing() {
        let root = maildir();
        let canary = put(root.path(), "new/60.A", CANARY);
        let mut mailbox = mailbox(root.path(), Cleanup::Keep);
        let found = mailbox.canaries().await.unwrap().arrivals;
        mailbox.clean_up(&[found[0].id.clone()]).await.unwrap();
        assert_eq!(fs::read_to_string(canary).unwrap(), CANARY);
    }

    #[tokio::test]
    async fn a_missing_maildir_is_a_connect_error() {
        let root = maildir();
        let mut mailbox = mailbox(&root.path().join("nowhere"), Cleanup::Delete);
        assert_eq!(
            mailbox.check_login().await.unwrap_err().stage,
            MailboxStage::Connect
        );
        assert_eq!(
            mailbox.canaries().await.unwrap_err().stage,
            MailboxStage::Connect
        );
        // No watch could be set up, so waiting is a plain pause.
        assert!(mailbox.watching.is_none());
        let start = Instant::now();
        mailbox
            .wait_for_news(Duration::from_millis(50))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_broken_watch_is_reported_and_replaced() {
        let root = maildir();
        let r = root.path();
        let mut mailbox = mailbox(r, Cleanup::Keep);
        mailbox.canaries().await.unwrap();
        fs::remove_dir_all(r.join(".Junk")).unwrap();
        let wait = mailbox.wait_for_news(Duration::from_secs(3600));
        let err = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.stage, MailboxStage::Idle);
        for dir in [".Junk/new", ".Junk/cur"] {
            fs::create_dir_all(r.join(dir)).unwrap();
        }
        mailbox.canaries().await.unwrap();
        deliver(r, "70.A", CANARY);
        wait_briefly(&mut mailbox).await;
    }

    #[test]
    fn folder_names_outside_maildir_plus_plus_are_refused() {
        let config = |folders: &[&str], cleanup| MaildirConfig {
            path: "/m".into(),
            folders: folders.iter().map(|f| f.to_string()).collect(),
            poll_interval: Duration::from_secs(1),
            cleanup,
            forged: None,
        };
        let e = MaildirMailbox::new(config(&["INBOX", "../x"], Cleanup::Delete))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "Maildir /m: folders");
        assert_eq!(
            chain(&e),
            r#"Maildir /m: folders: "../x" is not a Maildir++ folder name (no '/', no leading '.')"#
        );
        let e = MaildirMailbox::new(config(&["INBOX"], Cleanup::Move("a/b".into())))
            .err()
            .unwrap();
        assert!(
            chain(&e).starts_with(r#"Maildir /m: cleanup: "a/b" is not"#),
            "{}",
            chain(&e)
        );
        assert!(MaildirMailbox::new(config(&["INBOX", "Junk"], Cleanup::Keep)).is_ok());
    }
}
