//! `[probe.mailbox]`: one receiver per protocol, each with only the keys it understands.

use std::path::PathBuf;
use std::time::Duration;

use super::context::Context;
use super::raw::{RawMailbox, Spanned};
use super::{
    Cleanup, ConfigError, DEFAULT_POLL, ImapConfig, MailboxConfig, MaildirConfig, Pop3Config,
    TlsMode, Watch,
};

type Span = std::ops::Range<usize>;

impl Context<'_> {
    pub(super) fn mailbox(
        &self,
        raw: &RawMailbox,
        key: &str,
        span: &Span,
        warnings: &mut Vec<String>,
    ) -> Result<MailboxConfig, ConfigError> {
        let protocol = raw.protocol.as_ref().ok_or_else(|| {
            let key = format!("{key}.protocol");
            self.error(Some(span.clone()), &key, "missing required key".into())
        })?;
        match protocol.get_ref().as_str() {
            "imap" => self.imap(raw, key, span, warnings).map(MailboxConfig::Imap),
            "pop3" => self.pop3(raw, key, span, warnings).map(MailboxConfig::Pop3),
            "maildir" => self.maildir(raw, key, span).map(MailboxConfig::Maildir),
            other => Err(self.at(
                protocol,
                &format!("{key}.protocol"),
                format!("unknown protocol {other:?}; expected \"imap\", \"pop3\" or \"maildir\""),
            )),
        }
    }

    /// `trusted_authserv_ids = ["mx.example.com", …]`: the receiving side's names (RFC 8601
    /// authserv-ids, which are usually its host names). Host-name-like: a value with spaces or
    /// `;` could never match a header's authserv-id and is a typo.
    pub(super) fn authserv_ids(
        &self,
        raw: &RawMailbox,
        key: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(ids) = &raw.trusted_authserv_ids else {
            return Ok(Vec::new());
        };
        let bad = ids.get_ref().iter().find(|id| {
            id.is_empty()
                || id.len() > 253
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
        match bad {
            Some(id) => Err(self.at(
                ids,
                &format!("{key}.trusted_authserv_ids"),
                format!("{id:?} is not a host name (letters, digits, '.', '-', '_')"),
            )),
            None => Ok(ids
                .get_ref()
                .iter()
                .map(|id| id.to_ascii_lowercase())
                .collect()),
        }
    }

    /// Refuses keys the protocol has no use for, so a typo'd setup fails loudly.
    fn unused<T>(
        &self,
        value: &Option<Spanned<T>>,
        key: &str,
        why: &str,
    ) -> Result<(), ConfigError> {
        match value {
            Some(v) => Err(self.at(v, key, why.to_string())),
            None => Ok(()),
        }
    }

    fn imap(
        &self,
        raw: &RawMailbox,
        key: &str,
        span: &Span,
        warnings: &mut Vec<String>,
    ) -> Result<ImapConfig, ConfigError> {
        self.unused(
            &raw.path,
            &format!("{key}.path"),
            "only valid with protocol = \"maildir\"",
        )?;
        let endpoint =
            self.endpoint(&raw.endpoint(), key, span, TlsMode::Tls, |tls| match tls {
                TlsMode::Tls => 993,
                _ => 143,
            })?;
        let watch = match &raw.watch {
            None => Watch::Idle,
            Some(w) => match w.get_ref().as_str() {
                "idle" => Watch::Idle,
                "poll" => Watch::Poll,
                other => {
                    let msg = format!("unknown value {other:?}; expected \"idle\" or \"poll\"");
                    return Err(self.at(w, &format!("{key}.watch"), msg));
                }
            },
        };
        let folders = self.folders(raw, key)?;
        let cleanup = self.cleanup(raw, key, true)?;
        self.move_outside(raw, key, &folders, &cleanup)?;
        let forged = self.forged(raw, key, &folders)?;
        Ok(ImapConfig {
            credentials: self.login(raw, key, span, warnings, "an IMAP")?,
            endpoint,
            find_junk: raw.folders.is_none(),
            folders,
            watch,
            poll_interval: self.poll_interval(raw, key)?,
            cleanup,
            forged,
        })
    }

    fn pop3(
        &self,
        raw: &RawMailbox,
        key: &str,
        span: &Span,
        warnings: &mut Vec<String>,
    ) -> Result<Pop3Config, ConfigError> {
        self.unused(
            &raw.path,
            &format!("{key}.path"),
            "only valid with protocol = \"maildir\"",
        )?;
        self.unused(
            &raw.folders,
            &format!("{key}.folders"),
            "POP3 has only the inbox",
        )?;
        self.unused(
            &raw.watch,
            &format!("{key}.watch"),
            "POP3 can only poll; set poll_interval",
        )?;
        let endpoint =
            self.endpoint(&raw.endpoint(), key, span, TlsMode::Tls, |tls| match tls {
                TlsMode::Tls => 995,
                _ => 110,
            })?;
        if let Some(f) = &raw.forged
            && f.get_ref() != "keep"
        {
            let msg = "POP3 has no folders to move forged mail to; only \"keep\" is possible";
            return Err(self.at(f, &format!("{key}.forged"), msg));
        }
        Ok(Pop3Config {
            credentials: self.login(raw, key, span, warnings, "a POP3")?,
            endpoint,
            poll_interval: self.poll_interval(raw, key)?,
            cleanup: self.cleanup(raw, key, false)?,
        })
    }

    fn maildir(
        &self,
        raw: &RawMailbox,
        key: &str,
        span: &Span,
    ) -> Result<MaildirConfig, ConfigError> {
        let local = "a maildir is read locally: no server, no login";
        for (value, field) in [
            (&raw.host, "host"),
            (&raw.tls, "tls"),
            (&raw.ca_file, "ca_file"),
            (&raw.timeout, "timeout"),
            (&raw.username, "username"),
            (&raw.password, "password"),
            (&raw.password_env, "password_env"),
            (&raw.password_file, "password_file"),
        ] {
            self.unused(value, &format!("{key}.{field}"), local)?;
        }
        self.unused(&raw.port, &format!("{key}.port"), local)?;
        self.unused(&raw.tls_verify, &format!("{key}.tls_verify"), local)?;
        self.unused(
            &raw.watch,
            &format!("{key}.watch"),
            "a maildir is watched by inotify; poll_interval sets the rescan",
        )?;
        let path = raw.path.as_ref().ok_or_else(|| {
            self.error(
                Some(span.clone()),
                &format!("{key}.path"),
                "missing required key".into(),
            )
        })?;
        let resolved: PathBuf = self.resolve(path.get_ref());
        if !resolved.join("new").is_dir() || !resolved.join("cur").is_dir() {
            let msg = format!(
                "{} is not a Maildir (it needs new/ and cur/)",
                resolved.display()
            );
            return Err(self.at(path, &format!("{key}.path"), msg));
        }
        let folders = self.folders(raw, key)?;
        let cleanup = self.cleanup(raw, key, true)?;
        self.move_outside(raw, key, &folders, &cleanup)?;
        let forged = self.forged(raw, key, &folders)?;
        Ok(MaildirConfig {
            path: resolved,
            folders,
            poll_interval: self.poll_interval(raw, key)?,
            cleanup,
            forged,
        })
    }

    fn login(
        &self,
        raw: &RawMailbox,
        key: &str,
        span: &Span,
        warnings: &mut Vec<String>,
        what: &str,
    ) -> Result<super::Credentials, ConfigError> {
        self.credentials(&raw.endpoint(), key, span, warnings)?
            .ok_or_else(|| {
                let msg = format!("{what} mailbox needs a login (username and a password source)");
                self.error(Some(span.clone()), &format!("{key}.username"), msg)
            })
    }

    fn folders(&self, raw: &RawMailbox, key: &str) -> Result<Vec<String>, ConfigError> {
        match &raw.folders {
            Some(f)
                if f.get_ref().is_empty() || f.get_ref().iter().any(|n| n.trim().is_empty()) =>
            {
                Err(self.at(
                    f,
                    &format!("{key}.folders"),
                    "needs at least one non-empty folder name",
                ))
            }
            Some(f) => Ok(f.get_ref().clone()),
            None => Ok(vec!["INBOX".to_string()]),
        }
    }

    fn poll_interval(&self, raw: &RawMailbox, key: &str) -> Result<Duration, ConfigError> {
        match &raw.poll_interval {
            Some(v) => self.duration(v, &format!("{key}.poll_interval")),
            None => Ok(DEFAULT_POLL),
        }
    }

    /// `forged = "keep" | "move:FOLDER"`: the folder forged mail is moved to, if any. Like a
    /// cleanup move, never into a watched folder (it would be read and counted again).
    fn forged(
        &self,
        raw: &RawMailbox,
        key: &str,
        folders: &[String],
    ) -> Result<Option<String>, ConfigError> {
        let Some(f) = &raw.forged else {
            return Ok(None);
        };
        let key = format!("{key}.forged");
        let target = match f.get_ref().as_str() {
            "keep" => return Ok(None),
            other => match other.strip_prefix("move:").map(str::trim) {
                Some(folder) if !folder.is_empty() => folder.to_string(),
                _ => {
                    let msg =
                        format!("unknown value {other:?}; expected \"keep\" or \"move:FOLDER\"");
                    return Err(self.at(f, &key, msg));
                }
            },
        };
        if folders.iter().any(|w| same_folder(w, &target)) {
            let msg = format!(
                "{target:?} is a watched folder (folders = {folders:?}): forged mail moved there \
                 would be read again; move it to a folder that is not watched"
            );
            return Err(self.at(f, &key, msg));
        }
        Ok(Some(target))
    }

    /// Refuses `move:` into a watched folder: the moved canary would be found there on the next
    /// look and judged again.
    fn move_outside(
        &self,
        raw: &RawMailbox,
        key: &str,
        folders: &[String],
        cleanup: &Cleanup,
    ) -> Result<(), ConfigError> {
        let (Cleanup::Move(target), Some(c)) = (cleanup, &raw.cleanup) else {
            return Ok(());
        };
        if folders.iter().any(|f| same_folder(f, target)) {
            let msg = format!(
                "{target:?} is a watched folder (folders = {folders:?}): canaries moved there \
                 would be read and counted again; move them to a folder that is not watched"
            );
            return Err(self.at(c, &format!("{key}.cleanup"), msg));
        }
        Ok(())
    }

    fn cleanup(&self, raw: &RawMailbox, key: &str, can_move: bool) -> Result<Cleanup, ConfigError> {
        let Some(c) = &raw.cleanup else {
            return Ok(Cleanup::Delete);
        };
        let key = format!("{key}.cleanup");
        match c.get_ref().as_str() {
            "delete" => Ok(Cleanup::Delete),
            "keep" => Ok(Cleanup::Keep),
            other => match other.strip_prefix("move:").map(str::trim) {
                Some(folder) if !folder.is_empty() && can_move => {
                    Ok(Cleanup::Move(folder.to_string()))
                }
                Some(_) if !can_move => Err(self.at(
                    c,
                    &key,
                    "POP3 has no folders to move to; use \"delete\" or \"keep\"",
                )),
                _ => Err(self.at(
                    c,
                    &key,
                    format!(
                        "unknown value {other:?}; expected \"delete\", \"keep\" or \"move:FOLDER\""
                    ),
                )),
            },
        }
    }
}

/// Whether two folder names are the same folder: INBOX is case-insensitive (RFC 3501), every
/// other name is taken as written.
fn same_folder(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}
