//! IMAP receiver (async-imap): IDLE on the first folder, polling for the rest.
//!
//! async-imap has no command timeouts, so every await here is bounded by the endpoint's
//! `timeout`; a server that stops answering becomes a `timeout` error and a reconnect, never a
//! hung probe. Any error drops the connection: after an odd reply the protocol state is unknown,
//! and a fresh login is cheaper than guessing.
//!
//! The watched box is open to anyone, so a look reads each mail once ever and a bounded amount
//! of it ([`scan`]): per folder the adapter remembers UIDVALIDITY and the highest UID looked at
//! (persisted by the watcher as the scan memory, so restarts and `once` runs continue), and
//! only fetches newer mail, found with `UID SEARCH UID n+1:m` windows below UIDNEXT, in chunks
//! of at most 200 mails, each chunk one command under the timeout, at most 64 commands per
//! folder and look; a newest window of at most 200 UIDs (a look woken by IDLE) is fetched by
//! its range without the search. Per mail it reads the `X-Mailcanary` and `Received` fields (at most 64 KiB),
//! the first 4 KiB of the body (the token a header-stripping gateway leaves) and INTERNALDATE,
//! with `BODY.PEEK`, so nothing is marked seen. The canary is recognised by reading those,
//! never by `SEARCH HEADER`, which servers that do not index custom headers refuse or answer
//! with nothing. A changed UIDVALIDITY reads the folder again from the start, once.
//!
//! A chunk whose answer async-imap cannot parse poisons the session, so the adapter logs in
//! again and reads that chunk one mail at a time; a mail whose answer fails twice on fresh
//! sessions is skipped for good and counted, never a reason to fail the look. Reconnects per
//! look are bounded too. What a look found before it failed is kept and handed out by the next
//! successful look, so the memory only ever moves over mail that has been reported. The answers
//! a look relies on (SEARCH, FETCH, the clean-up's STORE and EXPUNGE) count only once the server
//! completed them with `OK` ([`command`]): async-imap reads a connection cut mid-answer as a
//! complete, shorter one.
//!
//! Removal works by UID (`UID STORE` + `UID EXPUNGE`, or `UID MOVE`), so mail the probe did not
//! name — including mail another client flagged `\Deleted` — is never expunged.

use std::collections::BTreeMap;
use std::time::Duration;

use async_imap::imap_proto::{Capability, Response, ResponseCode, Status};
use async_imap::{Client, Session};
use async_trait::async_trait;
use tokio_native_tls::TlsConnector;

mod command;
mod idle;
mod login;
mod read;
pub mod scan;
mod special_use;

use self::read::{Chunk, Range};
use self::scan::ScanMemory;
use super::tls::{self, MailStream};
use super::{Look, MailId, Mailbox, MailboxError, MailboxStage, Step, Steps};
use crate::config::{Cleanup, Endpoint, ImapConfig, TlsMode, Watch};
use crate::setup::SetupError;
use crate::transcript::{Recorded, Recorder};

/// The connection as async-imap sees it: recorded for failure transcripts. IMAP is recorded on
/// the stream, unlike SMTP and POP3, because async-imap keeps its tags, untagged replies and
/// continuation requests to itself; see [`crate::transcript::stream`] for how it redacts.
type Wire = Recorded<MailStream>;

type ImapSession = Session<Wire>;

/// Fresh logins one look may spend on reading mails whose answers broke the session: enough to
/// skip two such mails (each costs up to three), then the look fails and the next one goes on.
const RECONNECTS_PER_LOOK: u32 = 8;

/// How long verified canaries may wait to be removed together ([`Mailbox::cleanup_batch`]).
const CLEANUP_BATCH: Duration = Duration::from_secs(1);

/// An IMAP mailbox with a lazily (re)opened session.
pub struct ImapMailbox {
    config: ImapConfig,
    /// The folders read: the configured ones, or INBOX and the server's `\Junk` folder once
    /// a session has found it (`folders` unset, [`ImapConfig::find_junk`]).
    folders: Vec<String>,
    tls: Option<TlsConnector>,
    session: Option<Connected>,
    /// How far each folder has been read.
    memory: ScanMemory,
    /// Found by looks that then failed, handed out by the next successful one: the memory has
    /// already moved past these mails.
    pending: Look,
    /// Fresh logins left to the current look.
    reconnects: u32,
    /// When the folders after the first were last read (see [`ImapMailbox::scan_all`]).
    others_read_at: Option<tokio::time::Instant>,
    /// How long the steps of the last look took.
    steps: Steps,
    /// The current attempt's dialogue, for a failure's transcript.
    recorder: Recorder,
}

/// A logged-in session and what the server can do.
struct Connected {
    session: ImapSession,
    uidplus: bool,
    moves: bool,
    idle: bool,
    /// UIDNEXT of the first folder when it was last scanned: mail that arrives before IDLE
    /// starts raises it, and IDLE would not report it.
    scanned_uid_next: Option<u32>,
    /// The folder this session has selected (read-write) and its UIDVALIDITY, so the clean-up
    /// does not select it again.
    selected: Option<(String, u32)>,
    /// Whether the first folder's last scan read everything up to the UIDNEXT its `SELECT`
    /// named, on the selection still current.
    caught_up: bool,
    /// Whether the server announced new mail (`EXISTS`) since the current selection, in the
    /// answer of a command of ours, or may have in an answer we did not read ourselves.
    news: bool,
}

impl ImapMailbox {
    /// Prepares the adapter; reads `ca_file` now so a bad one fails at start-up.
    pub fn new(config: ImapConfig) -> Result<ImapMailbox, SetupError> {
        let tls = match config.endpoint.tls {
            TlsMode::None => None,
            _ => Some(tls::connector(&config.endpoint)?),
        };
        Ok(ImapMailbox {
            folders: config.folders.clone(),
            config,
            tls,
            session: None,
            memory: ScanMemory::default(),
            pending: Look::default(),
            reconnects: 0,
            others_read_at: None,
            steps: Steps::default(),
            recorder: Recorder::default(),
        })
    }

    async fn connect(&mut self) -> Result<Connected, MailboxError> {
        let endpoint = &self.config.endpoint;
        let steps = &mut self.steps;
        let recorder = &self.recorder;
        let wire = |stream| Client::new(Recorded::new(stream, recorder.clone()));
        recorder.note(&format!("connect to {endpoint}"));
        let tcp = steps.time(Step::Connect, tls::connect(endpoint)).await?;
        let (client, sasl_ir) = match (endpoint.tls, &self.tls) {
            (TlsMode::Tls, Some(connector)) => {
                let handshake = tls::handshake(connector, endpoint, tcp);
                let stream = steps.time(Step::Tls, handshake).await?;
                recorder.note("TLS started");
                let greeting = greeted(endpoint, wire(stream));
                steps.time(Step::Greeting, greeting).await?
            }
            (TlsMode::StartTls, Some(connector)) => {
                let greeting = greeted(endpoint, wire(MailStream::Plain(tcp)));
                let (mut client, sasl_ir) = steps.time(Step::Greeting, greeting).await?;
                let start_tls = async {
                    bounded(endpoint, MailboxStage::Tls, "STARTTLS", async {
                        client.run_command_and_check_ok("STARTTLS", None).await
                    })
                    .await?;
                    let MailStream::Plain(tcp) = client.into_inner().into_inner() else {
                        unreachable!("the stream is plain before STARTTLS")
                    };
                    tls::handshake(connector, endpoint, tcp).await
                };
                // RFC 3501: no second greeting after STARTTLS; SASL-IR as the first one said
                // (at worst the token goes one round trip later, still inside TLS).
                let stream = steps.time(Step::Tls, start_tls).await?;
                recorder.note("TLS started");
                (wire(stream), sasl_ir)
            }
            _ => {
                let greeting = greeted(endpoint, wire(MailStream::Plain(tcp)));
                steps.time(Step::Greeting, greeting).await?
            }
        };
        let creds = &self.config.credentials;
        let log_in = login::log_in(client, creds, endpoint, sasl_ir, recorder);
        let mut session = steps.time(Step::Login, log_in).await?;
        let caps = bounded(
            endpoint,
            MailboxStage::Auth,
            "CAPABILITY",
            session.capabilities(),
        )
        .await?;
        if self.config.find_junk && self.folders.len() == 1 {
            let not = moved_into(&self.config);
            if let Some(junk) = special_use::junk_folder(&mut session, endpoint, &not).await? {
                recorder.note(&format!("{junk:?} is marked \\Junk: read as well"));
                self.folders.push(junk);
            }
        }
        Ok(Connected {
            uidplus: caps.has_str("UIDPLUS"),
            moves: caps.has_str("MOVE"),
            idle: caps.has_str("IDLE"),
            scanned_uid_next: None,
            selected: None,
            caught_up: false,
            news: false,
            session,
        })
    }

    /// The open session, or a new one. Returns whether it was reused.
    async fn session(&mut self) -> Result<(Connected, bool), MailboxError> {
        match self.session.take() {
            Some(conn) => Ok((conn, true)),
            None => Ok((self.connect().await?, false)),
        }
    }

    /// Keeps the session for next time unless the work on it failed: after an error the
    /// protocol state is unknown.
    fn keep<T>(&mut self, conn: Connected, result: &Result<T, MailboxError>) {
        if result.is_ok() {
            self.session = Some(conn);
        }
    }
}

impl ImapMailbox {
    /// Deletes or moves these mails (by UID, folder by folder), retrying once on a fresh
    /// session when a reused one had gone stale.
    async fn apply(&mut self, mails: &[MailId], action: &Cleanup) -> Result<(), MailboxError> {
        if mails.is_empty() || *action == Cleanup::Keep {
            return Ok(());
        }
        let mut by_folder: BTreeMap<&str, Vec<&MailId>> = BTreeMap::new();
        for mail in mails {
            by_folder.entry(&mail.folder).or_default().push(mail);
        }
        let endpoint = self.config.endpoint.clone();
        let (mut conn, reused) = self.session().await?;
        let mut result = clean_all(&mut conn, &endpoint, action, &by_folder).await;
        if retry_fresh(&result, reused) {
            conn = self.connect().await?;
            result = clean_all(&mut conn, &endpoint, action, &by_folder).await;
        }
        self.keep(conn, &result);
        result
    }
}

/// Whether a failure on a reused session deserves one retry on a fresh one: a server that
/// merely closed an idle connection is not an outage. A timeout is not retried (it already
/// cost a full timeout).
fn retry_fresh<T>(result: &Result<T, MailboxError>, reused: bool) -> bool {
    matches!(result, Err(e) if reused && e.stage != MailboxStage::Timeout)
}

impl ImapMailbox {
    /// Reads the first folder on every look and the others once per poll interval: IDLE
    /// watches only the first, so a look woken by its news has nothing to expect elsewhere, and
    /// reading `Junk` there too cost two more SELECTs per canary (one for `Junk`, one to return
    /// for the clean-up) — a fifth of a busy mailbox's round trips.
    async fn scan_all(&mut self, conn: &mut Connected) -> Result<(), MailboxError> {
        let folders = self.folders.clone();
        let now = tokio::time::Instant::now();
        let others_due = self
            .others_read_at
            .is_none_or(|at| now - at >= self.config.poll_interval);
        for (i, folder) in folders.iter().enumerate() {
            if i == 0 || others_due {
                self.scan_folder(conn, folder, i == 0).await?;
            }
        }
        if others_due {
            self.others_read_at = Some(now);
        }
        Ok(())
    }

    /// Reads what is new in one folder, within the per-look bounds, into `pending`.
    async fn scan_folder(
        &mut self,
        conn: &mut Connected,
        folder: &str,
        first: bool,
    ) -> Result<(), MailboxError> {
        let endpoint = &self.config.endpoint;
        let selected = select(conn, endpoint, folder).await?;
        let validity = selected.uid_validity.unwrap_or(0);
        let uid_next = selected.uid_next;
        if let Some(old) = self.memory.get(folder)
            && old.validity != validity
        {
            tracing::info!(
                %endpoint, folder, old = old.validity, new = validity,
                "UIDVALIDITY changed: reading the folder again from the start"
            );
        }
        let mut seen = self.memory.seen(folder, validity);
        let seen_before = seen;
        self.memory.advance(folder, validity, seen);
        let mut budget = scan::COMMANDS_PER_FOLDER;
        // Whether the newest window was searched and read: then IDLE may wait even if the scan
        // did not move up to UIDNEXT (mails expunged unseen leave such a gap for good).
        let mut caught_up = scan::search_window(seen, uid_next).is_none();
        'windows: while let Some((lo, hi)) = scan::search_window(seen, uid_next) {
            if budget == 0 {
                tracing::debug!(folder, seen, "look bound reached; more next look");
                break;
            }
            budget -= 1;
            if let Some(hi) = scan::small_newest(lo, hi, uid_next) {
                match self.read_range(conn, folder, validity, lo, hi).await? {
                    Range::Read(last) => {
                        if let Some(last) = last {
                            seen = last;
                            self.memory.advance(folder, validity, seen);
                        }
                        caught_up = true;
                        break;
                    }
                    Range::Invalidated => return Ok(()),
                    Range::Search => {}
                }
            }
            let query = scan::search_query(lo, hi);
            let found = bounded(
                &self.config.endpoint,
                MailboxStage::Search,
                "UID SEARCH",
                command::uid_search(&mut conn.session, &mut conn.news, &query),
            )
            .await?;
            let uids = scan::in_window(found, lo, hi);
            for chunk in scan::chunks(&uids, scan::FETCH_CHUNK) {
                if budget == 0 {
                    break 'windows;
                }
                budget -= 1;
                if let Chunk::Invalidated = self.read_chunk(conn, folder, validity, chunk).await? {
                    return Ok(());
                }
                seen = *chunk.last().expect("chunks are not empty");
                self.memory.advance(folder, validity, seen);
            }
            if !scan::below_newest(hi, uid_next) {
                caught_up = true;
                break;
            }
            // Whatever is below the window's end and was not found is gone for good.
            seen = hi.expect("a window below the newest has an end");
            self.memory.advance(folder, validity, seen);
        }
        tracing::debug!(
            endpoint = %self.config.endpoint, folder, validity, uid_next = ?uid_next, seen_before,
            seen_after = seen,
            caught_up, "folder scanned"
        );
        if first {
            conn.caught_up = caught_up && uid_next.is_some();
            // Unless the look caught up, IDLE must not wait: the rest is news already.
            conn.scanned_uid_next = match (caught_up, uid_next) {
                (true, next) => next,
                (false, next) => next.map(|next| next.min(seen.saturating_add(1))),
            };
        }
        Ok(())
    }
}

async fn clean_all(
    conn: &mut Connected,
    endpoint: &Endpoint,
    action: &Cleanup,
    by_folder: &BTreeMap<&str, Vec<&MailId>>,
) -> Result<(), MailboxError> {
    for (folder, mails) in by_folder {
        clean_folder(conn, endpoint, action, folder, mails).await?;
    }
    Ok(())
}

#[async_trait]
impl Mailbox for ImapMailbox {
    fn protocol(&self) -> &'static str {
        "imap"
    }

    fn restart_transcript(&mut self) {
        self.recorder.restart();
    }

    fn take_transcript(&mut self) -> Vec<String> {
        self.recorder.take()
    }

    async fn canaries(&mut self) -> Result<Look, MailboxError> {
        self.reconnects = RECONNECTS_PER_LOOK;
        let (mut conn, reused) = self.session().await?;
        let start = tokio::time::Instant::now();
        let mut result = self.scan_all(&mut conn).await;
        if retry_fresh(&result, reused) {
            tracing::debug!("reused IMAP session failed; reconnecting once");
            conn = self.connect().await?;
            result = self.scan_all(&mut conn).await;
        }
        self.steps.record(Step::Scan, start.elapsed());
        self.keep(conn, &result);
        result?;
        Ok(std::mem::take(&mut self.pending))
    }

    fn scan_memory(&self) -> Option<String> {
        Some(self.memory.to_text(&self.folders))
    }

    fn restore_scan_memory(&mut self, memory: &str) {
        match ScanMemory::parse(memory) {
            Some(m) => self.memory = m,
            None => tracing::warn!(
                endpoint = %self.config.endpoint,
                "the remembered IMAP scan position does not parse; reading every folder again"
            ),
        }
    }

    async fn clean_up(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        let action = self.config.cleanup.clone();
        let start = tokio::time::Instant::now();
        let result = self.apply(mails, &action).await;
        if !mails.is_empty() {
            self.steps.record(Step::Cleanup, start.elapsed());
        }
        result
    }

    fn steps(&self) -> Steps {
        self.steps
    }

    /// A second: on a mailbox told of a delivery five times a second, `UID STORE` and
    /// `UID EXPUNGE` after every look were two of its seven round trips per canary; canaries
    /// a second older in the box harm nobody.
    fn cleanup_batch(&self) -> Duration {
        CLEANUP_BATCH
    }

    async fn quarantine(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        match self.config.forged.clone() {
            Some(folder) => self.apply(mails, &Cleanup::Move(folder)).await,
            None => Ok(()),
        }
    }

    async fn check_login(&mut self) -> Result<(), MailboxError> {
        self.close().await;
        let mut conn = self.connect().await?;
        for folder in &self.folders {
            conn.selected = None;
            let examine = conn.session.examine(folder);
            bounded(
                &self.config.endpoint,
                MailboxStage::Select,
                "EXAMINE",
                examine,
            )
            .await?;
        }
        self.session = Some(conn);
        self.close().await;
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }

    async fn wait_for_news(&mut self, max: Duration) -> Result<(), MailboxError> {
        if self.config.watch == Watch::Poll {
            tokio::time::sleep(max).await;
            return Ok(());
        }
        let conn = match self.session.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        if !conn.idle {
            tracing::debug!(endpoint = %self.config.endpoint, "server lacks IDLE; polling");
            self.session = Some(conn);
            tokio::time::sleep(max).await;
            return Ok(());
        }
        // On error the session is dropped: the next look reconnects.
        let conn = idle::wait(conn, &self.config, max).await?;
        self.session = Some(conn);
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(mut conn) = self.session.take() {
            let limit = self.config.endpoint.timeout;
            let _ = tokio::time::timeout(limit, conn.session.logout()).await;
        }
    }
}

/// Reads the greeting: it must arrive within the timeout and be `OK` (or `PREAUTH`). Returns
/// whether its capabilities (if it lists them) include SASL-IR.
async fn greeted(
    endpoint: &Endpoint,
    mut client: Client<Wire>,
) -> Result<(Client<Wire>, bool), MailboxError> {
    let greeting = tokio::time::timeout(endpoint.timeout, client.read_response()).await;
    let response = match greeting {
        Err(_) => return Err(tls::timed_out(endpoint, "the greeting", endpoint.timeout)),
        Ok(Err(e)) => {
            return Err(MailboxError::new(
                MailboxStage::Greeting,
                format!("{endpoint}: {e}"),
            ));
        }
        Ok(Ok(None)) => {
            return Err(MailboxError::new(
                MailboxStage::Greeting,
                format!("{endpoint}: connection closed before the greeting"),
            ));
        }
        Ok(Ok(Some(r))) => r,
    };
    match response.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            outcome,
            ..
        } => {
            let sasl_ir = matches!(&outcome.code, Some(ResponseCode::Capabilities(caps))
                if caps.iter().any(|c| matches!(c, Capability::Atom(a) if a.eq_ignore_ascii_case("SASL-IR"))));
            Ok((client, sasl_ir))
        }
        other => Err(MailboxError::new(
            MailboxStage::Greeting,
            format!("{endpoint}: unexpected greeting {other:?}"),
        )),
    }
}

/// Selects `folder` (read-write: clean-up follows on the same session) within the timeout.
///
/// An answer without UIDVALIDITY is an error: RFC 3501 requires it, UIDs mean nothing without
/// it, and async-imap reads a SELECT cut short by a dropped connection as a complete answer.
async fn select(
    conn: &mut Connected,
    endpoint: &Endpoint,
    folder: &str,
) -> Result<async_imap::types::Mailbox, MailboxError> {
    select_as(conn, endpoint, folder, MailboxStage::Select).await
}

/// [`select`], failing as `stage`.
async fn select_as(
    conn: &mut Connected,
    endpoint: &Endpoint,
    folder: &str,
    stage: MailboxStage,
) -> Result<async_imap::types::Mailbox, MailboxError> {
    conn.selected = None;
    conn.caught_up = false;
    conn.news = false;
    let selected = bounded(endpoint, stage, "SELECT", conn.session.select(folder)).await?;
    let Some(validity) = selected.uid_validity else {
        return Err(MailboxError::new(
            stage,
            format!("{endpoint}: SELECT {folder}: the answer has no UIDVALIDITY (cut short?)"),
        ));
    };
    conn.selected = Some((folder.to_string(), validity));
    Ok(selected)
}

/// Bounds one IMAP command by the endpoint's timeout and labels its failure with `stage`.
/// Folders canaries or forged mail are moved into: never watched.
fn moved_into(config: &ImapConfig) -> Vec<&str> {
    let cleanup = match &config.cleanup {
        Cleanup::Move(folder) => Some(folder.as_str()),
        _ => None,
    };
    cleanup
        .into_iter()
        .chain(config.forged.as_deref())
        .collect()
}

async fn bounded<T>(
    endpoint: &Endpoint,
    stage: MailboxStage,
    what: &str,
    work: impl Future<Output = async_imap::error::Result<T>>,
) -> Result<T, MailboxError> {
    match tokio::time::timeout(endpoint.timeout, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(MailboxError::new(stage, format!("{endpoint}: {what}: {e}"))),
        Err(_) => Err(tls::timed_out(endpoint, what, endpoint.timeout)),
    }
}

async fn clean_folder(
    conn: &mut Connected,
    endpoint: &Endpoint,
    action: &Cleanup,
    folder: &str,
    mails: &[&MailId],
) -> Result<(), MailboxError> {
    let validity = match &conn.selected {
        Some((selected, validity)) if selected == folder => *validity,
        _ => {
            let selected = select_as(conn, endpoint, folder, MailboxStage::Cleanup).await?;
            selected.uid_validity.unwrap_or(0)
        }
    };
    // A UID is only meaningful under the UIDVALIDITY it was read with; if the folder was
    // recreated since, these UIDs may name other mail, so leave it alone.
    let mut uids: Vec<u32> = mails
        .iter()
        .filter_map(|m| m.key.split_once('.'))
        .filter(|(v, _)| v.parse() == Ok(validity))
        .filter_map(|(_, uid)| uid.parse().ok())
        .collect();
    if uids.is_empty() {
        return Ok(());
    }
    uids.sort_unstable();
    let set = uid_set(&uids);
    // async-imap's own MOVE and COPY put what the server announced meanwhile where this code
    // does not read it: whether there was news is then unknown.
    if matches!(action, Cleanup::Move(_)) {
        conn.news = true;
    }
    let session = &mut conn.session;
    match action {
        Cleanup::Keep => Ok(()),
        Cleanup::Move(target) if conn.moves => {
            bounded(
                endpoint,
                MailboxStage::Cleanup,
                "UID MOVE",
                session.uid_mv(&set, target),
            )
            .await
        }
        Cleanup::Move(target) => {
            bounded(
                endpoint,
                MailboxStage::Cleanup,
                "UID COPY",
                session.uid_copy(&set, target),
            )
            .await?;
            delete(conn, endpoint, &set).await
        }
        Cleanup::Delete => delete(conn, endpoint, &set).await,
    }
}

/// Flags the UIDs `\Deleted` and expunges exactly them. Without UIDPLUS a plain EXPUNGE could
/// remove other clients' deleted mail, so the canaries are only flagged.
async fn delete(conn: &mut Connected, endpoint: &Endpoint, set: &str) -> Result<(), MailboxError> {
    let store = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
    let work = command::done(&mut conn.session, &mut conn.news, &store);
    bounded(endpoint, MailboxStage::Cleanup, "UID STORE", work).await?;
    if conn.uidplus {
        let expunge = format!("UID EXPUNGE {set}");
        let work = command::done(&mut conn.session, &mut conn.news, &expunge);
        bounded(endpoint, MailboxStage::Cleanup, "UID EXPUNGE", work).await?;
    } else {
        tracing::warn!(%endpoint, "server lacks UIDPLUS: canaries flagged \\Deleted, not expunged");
    }
    Ok(())
}

/// Compresses sorted UIDs into an IMAP sequence set (`1:3,7,9:10`).
pub fn uid_set(sorted: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::uid_set;

    #[test]
    fn uid_sets_are_compressed() {
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[1, 3, 5]), "1,3,5");
        assert_eq!(uid_set(&[u32::MAX - 1, u32::MAX]), "4294967294:4294967295");
    }
}
