//! Listing a Maildir and reading mail heads, remembering what was read.
//!
//! A mail file's name changes while its mail does not: delivery renames it from `tmp/` into
//! `new/`, a reader moves it to `cur/` and appends `:2,` and flags change the letters after that.
//! So a mail is known by its *key*, the base name before the `:` info suffix, and everything
//! learnt about it (is it a canary? when was it first noticed?) is filed under that key.
//!
//! A mailbox can hold tens of thousands of ordinary mails and is listed on every look, so each
//! file's head is read once, when its key first appears, and only up to the empty line that ends
//! the header; what was found is cached per key and pruned to the files still present.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock;
use crate::mailbox::BODY_WINDOW;
use crate::mailbox::{Arrival, Look, MailId, MailboxError, MailboxStage, Mark};

/// Most bytes of a head read: a header longer than this is not a mail we sent, and reading on
/// would mean reading an arbitrary file to its end.
pub const HEAD_LIMIT: u64 = 64 * 1024;

/// How often a folder is listed again when files vanish between listing and reading (another
/// client moved them from `new/` to `cur/` or changed their flags meanwhile).
const LIST_ATTEMPTS: usize = 3;

/// A folder name that is not a Maildir++ folder name, so it names no directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a Maildir++ folder name (no '/', no leading '.')")]
pub struct FolderNameError {
    /// The name as configured.
    pub name: String,
}

/// One watched folder and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// The configured name (`INBOX`, `Junk`), as reported in `MailId::folder`.
    pub name: String,
    /// The directory holding its `new/` and `cur/`.
    pub dir: PathBuf,
}

impl Folder {
    /// Resolves a folder name under the Maildir `root`, Maildir++ style as Dovecot lays it out:
    /// `INBOX` is the Maildir itself, any other folder `NAME` is `root/.NAME`.
    pub fn resolve(root: &Path, name: &str) -> Result<Folder, FolderNameError> {
        Ok(Folder {
            name: name.to_string(),
            dir: folder_dir(root, name)?,
        })
    }

    /// The directories mail files live in, `new/` first: a file moves from `new/` to `cur/`,
    /// never back, so listing in this order sees a file that moves during the listing at least
    /// once.
    pub fn mail_dirs(&self) -> [PathBuf; 2] {
        [self.dir.join("new"), self.dir.join("cur")]
    }
}

/// The directory of folder `name` under `root`. Names that would leave the Maildir (`/`) or are
/// not Maildir++ folder names (empty, leading `.`) are refused rather than guessed at.
pub fn folder_dir(root: &Path, name: &str) -> Result<PathBuf, FolderNameError> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok(root.to_path_buf());
    }
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(FolderNameError {
            name: name.to_string(),
        });
    }
    Ok(root.join(format!(".{name}")))
}

/// The key of a mail file: its name without the `:2,FLAGS` info suffix. Names starting with a
/// dot are not mail (the Maildir convention for files readers must skip).
pub fn mail_key(file_name: &str) -> Option<&str> {
    if file_name.starts_with('.') {
        return None;
    }
    let key = file_name.split_once(':').map_or(file_name, |(key, _)| key);
    (!key.is_empty()).then_some(key)
}

/// Reads a mail file's header block: up to (not including) the first empty line, and at most
/// [`HEAD_LIMIT`] bytes. The body is never parsed, and a large body is never read.
#[cfg(test)]
pub fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    read_start(path).map(|(head, _)| head)
}

/// Reads a mail file's header block (as [`read_head`]) and then at most
/// [`BODY_WINDOW`] bytes of its body, where a stripped canary's token would be. A head
/// that fills [`HEAD_LIMIT`] is cut there, and then no body is read.
pub fn read_start(path: &Path) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let limit = HEAD_LIMIT + BODY_WINDOW as u64;
    let file = File::open(path)?;
    let mut reader = BufReader::with_capacity(8 * 1024, file.take(limit));
    let mut head = Vec::new();
    loop {
        let start = head.len();
        if reader.read_until(b'\n', &mut head)? == 0 {
            break;
        }
        if head.len() as u64 >= HEAD_LIMIT {
            head.truncate(HEAD_LIMIT as usize);
            return Ok((head, Vec::new()));
        }
        if matches!(&head[start..], b"\n" | b"\r\n") {
            head.truncate(start);
            break;
        }
    }
    let mut body = Vec::new();
    reader.take(BODY_WINDOW as u64).read_to_end(&mut body)?;
    Ok((head, body))
}

/// The canary mark of a mail, as read once from its head (or the start of its body).
#[derive(Debug, Clone)]
pub struct Found {
    /// The `X-Mailcanary` value, or the body token where the header was stripped.
    pub mark: Mark,
    /// The whole header block, for the `Received:` chain.
    pub head: Vec<u8>,
}

/// What is known of one mail file present at the last scan.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where the file was when listed.
    pub path: PathBuf,
    /// `Some` for a mail carrying a canary mark, `None` for ordinary or unreadable mail.
    pub canary: Option<Found>,
}

/// Every mail file present at the last successful scan.
pub type Cache = HashMap<MailId, Entry>;

/// When each mail key was first noticed, in Unix ms: by the watcher the moment an event named
/// it, else by the scan that listed it. Shared between the watcher's thread and the scan, so the
/// earlier of the two wins without either waiting for the other.
#[derive(Debug, Clone, Default)]
pub struct Noticed(Arc<Mutex<HashMap<String, u64>>>);

impl Noticed {
    /// Records `key` as noticed at `ms` unless it was noticed before; returns whether this was
    /// the first time.
    pub fn note(&self, key: &str, ms: u64) -> bool {
        let mut times = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if times.contains_key(key) {
            return false;
        }
        times.insert(key.to_string(), ms);
        true
    }

    /// When `key` was first noticed.
    pub fn first(&self, key: &str) -> Option<u64> {
        let times = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        times.get(key).copied()
    }

    /// Forgets keys no longer present. Keys noticed since `since_ms` are kept: the watcher may
    /// have seen a file that the listing, taken earlier, could not.
    pub fn prune(&self, present: &HashSet<&str>, since_ms: u64) {
        let mut times = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        times.retain(|key, ms| *ms >= since_ms || present.contains(key.as_str()));
    }

    /// How many keys are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Lists a folder's mail files as `(key, path)`. When a key is listed twice (the file moved from
/// `new/` to `cur/` between the two listings), the later listing, `cur/`, wins.
pub fn list_folder(folder: &Folder) -> Result<Vec<(String, PathBuf)>, MailboxError> {
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    for dir in folder.mail_dirs() {
        let entries = fs::read_dir(&dir).map_err(|e| {
            let what = format!("folder {}: cannot list {}: {e}", folder.name, dir.display());
            MailboxError::new(MailboxStage::Connect, what)
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                let what = format!("folder {}: listing {}: {e}", folder.name, dir.display());
                MailboxError::new(MailboxStage::Search, what)
            })?;
            // A file type needs no extra system call on Linux (readdir reports it).
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = entry.file_name();
            if let Some(key) = name.to_str().and_then(mail_key) {
                files.insert(key.to_string(), entry.path());
            }
        }
    }
    let mut files: Vec<_> = files.into_iter().collect();
    files.sort_unstable();
    Ok(files)
}

/// Lists every folder, reads the heads of files not in `cache`, and returns the canaries found
/// (every one present: the caller skips those it judged before) and how many new files could
/// not be read. On success `cache` holds exactly the files present; on failure it is left as
/// it was.
pub fn scan(
    folders: &[Folder],
    cache: &mut Cache,
    noticed: &Noticed,
) -> Result<Look, MailboxError> {
    let started_ms = clock::now_ms();
    let mut fresh = Cache::with_capacity(cache.len());
    let mut skipped = 0;
    for folder in folders {
        let (entries, unreadable) = scan_folder(folder, cache, noticed)?;
        skipped += unreadable;
        for (id, entry) in entries {
            fresh.insert(id, entry);
        }
    }
    let present: HashSet<&str> = fresh.keys().map(|id| id.key.as_str()).collect();
    noticed.prune(&present, started_ms);
    let mut arrivals: Vec<Arrival> = fresh
        .iter()
        .filter_map(|(id, entry)| {
            let found = entry.canary.as_ref()?;
            let seen_ms = noticed.first(&id.key).unwrap_or(started_ms);
            Some(Arrival {
                id: id.clone(),
                mark: found.mark.clone(),
                head: found.head.clone(),
                seen_ms,
                server_ms: None,
            })
        })
        .collect();
    arrivals.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    *cache = fresh;
    Ok(Look { arrivals, skipped })
}

/// The canary mark of the file at `path`, if it has one: its header, else a body token in the
/// first [`BODY_WINDOW`] bytes after the head.
fn read_canary(path: &Path) -> io::Result<Option<Found>> {
    let (head, body_start) = read_start(path)?;
    Ok(Mark::find(&head, &body_start).map(|mark| Found { mark, head }))
}

/// One folder's files, with the heads of those not in `cache` read, and how many new files
/// could not be read. A file that vanishes before its head is read was moved or renamed
/// meanwhile; the folder is then listed again. A file that cannot be read (permissions, an I/O
/// error) is remembered as not a canary and skipped: one bad file must not blind the probe.
fn scan_folder(
    folder: &Folder,
    cache: &Cache,
    noticed: &Noticed,
) -> Result<(Vec<(MailId, Entry)>, u64), MailboxError> {
    let mut read: HashMap<MailId, Option<Found>> = HashMap::new();
    let mut skipped = 0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let listed = list_folder(folder)?;
        let listed_ms = clock::now_ms();
        let mut entries = Vec::with_capacity(listed.len());
        let mut vanished = false;
        for (key, path) in listed {
            let id = MailId {
                folder: folder.name.clone(),
                key,
            };
            let known = cache.get(&id).map(|e| &e.canary).or_else(|| read.get(&id));
            let canary = match known {
                Some(canary) => canary.clone(),
                None => match read_canary(&path) {
                    Ok(found) => found,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        vanished = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(
                            folder = %folder.name, file = %path.display(), error = %e,
                            "mail file cannot be read; skipped for good"
                        );
                        skipped += 1;
                        None
                    }
                },
            };
            noticed.note(&id.key, listed_ms);
            if known.is_none() && canary.is_some() {
                let seen_ms = noticed.first(&id.key);
                tracing::debug!(mail = %id, file = %path.display(), ?seen_ms, "canary file found");
            }
            read.insert(id.clone(), canary.clone());
            entries.push((id, Entry { path, canary }));
        }
        if !vanished || attempt == LIST_ATTEMPTS {
            return Ok((entries, skipped));
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A Maildir with INBOX and `.Junk`, in a temporary directory.
    pub fn maildir() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for dir in ["new", "cur", "tmp", ".Junk/new", ".Junk/cur", ".Junk/tmp"] {
            fs::create_dir_all(root.path().join(dir)).expect("mkdir");
        }
        root
    }

    /// Writes a mail file at `root/rel` and returns its path.
    pub fn put(root: &Path, rel: &str, text: &str) -> PathBuf {
        let path = root.join(rel);
        fs::write(&path, text).expect("write mail");
        path
    }

    pub const CANARY: &str = "Received: from a by b; Sat, 28 Nov 2026 14:00:00 +0000\n\
        X-Mailcanary: v=1; id=abc;\n probe=p\nSubject: canary\n\nbody\n";
    pub const ORDINARY: &str = "From: friend@example.test\nSubject: lunch\n\nSee you.\n";

    pub fn folders(root: &Path) -> Vec<Folder> {
        ["INBOX", "Junk"]
            .iter()
            .map(|n| Folder::resolve(root, n).expect("folder"))
            .collect()
    }

    fn keys(arrivals: &[Arrival]) -> Vec<String> {
        arrivals.iter().map(|a| a.id.to_string()).collect()
    }

    #[test]
    fn keys_drop_the_info_suffix() {
        let name = "1764338400.M123456P789.host,S=1234,W=1256";
        assert_eq!(mail_key(&format!("{name}:2,S")), Some(name));
        assert_eq!(mail_key(&format!("{name}:2,")), Some(name));
        assert_eq!(mail_key(name), Some(name));
        assert_eq!(mail_key(".nfs0001"), None);
        assert_eq!(mail_key(":2,S"), None);
        assert_eq!(mail_key(""), None);
    }

    #[test]
    fn folders_follow_maildir_plus_plus() {
        let root = Path::new("/m");
        assert_eq!(folder_dir(root, "INBOX").unwrap(), Path::new("/m"));
        assert_eq!(folder_dir(root, "inbox").unwrap(), Path::new("/m"));
        assert_eq!(folder_dir(root, "Junk").unwrap(), Path::new("/m/.Junk"));
        assert_eq!(
            folder_dir(root, "Archive.2026").unwrap(),
            Path::new("/m/.Archive.2026")
        );
        for bad in ["", ".", "..", ".Junk", "a/b", "../x", "x\0"] {
            assert!(folder_dir(root, bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            folder_dir(root, "../x").unwrap_err().to_string(),
            r#""../x" is not a Maildir++ folder name (no '/', no leading '.')"#
        );
    }

    #[test]
    fn head_stops_at_the_first_empty_line() {
        let root = maildir();
        let text = "Subject: a\r\nX-Mailcanary: v=1\r\n\r\nX-Mailcanary: in the body\r\n";
        let head = read_head(&put(root.path(), "new/1", text)).unwrap();
        assert_eq!(head, b"Subject: a\r\nX-Mailcanary: v=1\r\n");
        let head = read_head(&put(root.path(), "new/2", "A: b\n\nbody\n")).unwrap();
        assert_eq!(head, b"A: b\n");
        let head = read_head(&put(root.path(), "new/3", "\nX-Mailcanary: body\n")).unwrap();
        assert!(head.is_empty());
    }

    #[test]
    fn head_is_capped() {
        let root = maildir();
        let long = format!("X-Long: {}\n", "x".repeat(200 * 1024));
        let head = read_head(&put(root.path(), "new/1", &long)).unwrap();
        assert_eq!(head.len() as u64, HEAD_LIMIT);
    }

    #[test]
    fn finds_canaries_in_new_and_cur_of_every_folder() {
        let root = maildir();
        put(root.path(), "new/100.A.h", CANARY);
        put(root.path(), "cur/101.B.h:2,S", CANARY);
        put(root.path(), ".Junk/new/102.C.h", CANARY);
        put(root.path(), "new/103.D.h", ORDINARY);
        put(root.path(), "new/.hidden", CANARY);
        fs::create_dir(root.path().join("new/104.dir")).unwrap();
        let (mut cache, noticed) = (Cache::new(), Noticed::default());
        let found = scan(&folders(root.path()), &mut cache, &noticed)
            .unwrap()
            .arrivals;
        assert_eq!(
            keys(&found),
            ["INBOX/100.A.h", "INBOX/101.B.h", "Junk/102.C.h"]
        );
        assert_eq!(found[0].mark.value(), "v=1; id=abc; probe=p");
        assert!(found[0].head.starts_with(b"Received: from a by b"));
        assert!(!found[0].head.windows(4).any(|w| w == b"body"));
        assert_eq!(found[0].server_ms, None);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn heads_are_read_once_per_key() {
        let root = maildir();
        let ordinary = put(root.path(), "new/200.A.h", ORDINARY);
        let (mut cache, noticed) = (Cache::new(), Noticed::default());
        let folders = folders(root.path());
        assert!(
            scan(&folders, &mut cache, &noticed)
                .unwrap()
                .arrivals
                .is_empty()
        );
        // Same key, other content: a re-read would now find a canary. The cache answers instead,
        // also after a reader moved the file to cur/ and flagged it.
        fs::write(&ordinary, CANARY).unwrap();
        assert!(
            scan(&folders, &mut cache, &noticed)
                .unwrap()
                .arrivals
                .is_empty()
        );
        fs::rename(&ordinary, root.path().join("cur/200.A.h:2,S")).unwrap();
        assert!(
            scan(&folders, &mut cache, &noticed)
                .unwrap()
                .arrivals
                .is_empty()
        );
        let id = MailId {
            folder: "INBOX".into(),
            key: "200.A.h".into(),
        };
        assert_eq!(cache[&id].path, root.path().join("cur/200.A.h:2,S"));
        // A new key is read.
        put(root.path(), "new/201.B.h", CANARY);
        assert_eq!(
            keys(&scan(&folders, &mut cache, &noticed).unwrap().arrivals),
            ["INBOX/201.B.h"]
        );
    }

    #[test]
    fn cache_and_notice_times_are_pruned_to_the_files_present() {
        let root = maildir();
        let gone = put(root.path(), "new/300.A.h", ORDINARY);
        put(root.path(), "new/301.B.h", ORDINARY);
        let (mut cache, noticed) = (Cache::new(), Noticed::default());
        let folders = folders(root.path());
        scan(&folders, &mut cache, &noticed).unwrap();
        assert_eq!((cache.len(), noticed.len()), (2, 2));
        fs::remove_file(gone).unwrap();
        // Keys noticed in the millisecond a scan starts are kept by it; let that millisecond pass.
        let noticed_at = noticed.first("300.A.h").unwrap();
        while clock::now_ms() <= noticed_at {
            std::thread::yield_now();
        }
        // Noticed long ago and never listed: forgotten. Noticed just now: kept, the listing may
        // simply have been older than the event.
        noticed.note("299.old", 1);
        noticed.note("302.event", u64::MAX);
        scan(&folders, &mut cache, &noticed).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(noticed.first("300.A.h"), None);
        assert_eq!(noticed.first("299.old"), None);
        assert_eq!(noticed.first("302.event"), Some(u64::MAX));
        assert!(noticed.first("301.B.h").is_some());
    }

    #[test]
    fn seen_is_when_first_noticed() {
        let root = maildir();
        put(root.path(), "new/400.A.h", CANARY);
        put(root.path(), "new/401.B.h", CANARY);
        let (mut cache, noticed) = (Cache::new(), Noticed::default());
        noticed.note("400.A.h", 42);
        let before = clock::now_ms();
        let found = scan(&folders(root.path()), &mut cache, &noticed)
            .unwrap()
            .arrivals;
        assert_eq!(found[0].seen_ms, 42);
        assert!(
            found[1].seen_ms >= before,
            "scan time for the unannounced file"
        );
        // Seen stays put on later looks.
        let again = scan(&folders(root.path()), &mut cache, &noticed)
            .unwrap()
            .arrivals;
        assert_eq!(again[1].seen_ms, found[1].seen_ms);
    }

    #[test]
    fn missing_folder_is_a_connect_error_and_keeps_the_cache() {
        let root = maildir();
        put(root.path(), "new/500.A.h", ORDINARY);
        let (mut cache, noticed) = (Cache::new(), Noticed::default());
        scan(&folders(root.path()), &mut cache, &noticed).unwrap();
        fs::remove_dir_all(root.path().join(".Junk")).unwrap();
        let err = scan(&folders(root.path()), &mut cache, &noticed).unwrap_err();
        assert_eq!(err.stage, MailboxStage::Connect);
        assert!(err.message.contains("folder Junk"), "{err}");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_canary_without_its_header_is_found_by_its_body_token() {
        let root = maildir();
        let value = "v=1; id=01JDQ8ZK3V6R9X1T2Y3Z4A5B6C; probe=p; class=bulk; seq=1; sent=1; \
                     agent=a; sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let text = format!("Subject: news\n\nHello\nmailcanary: {value}\n");
        put(root.path(), "new/600.A.h", &text);
        let (mut cache, noticed) = (Cache::new(), Noticed::default());
        let found = scan(&folders(root.path()), &mut cache, &noticed).unwrap();
        assert_eq!(found.arrivals.len(), 1);
        assert_eq!(found.arrivals[0].mark, Mark::BodyToken(value.to_string()));
        assert_eq!(found.skipped, 0);
    }
}
