//! Removing or moving exactly the canaries the probe hands back.
//!
//! Between the look that found a canary and its clean-up another client may have moved the file
//! to `cur/` or flagged it, which renames it; so a file that is not where it was listed is looked
//! up again by its key before anything is concluded. A file that is gone for good was removed by
//! someone else, which is what we wanted anyway. No other file is ever touched: every path acted
//! on is a listed file of the mail's own folder, and a move never overwrites: it is one
//! `renameat2(RENAME_NOREPLACE)`, which the kernel refuses when the target exists, so a file
//! that appears at the target between any check and the move is not replaced either.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::scan::{Folder, list_folder};
use crate::mailbox::{MailId, MailboxError, MailboxStage};

/// How often a canary's file is looked up again when it is renamed under our feet.
const ATTEMPTS: usize = 3;

/// What to do with each canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Unlink the file.
    Delete,
    /// Rename the file into this `cur/` directory.
    MoveTo(PathBuf),
}

/// Applies `action` to every mail: `(id, where it was listed, its folder)`. Goes on after a
/// failure, so one stubborn file does not keep the others, and returns the first failure.
pub fn apply(mails: &[(MailId, PathBuf, Folder)], action: &Action) -> Result<(), MailboxError> {
    let mut first_error = None;
    for (id, listed, folder) in mails {
        if let Err(e) = clean_one(id, listed, folder, action) {
            tracing::warn!(mail = %id, error = %e, "canary not cleaned up");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn clean_one(
    id: &MailId,
    listed: &Path,
    folder: &Folder,
    action: &Action,
) -> Result<(), MailboxError> {
    let failed = |what: &str, path: &Path, e: io::Error| {
        let message = format!("{id}: {what} {}: {e}", path.display());
        MailboxError::new(MailboxStage::Cleanup, message)
    };
    let mut path = listed.to_path_buf();
    for _ in 0..ATTEMPTS {
        let done = match action {
            Action::Delete => fs::remove_file(&path).map_err(|e| failed("deleting", &path, e)),
            Action::MoveTo(cur) => move_into(&path, cur).map_err(|e| failed("moving", &path, e)),
        };
        match done {
            Err(_) if !exists(&path) => match find(folder, &id.key)? {
                Some(now) => path = now,
                None => return Ok(()),
            },
            other => return other,
        }
    }
    Err(MailboxError::new(
        MailboxStage::Cleanup,
        format!("{id}: renamed by someone else {ATTEMPTS} times while being cleaned up"),
    ))
}

/// Renames `path` into the directory `cur`, with the `:2,` info suffix a file in `cur/` carries.
/// Refuses to overwrite: Maildir names are unique, so a clash means something is wrong.
fn move_into(path: &Path, cur: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "odd file name"))?;
    let name = if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:2,")
    };
    let target = cur.join(name);
    rename_no_replace(path, &target).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", target.display()),
        ),
        _ => e,
    })
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing an existing `to`.
///
/// Atomic where the file system has `RENAME_NOREPLACE` (ext4, xfs, btrfs, tmpfs…). Where it has
/// not (NFS, some FUSE file systems say `EINVAL`), a hard link, which also refuses an existing
/// target, then removing the source: for a moment the mail has both names, which a concurrent
/// look may see as a duplicate, but nothing is overwritten.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    };
    let (c_from, c_to) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => link_then_unlink(from, to),
        _ => Err(e),
    }
}

/// The no-replace move of file systems without `RENAME_NOREPLACE`.
fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to)?;
    fs::remove_file(from).inspect_err(|_| {
        // Back to one name: the mail stays where it was, to be tried again.
        let _ = fs::remove_file(to);
    })
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Where the mail with `key` is now, if anywhere in `folder`.
fn find(folder: &Folder, key: &str) -> Result<Option<PathBuf>, MailboxError> {
    let listed =
        list_folder(folder).map_err(|e| MailboxError::new(MailboxStage::Cleanup, e.message))?;
    Ok(listed.into_iter().find(|(k, _)| k == key).map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::super::scan::tests::{CANARY, ORDINARY, maildir, put};
    use super::*;

    fn job(root: &Path, folder: &str, key: &str, listed: &Path) -> (MailId, PathBuf, Folder) {
        let id = MailId {
            folder: folder.into(),
            key: key.into(),
        };
        (
            id,
            listed.to_path_buf(),
            Folder::resolve(root, folder).unwrap(),
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn delete_removes_only_the_named_files() {
        let root = maildir();
        let r = root.path();
        let a = put(r, "new/1.A", CANARY);
        put(r, "new/2.B", CANARY);
        put(r, "cur/3.C:2,S", ORDINARY);
        let c = put(r, ".Junk/new/4.D", CANARY);
        let jobs = [job(r, "INBOX", "1.A", &a), job(r, "Junk", "4.D", &c)];
        apply(&jobs, &Action::Delete).unwrap();
        assert_eq!(names(&r.join("new")), ["2.B"]);
        assert_eq!(names(&r.join("cur")), ["3.C:2,S"]);
        assert!(names(&r.join(".Junk/new")).is_empty());
    }

    #[test]
    fn a_file_gone_meanwhile_is_not_an_error() {
        let root = maildir();
        let r = root.path();
        let jobs = [job(r, "INBOX", "1.A", &r.join("new/1.A"))];
        apply(&jobs, &Action::Delete).unwrap();
        let cur = r.join(".Junk/cur");
        apply(&jobs, &Action::MoveTo(cur.clone())).unwrap();
        assert!(names(&cur).is_empty());
    }

    #[test]
    fn a_file_renamed_meanwhile_is_found_by_its_key() {
        let root = maildir();
        let r = root.path();
        let listed = put(r, "new/1.A", CANARY);
        fs::rename(&listed, r.join("cur/1.A:2,S")).unwrap();
        put(r, "cur/1.AB:2,", CANARY);
        apply(&[job(r, "INBOX", "1.A", &listed)], &Action::Delete).unwrap();
        assert_eq!(names(&r.join("cur")), ["1.AB:2,"]);
    }

    #[test]
    fn move_renames_into_the_target_cur() {
        let root = maildir();
        let r = root.path();
        let fresh = put(r, "new/1.A", CANARY);
        let flagged = put(r, "cur/2.B:2,S", CANARY);
        put(r, "new/3.C", ORDINARY);
        let jobs = [
            job(r, "INBOX", "1.A", &fresh),
            job(r, "INBOX", "2.B", &flagged),
        ];
        apply(&jobs, &Action::MoveTo(r.join(".Junk/cur"))).unwrap();
        assert_eq!(names(&r.join(".Junk/cur")), ["1.A:2,", "2.B:2,S"]);
        assert_eq!(
            fs::read_to_string(r.join(".Junk/cur/1.A:2,")).unwrap(),
            CANARY
        );
        assert_eq!(names(&r.join("new")), ["3.C"]);
        assert!(names(&r.join("cur")).is_empty());
    }

    #[test]
    fn move_never_overwrites() {
        let root = maildir();
        let r = root.path();
        let mine = put(r, "new/1.A", CANARY);
        put(r, ".Junk/cur/1.A:2,", ORDINARY);
        let err = apply(
            &[job(r, "INBOX", "1.A", &mine)],
            &Action::MoveTo(r.join(".Junk/cur")),
        )
        .unwrap_err();
        assert_eq!(err.stage, MailboxStage::Cleanup);
        assert_eq!(
            fs::read_to_string(r.join(".Junk/cur/1.A:2,")).unwrap(),
            ORDINARY
        );
        assert!(mine.exists());
    }

    #[test]
    fn the_move_itself_refuses_an_existing_target() {
        // No check before: the kernel (or the link) refuses, so a target that appears after
        // any check is not overwritten either.
        let root = maildir();
        let r = root.path();
        let mine = put(r, "new/1.A", CANARY);
        let theirs = put(r, ".Junk/cur/1.A:2,", ORDINARY);
        for mv in [rename_no_replace, link_then_unlink] {
            let err = mv(&mine, &theirs).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(fs::read_to_string(&theirs).unwrap(), ORDINARY);
            assert_eq!(fs::read_to_string(&mine).unwrap(), CANARY);
        }
        let free = r.join(".Junk/cur/1.A:2,S");
        for (mv, from, to) in [
            (
                rename_no_replace as fn(&Path, &Path) -> io::Result<()>,
                &mine,
                &free,
            ),
            (link_then_unlink, &free, &mine),
        ] {
            mv(from, to).unwrap();
            assert!(!from.exists());
            assert_eq!(fs::read_to_string(to).unwrap(), CANARY);
        }
    }

    #[test]
    fn one_failure_does_not_keep_the_others() {
        let root = maildir();
        let r = root.path();
        let stuck = put(r, "new/1.A", CANARY);
        let other = put(r, "new/2.B", CANARY);
        put(r, ".Junk/cur/1.A:2,", ORDINARY);
        let jobs = [
            job(r, "INBOX", "1.A", &stuck),
            job(r, "INBOX", "2.B", &other),
        ];
        assert!(apply(&jobs, &Action::MoveTo(r.join(".Junk/cur"))).is_err());
        assert!(stuck.exists() && !other.exists());
    }
}
