//! Reading a folder's new mails for a look: the newest window by its range, or a chunk of
//! searched UIDs; a chunk whose answer breaks the session is read again one mail at a time on
//! fresh sessions, within the look's allowance, and a mail that fails twice is skipped and
//! counted ([`super`] has the whole story).

use super::scan::{self, Fetched};
use super::{Connected, ImapMailbox, bounded, command, select};
use crate::clock;
use crate::config::Endpoint;
use crate::mailbox::{Arrival, MailId, MailboxError, MailboxStage};

/// How reading the newest window by its range ended.
pub(super) enum Range {
    /// Read; the highest UID the server answered for, if any.
    Read(Option<u32>),
    /// The answer broke the session (now reopened): search the window instead.
    Search,
    /// The folder's UIDVALIDITY changed under the look.
    Invalidated,
}

/// How a chunk's reading ended.
pub(super) enum Chunk {
    /// Read (or its unreadable mails skipped).
    Read,
    /// The folder's UIDVALIDITY changed under the look: its UIDs mean nothing any more.
    Invalidated,
}

impl ImapMailbox {
    /// Reads the newest window by fetching its range outright: the answers name the mails
    /// that exist, so the `UID SEARCH` round trip is saved (a look woken by IDLE usually has
    /// one or two new UIDs), and the window is no wider than a chunk, so the answer is bounded
    /// alike. The scan then moves to the highest UID answered, never past it: UIDNEXT may
    /// count a mail the session cannot see yet ([`scan::below_newest`]).
    pub(super) async fn read_range(
        &mut self,
        conn: &mut Connected,
        folder: &str,
        validity: u32,
        lo: u32,
        hi: u32,
    ) -> Result<Range, MailboxError> {
        let set = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}:{hi}")
        };
        match fetch(conn, &self.config.endpoint, &set).await {
            Ok(fetched) => {
                let present = scan::answered(&fetched, lo, hi);
                let last = present.last().copied();
                self.take(folder, validity, &present, fetched);
                Ok(Range::Read(last))
            }
            Err(e) if e.stage == MailboxStage::Timeout => Err(e),
            Err(e) => {
                tracing::warn!(
                    folder, error = %e,
                    "a chunk of mail could not be read; searching its range instead"
                );
                match self.reopen(conn, folder, validity).await? {
                    true => Ok(Range::Search),
                    false => Ok(Range::Invalidated),
                }
            }
        }
    }

    /// Reads one chunk; if its answer breaks the session, logs in again and reads its mails
    /// one at a time, skipping (and counting) a mail whose own answer fails twice.
    pub(super) async fn read_chunk(
        &mut self,
        conn: &mut Connected,
        folder: &str,
        validity: u32,
        chunk: &[u32],
    ) -> Result<Chunk, MailboxError> {
        match fetch(conn, &self.config.endpoint, &scan::range(chunk)).await {
            Ok(fetched) => {
                self.take(folder, validity, chunk, fetched);
                return Ok(Chunk::Read);
            }
            Err(e) if e.stage == MailboxStage::Timeout => return Err(e),
            Err(e) => tracing::warn!(
                folder, error = %e,
                "a chunk of mail could not be read; reading its mails one at a time"
            ),
        }
        if !self.reopen(conn, folder, validity).await? {
            return Ok(Chunk::Invalidated);
        }
        for &uid in chunk {
            for attempt in 1..=2 {
                match fetch(conn, &self.config.endpoint, &uid.to_string()).await {
                    Ok(fetched) => {
                        self.take(folder, validity, &[uid], fetched);
                        break;
                    }
                    Err(e) if e.stage == MailboxStage::Timeout => return Err(e),
                    Err(e) => {
                        if attempt == 2 {
                            tracing::warn!(
                                folder, uid, error = %e,
                                "a mail cannot be read; skipped for good and left untouched"
                            );
                            self.pending.skipped += 1;
                        }
                        if !self.reopen(conn, folder, validity).await? {
                            return Ok(Chunk::Invalidated);
                        }
                    }
                }
            }
            self.memory.advance(folder, validity, uid);
        }
        Ok(Chunk::Read)
    }

    /// Replaces a session a bad answer may have left out of step with a fresh one, within the
    /// look's allowance, and selects `folder` again; false if its UIDVALIDITY changed.
    async fn reopen(
        &mut self,
        conn: &mut Connected,
        folder: &str,
        validity: u32,
    ) -> Result<bool, MailboxError> {
        let endpoint = &self.config.endpoint;
        if self.reconnects == 0 {
            return Err(MailboxError::new(
                MailboxStage::Search,
                format!("{endpoint}: too many unreadable answers in one look; going on next look"),
            ));
        }
        self.reconnects -= 1;
        *conn = self.connect().await?;
        let selected = select(conn, &self.config.endpoint, folder).await?;
        Ok(selected.uid_validity.unwrap_or(0) == validity)
    }

    /// Adds a chunk's canaries and unreadable mails to what the look found.
    fn take(&mut self, folder: &str, validity: u32, chunk: &[u32], fetched: Vec<Fetched>) {
        let seen_ms = clock::now_ms();
        let (marked, skipped) = scan::sort_out(chunk, fetched);
        if skipped > 0 {
            tracing::warn!(
                folder,
                skipped,
                "mails answered without their header fields; skipped"
            );
        }
        self.pending.skipped += skipped;
        self.pending
            .arrivals
            .extend(marked.into_iter().map(|m| Arrival {
                id: MailId {
                    folder: folder.to_string(),
                    key: format!("{validity}.{}", m.uid),
                },
                mark: m.mark,
                head: m.head,
                seen_ms,
                server_ms: m.server_ms,
            }));
    }
}

/// `UID FETCH set` of the bounded items, under one timeout.
pub(super) async fn fetch(
    conn: &mut Connected,
    endpoint: &Endpoint,
    set: &str,
) -> Result<Vec<Fetched>, MailboxError> {
    let work = command::uid_fetch(&mut conn.session, &mut conn.news, set);
    bounded(endpoint, MailboxStage::Search, "UID FETCH", work).await
}
