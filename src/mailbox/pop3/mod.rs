//! POP3 receiver: a small client of our own (RFC 1939, CAPA per RFC 2449, STLS per RFC 2595),
//! because no maintained crate speaks STLS.
//!
//! POP3 locks the maildrop and shows it as it was at login, so a session never outlives one
//! look: [`Mailbox::canaries`] logs in and lists, [`Mailbox::clean_up`] marks the canaries
//! handed back with `DELE` and ends the session with `QUIT`, which is what commits the
//! deletions. On any error the connection is dropped without `QUIT`, and by RFC 1939 a server
//! then deletes nothing: a half-done cleanup is retried on the next look, never half-applied.
//!
//! POP3 cannot search headers, so each mail's head is read once with `TOP n 0` and the verdict
//! is remembered by UIDL across sessions (the head for canaries, nothing for other mail): a
//! mailbox of thousands of ordinary mails costs one `UIDL` per look, not thousands of `TOP`s.
//!
//! Every command is bounded by the endpoint's timeout; the wire format lives in `proto`,
//! which does no I/O.

pub mod proto;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::error::Elapsed;
use tokio_native_tls::TlsConnector;

use self::proto::{Command, ProtoError, Reply, ReplyParser};
use super::tls::{self, MailStream};
use super::{Arrival, Look, MailId, Mailbox, MailboxError, MailboxStage, Mark};
use crate::canary::find_header;
use crate::clock;
use crate::config::{Cleanup, Credentials, Endpoint, Pop3Config, TlsMode};
use crate::setup::SetupError;

/// POP3 has one folder; arrivals are reported in it.
const FOLDER: &str = "INBOX";

/// A POP3 mailbox: its config, the open session of the current look, and what earlier looks
/// learnt about each mail.
pub struct Pop3Mailbox {
    config: Pop3Config,
    tls: Option<TlsConnector>,
    session: Option<Session>,
    seen: HashMap<String, Seen>,
}

/// A logged-in session and the listing it was opened with: message numbers are only valid in
/// the session that listed them.
struct Session {
    conn: Connection,
    numbers: HashMap<String, u32>,
}

/// What is known about one mail, by UIDL.
struct Seen {
    /// When a look first listed it.
    first_ms: u64,
    /// Canary mark and raw head, for canaries; `None` for other mail.
    canary: Option<(Mark, Vec<u8>)>,
}

impl Seen {
    /// The arrival this mail is, if it carries a canary header.
    fn arrival(&self, uid: &str) -> Option<Arrival> {
        let (mark, head) = self.canary.as_ref()?;
        Some(Arrival {
            id: MailId {
                folder: FOLDER.to_string(),
                key: uid.to_string(),
            },
            mark: mark.clone(),
            head: head.clone(),
            seen_ms: self.first_ms,
            server_ms: None,
        })
    }
}

impl Pop3Mailbox {
    /// Prepares the adapter; reads `ca_file` now so a bad one fails at start-up.
    pub fn new(config: Pop3Config) -> Result<Pop3Mailbox, SetupError> {
        let tls = match config.endpoint.tls {
            TlsMode::None => None,
            _ => Some(tls::connector(&config.endpoint)?),
        };
        Ok(Pop3Mailbox {
            config,
            tls,
            session: None,
            seen: HashMap::new(),
        })
    }

    /// The maildrop's message numbers and UIDLs as of now, read in a session of its own (ended
    /// with `QUIT`, deleting nothing). For diagnostics and tests: it shows that mail nobody
    /// handed to `clean_up` is still there under the same UIDL.
    pub async fn uidls(&mut self) -> Result<Vec<(u32, String)>, MailboxError> {
        self.close().await;
        let mut conn = self.login().await?;
        let listing = listing(&mut conn).await?;
        quit(conn, MailboxStage::Cleanup).await?;
        Ok(listing)
    }

    /// Connects, reads the greeting, starts TLS as configured and logs in.
    async fn login(&self) -> Result<Connection, MailboxError> {
        let endpoint = &self.config.endpoint;
        let tcp = tls::connect(endpoint).await?;
        let stream = match (endpoint.tls, &self.tls) {
            (TlsMode::Tls, Some(connector)) => tls::handshake(connector, endpoint, tcp).await?,
            _ => MailStream::Plain(tcp),
        };
        let mut conn = Connection::new(stream, endpoint);
        let greeting = conn.read(ReplyParser::single(), "the greeting").await?;
        conn.accepted(greeting, MailboxStage::Greeting, "the greeting")?;
        if let (TlsMode::StartTls, Some(connector)) = (endpoint.tls, &self.tls) {
            conn = start_tls(conn, connector).await?;
        }
        let caps = capabilities(&mut conn, MailboxStage::Auth).await?;
        authenticate(&mut conn, &self.config.credentials, caps.sasl_plain).await?;
        Ok(conn)
    }

    /// Opens this look's session: login, listing, and the heads of mail not seen before.
    async fn scan(&mut self) -> Result<Vec<Arrival>, MailboxError> {
        let mut conn = self.login().await?;
        let listing = listing(&mut conn).await?;
        let seen_ms = clock::now_ms();
        let numbers: HashMap<String, u32> =
            listing.iter().map(|(n, uid)| (uid.clone(), *n)).collect();
        self.seen.retain(|uid, _| numbers.contains_key(uid));
        let mut found = Vec::new();
        for (n, uid) in &listing {
            if !self.seen.contains_key(uid) {
                let top = Command::Top { msg: *n, lines: 0 };
                let parser = ReplyParser::multi(proto::TOP_MAX);
                let head = conn.ok(top, parser, MailboxStage::Search).await?.body;
                let canary = find_header(&head).map(|header| (Mark::Header(header), head));
                let first_ms = seen_ms;
                self.seen.insert(uid.clone(), Seen { first_ms, canary });
            }
            found.extend(self.seen[uid].arrival(uid));
        }
        self.session = Some(Session { conn, numbers });
        Ok(found)
    }

    /// A session for a cleanup that has none (the look's session was lost): login and listing.
    async fn relisted(&self) -> Result<Session, MailboxError> {
        let mut conn = self.login().await?;
        let numbers = listing(&mut conn).await?;
        let numbers = numbers.into_iter().map(|(n, uid)| (uid, n)).collect();
        Ok(Session { conn, numbers })
    }
}

#[async_trait]
impl Mailbox for Pop3Mailbox {
    fn protocol(&self) -> &'static str {
        "pop3"
    }

    async fn canaries(&mut self) -> Result<Look, MailboxError> {
        // A session left open by an earlier look would still show the maildrop as it was then.
        self.close().await;
        let arrivals = self.scan().await?;
        Ok(Look {
            arrivals,
            skipped: 0,
        })
    }

    async fn clean_up(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        let wanted: Vec<&str> = match self.config.cleanup {
            Cleanup::Delete => mails
                .iter()
                .filter(|m| m.folder == FOLDER)
                .map(|m| m.key.as_str())
                .collect(),
            Cleanup::Keep | Cleanup::Move(_) => Vec::new(),
        };
        let Session { mut conn, numbers } = match self.session.take() {
            Some(session) => session,
            None if wanted.is_empty() => return Ok(()),
            None => self.relisted().await?,
        };
        // UIDLs the listing does not hold were deleted by someone else meanwhile: nothing to do.
        let targets: BTreeSet<u32> = wanted
            .iter()
            .filter_map(|k| numbers.get(*k))
            .copied()
            .collect();
        for n in targets {
            conn.simple(Command::Dele(n), MailboxStage::Cleanup).await?;
        }
        quit(conn, MailboxStage::Cleanup).await?;
        for uid in wanted {
            self.seen.remove(uid);
        }
        Ok(())
    }

    async fn check_login(&mut self) -> Result<(), MailboxError> {
        self.close().await;
        let conn = self.login().await?;
        quit(conn, MailboxStage::Cleanup).await
    }

    fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }

    async fn close(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(e) = quit(session.conn, MailboxStage::Cleanup).await
        {
            tracing::debug!(error = %e, "POP3 QUIT failed; the connection is dropped");
        }
    }
}

/// Asks for the capabilities. A server without CAPA (`-ERR`) simply has none we can use.
async fn capabilities(
    conn: &mut Connection,
    stage: MailboxStage,
) -> Result<proto::Capabilities, MailboxError> {
    let reply = conn.command(Command::Capa, ReplyParser::multi(proto::CAPA_MAX), stage);
    let reply = reply.await?;
    Ok(if reply.ok {
        proto::capabilities(&reply.body)
    } else {
        proto::Capabilities::default()
    })
}

/// STLS on a greeted plain connection, then the handshake. A server that does not offer STLS
/// is a failure, never a silent fall-back to plain text.
async fn start_tls(
    mut conn: Connection,
    connector: &TlsConnector,
) -> Result<Connection, MailboxError> {
    let stage = MailboxStage::Tls;
    if !capabilities(&mut conn, stage).await?.stls {
        let message = format!("{}: server does not offer STLS", conn.endpoint);
        return Err(MailboxError::new(stage, message));
    }
    conn.simple(Command::Stls, stage).await?;
    // Bytes that came after the STLS reply were sent in plain text by someone; taking them
    // as part of the encrypted session would let a man in the middle inject replies (the
    // STARTTLS response-injection attack).
    if !conn.buf.is_empty() {
        let message = format!("{}: data after the STLS reply", conn.endpoint);
        return Err(MailboxError::new(stage, message));
    }
    let MailStream::Plain(tcp) = conn.stream else {
        return Err(MailboxError::new(stage, "STLS on a TLS connection"));
    };
    let stream = tls::handshake(connector, &conn.endpoint, tcp).await?;
    Ok(Connection::new(stream, &conn.endpoint))
}

/// `AUTH PLAIN` when the server offers it (one round trip, no separate password line), else
/// `USER`/`PASS`. Messages name the user, never the password.
async fn authenticate(
    conn: &mut Connection,
    creds: &Credentials,
    sasl_plain: bool,
) -> Result<(), MailboxError> {
    let (user, pass) = (creds.username.as_str(), creds.password.expose());
    let stage = MailboxStage::Auth;
    let result = if sasl_plain {
        conn.simple(Command::AuthPlain { user, pass }, stage).await
    } else {
        match conn.simple(Command::User(user), stage).await {
            Ok(()) => conn.simple(Command::Pass(pass), stage).await,
            Err(e) => Err(e),
        }
    };
    result.map_err(|e| MailboxError::new(e.stage, format!("login as {user}: {}", e.message)))
}

/// Message numbers and UIDLs of the maildrop.
async fn listing(conn: &mut Connection) -> Result<Vec<(u32, String)>, MailboxError> {
    let stage = MailboxStage::Search;
    let reply = conn
        .ok(Command::Uidl, ReplyParser::multi(proto::UIDL_MAX), stage)
        .await?;
    proto::uidl_listing(&reply.body).map_err(|e| conn.failed(stage, "UIDL", &e))
}

/// Ends the session with `QUIT` (committing any `DELE`), then closes the stream.
async fn quit(mut conn: Connection, stage: MailboxStage) -> Result<(), MailboxError> {
    conn.simple(Command::Quit, stage).await?;
    let limit = conn.endpoint.timeout;
    // The server closes after its reply; a failed close_notify changes nothing.
    let _ = tokio::time::timeout(limit, conn.stream.shutdown()).await;
    Ok(())
}

/// Why reading a reply failed, below the level of stages.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("{0}")]
    Proto(#[from] ProtoError),
}

/// The stream plus the bytes read but not yet parsed: the only code that touches the socket.
struct Connection {
    stream: MailStream,
    buf: Vec<u8>,
    endpoint: Endpoint,
}

impl Connection {
    fn new(stream: MailStream, endpoint: &Endpoint) -> Connection {
        Connection {
            stream,
            buf: Vec::new(),
            endpoint: endpoint.clone(),
        }
    }

    /// Reads one reply within the timeout. Failures are at stage `Greeting`, the only reply
    /// read without a command.
    async fn read(&mut self, parser: ReplyParser, what: &str) -> Result<Reply, MailboxError> {
        let work = read_reply(&mut self.stream, &mut self.buf, parser);
        let result = tokio::time::timeout(self.endpoint.timeout, work).await;
        self.outcome(result, MailboxStage::Greeting, what)
    }

    /// Sends `command` and reads its reply (either status), both within one timeout.
    async fn command(
        &mut self,
        command: Command<'_>,
        parser: ReplyParser,
        stage: MailboxStage,
    ) -> Result<Reply, MailboxError> {
        let what = command.name();
        let wire = command.wire().map_err(|e| self.failed(stage, what, &e))?;
        let work = async {
            self.stream.write_all(&wire).await?;
            self.stream.flush().await?;
            read_reply(&mut self.stream, &mut self.buf, parser).await
        };
        let result = tokio::time::timeout(self.endpoint.timeout, work).await;
        self.outcome(result, stage, what)
    }

    /// Like [`Connection::command`], but `-ERR` is an error at `stage`.
    async fn ok(
        &mut self,
        command: Command<'_>,
        parser: ReplyParser,
        stage: MailboxStage,
    ) -> Result<Reply, MailboxError> {
        let reply = self.command(command, parser, stage).await?;
        self.accepted(reply, stage, command.name())
    }

    /// A command answered by one line, which must be `+OK`.
    async fn simple(
        &mut self,
        command: Command<'_>,
        stage: MailboxStage,
    ) -> Result<(), MailboxError> {
        self.ok(command, ReplyParser::single(), stage)
            .await
            .map(drop)
    }

    fn accepted(
        &self,
        reply: Reply,
        stage: MailboxStage,
        what: &str,
    ) -> Result<Reply, MailboxError> {
        reply.accepted().map_err(|e| self.failed(stage, what, &e))
    }

    fn outcome(
        &self,
        result: Result<Result<Reply, ReadError>, Elapsed>,
        stage: MailboxStage,
        what: &str,
    ) -> Result<Reply, MailboxError> {
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(self.failed(stage, what, &e)),
            Err(_) => Err(tls::timed_out(&self.endpoint, what, self.endpoint.timeout)),
        }
    }

    fn failed(&self, stage: MailboxStage, what: &str, e: &dyn std::fmt::Display) -> MailboxError {
        MailboxError::new(stage, format!("{}: {what}: {e}", self.endpoint))
    }
}

/// Reads until `parser` has a whole reply; leaves any later bytes in `buf`.
async fn read_reply(
    stream: &mut MailStream,
    buf: &mut Vec<u8>,
    mut parser: ReplyParser,
) -> Result<Reply, ReadError> {
    loop {
        if let Some((reply, used)) = parser.advance(buf)? {
            buf.drain(..used);
            return Ok(reply);
        }
        buf.reserve(8 * 1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

#[cfg(test)]
mod tests;
