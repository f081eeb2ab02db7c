//! IMAP receiver (async-imap): IDLE on the first folder, polling for the rest.
//!
//! async-imap has no command timeouts, so every await here is bounded by the endpoint's
//! `timeout`; a server that stops answering becomes a `timeout` error and a reconnect, never a
//! hung probe. Any error drops the connection: after an odd reply the protocol state is unknown,
//! and a fresh login is cheaper than guessing.
//!
//! Canaries are found with `UID SEARCH HEADER X-Mailcanary ""` and only their canary header and
//! INTERNALDATE are fetched (`BODY.PEEK`, so nothing is marked seen and no body is read).
//! Removal works by UID (`UID STORE` + `UID EXPUNGE`, or `UID MOVE`), so mail the probe did not
//! name — including mail another client flagged `\Deleted` — is never expunged.

use std::collections::BTreeMap;
use std::time::Duration;

use async_imap::imap_proto::{Response, Status};
use async_imap::{Client, Session};
use async_trait::async_trait;
use futures::TryStreamExt as _;
use tokio_native_tls::TlsConnector;

mod idle;

use super::tls::{self, MailStream};
use super::{Arrival, Look, MailId, Mailbox, MailboxError, MailboxStage, Mark};
use crate::canary::{HEADER_NAME, find_header};
use crate::clock;
use crate::config::{Cleanup, Endpoint, ImapConfig, TlsMode, Watch};
use crate::setup::SetupError;

type ImapSession = Session<MailStream>;

/// An IMAP mailbox with a lazily (re)opened session.
pub struct ImapMailbox {
    config: ImapConfig,
    tls: Option<TlsConnector>,
    session: Option<Connected>,
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
}

impl ImapMailbox {
    /// Prepares the adapter; reads `ca_file` now so a bad one fails at start-up.
    pub fn new(config: ImapConfig) -> Result<ImapMailbox, SetupError> {
        let tls = match config.endpoint.tls {
            TlsMode::None => None,
            _ => Some(tls::connector(&config.endpoint)?),
        };
        Ok(ImapMailbox {
            config,
            tls,
            session: None,
        })
    }

    async fn connect(&self) -> Result<Connected, MailboxError> {
        let endpoint = &self.config.endpoint;
        let tcp = tls::connect(endpoint).await?;
        let client = match (endpoint.tls, &self.tls) {
            (TlsMode::Tls, Some(connector)) => {
                let stream = tls::handshake(connector, endpoint, tcp).await?;
                greeted(endpoint, Client::new(stream)).await?
            }
            (TlsMode::StartTls, Some(connector)) => {
                let mut client = greeted(endpoint, Client::new(MailStream::Plain(tcp))).await?;
                bounded(endpoint, MailboxStage::Tls, "STARTTLS", async {
                    client.run_command_and_check_ok("STARTTLS", None).await
                })
                .await?;
                let MailStream::Plain(tcp) = client.into_inner() else {
                    unreachable!("the stream is plain before STARTTLS")
                };
                // RFC 3501: no second greeting after STARTTLS.
                Client::new(tls::handshake(connector, endpoint, tcp).await?)
            }
            _ => greeted(endpoint, Client::new(MailStream::Plain(tcp))).await?,
        };
        let creds = &self.config.credentials;
        let login = client.login(&creds.username, creds.password.expose());
        let mut session = match tokio::time::timeout(endpoint.timeout, login).await {
            Ok(Ok(session)) => session,
            Ok(Err((e, _))) => {
                return Err(MailboxError::new(
                    MailboxStage::Auth,
                    format!("{endpoint}: login as {} refused: {e}", creds.username),
                ));
            }
            Err(_) => return Err(tls::timed_out(endpoint, "LOGIN", endpoint.timeout)),
        };
        let caps = bounded(
            endpoint,
            MailboxStage::Auth,
            "CAPABILITY",
            session.capabilities(),
        )
        .await?;
        Ok(Connected {
            uidplus: caps.has_str("UIDPLUS"),
            moves: caps.has_str("MOVE"),
            idle: caps.has_str("IDLE"),
            scanned_uid_next: None,
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

/// Whether a failure on a reused session deserves one retry on a fresh one: a server that
/// merely closed an idle connection is not an outage. A timeout is not retried (it already
/// cost a full timeout).
fn retry_fresh<T>(result: &Result<T, MailboxError>, reused: bool) -> bool {
    matches!(result, Err(e) if reused && e.stage != MailboxStage::Timeout)
}

async fn scan_all(conn: &mut Connected, config: &ImapConfig) -> Result<Vec<Arrival>, MailboxError> {
    let mut found = Vec::new();
    for (i, folder) in config.folders.iter().enumerate() {
        let uid_next = scan_folder(&mut conn.session, &config.endpoint, folder, &mut found).await?;
        if i == 0 {
            conn.scanned_uid_next = uid_next;
        }
    }
    Ok(found)
}

async fn clean_all(
    conn: &mut Connected,
    config: &ImapConfig,
    by_folder: &BTreeMap<&str, Vec<&MailId>>,
) -> Result<(), MailboxError> {
    for (folder, mails) in by_folder {
        clean_folder(conn, config, folder, mails).await?;
    }
    Ok(())
}

#[async_trait]
impl Mailbox for ImapMailbox {
    fn protocol(&self) -> &'static str {
        "imap"
    }

    async fn canaries(&mut self) -> Result<Look, MailboxError> {
        let (mut conn, reused) = self.session().await?;
        let mut result = scan_all(&mut conn, &self.config).await;
        if retry_fresh(&result, reused) {
            tracing::debug!("reused IMAP session failed; reconnecting once");
            conn = self.connect().await?;
            result = scan_all(&mut conn, &self.config).await;
        }
        self.keep(conn, &result);
        result.map(|arrivals| Look {
            arrivals,
            skipped: 0,
        })
    }

    async fn clean_up(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        if mails.is_empty() || self.config.cleanup == Cleanup::Keep {
            return Ok(());
        }
        let mut by_folder: BTreeMap<&str, Vec<&MailId>> = BTreeMap::new();
        for mail in mails {
            by_folder.entry(&mail.folder).or_default().push(mail);
        }
        let (mut conn, reused) = self.session().await?;
        let mut result = clean_all(&mut conn, &self.config, &by_folder).await;
        if retry_fresh(&result, reused) {
            conn = self.connect().await?;
            result = clean_all(&mut conn, &self.config, &by_folder).await;
        }
        self.keep(conn, &result);
        result
    }

    async fn check_login(&mut self) -> Result<(), MailboxError> {
        self.close().await;
        let mut conn = self.connect().await?;
        for folder in &self.config.folders {
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

/// Reads the greeting: it must arrive within the timeout and be `OK` (or `PREAUTH`).
async fn greeted(
    endpoint: &Endpoint,
    mut client: Client<MailStream>,
) -> Result<Client<MailStream>, MailboxError> {
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
            ..
        } => Ok(client),
        other => Err(MailboxError::new(
            MailboxStage::Greeting,
            format!("{endpoint}: unexpected greeting {other:?}"),
        )),
    }
}

/// Bounds one IMAP command by the endpoint's timeout and labels its failure with `stage`.
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

/// Finds the canaries of one folder; returns the folder's UIDNEXT as of the SELECT.
async fn scan_folder(
    session: &mut ImapSession,
    endpoint: &Endpoint,
    folder: &str,
    found: &mut Vec<Arrival>,
) -> Result<Option<u32>, MailboxError> {
    let selected = bounded(
        endpoint,
        MailboxStage::Select,
        "SELECT",
        session.select(folder),
    )
    .await?;
    let validity = selected.uid_validity.unwrap_or(0);
    let query = format!("HEADER {HEADER_NAME} \"\"");
    let uids = bounded(
        endpoint,
        MailboxStage::Search,
        "UID SEARCH",
        session.uid_search(&query),
    )
    .await?;
    let seen_ms = clock::now_ms();
    if uids.is_empty() {
        return Ok(selected.uid_next);
    }
    let mut uids: Vec<u32> = uids.into_iter().collect();
    uids.sort_unstable();
    let fetches = bounded(endpoint, MailboxStage::Search, "UID FETCH", async {
        let items = format!("(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS ({HEADER_NAME} Received)])");
        session
            .uid_fetch(uid_set(&uids), items)
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    for fetch in fetches {
        let (Some(uid), Some(head)) = (fetch.uid, fetch.header()) else {
            continue;
        };
        let Some(header) = find_header(head) else {
            continue;
        };
        found.push(Arrival {
            id: MailId {
                folder: folder.to_string(),
                key: format!("{validity}.{uid}"),
            },
            mark: Mark::Header(header),
            head: head.to_vec(),
            seen_ms,
            server_ms: fetch
                .internal_date()
                .and_then(|d| u64::try_from(d.timestamp_millis()).ok()),
        });
    }
    Ok(selected.uid_next)
}

async fn clean_folder(
    conn: &mut Connected,
    config: &ImapConfig,
    folder: &str,
    mails: &[&MailId],
) -> Result<(), MailboxError> {
    let endpoint = &config.endpoint;
    let session = &mut conn.session;
    let selected = bounded(
        endpoint,
        MailboxStage::Cleanup,
        "SELECT",
        session.select(folder),
    )
    .await?;
    let validity = selected.uid_validity.unwrap_or(0);
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
    match &config.cleanup {
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
            delete(session, endpoint, &set, conn.uidplus).await
        }
        Cleanup::Delete => delete(session, endpoint, &set, conn.uidplus).await,
    }
}

/// Flags the UIDs `\Deleted` and expunges exactly them. Without UIDPLUS a plain EXPUNGE could
/// remove other clients' deleted mail, so the canaries are only flagged.
async fn delete(
    session: &mut ImapSession,
    endpoint: &Endpoint,
    set: &str,
    uidplus: bool,
) -> Result<(), MailboxError> {
    bounded(endpoint, MailboxStage::Cleanup, "UID STORE", async {
        session
            .uid_store(set, "+FLAGS.SILENT (\\Deleted)")
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    if uidplus {
        bounded(endpoint, MailboxStage::Cleanup, "UID EXPUNGE", async {
            session
                .uid_expunge(set)
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
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
