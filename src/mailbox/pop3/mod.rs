//! POP3 receiver: a small client of our own (RFC 1939, CAPA per RFC 2449, STLS per RFC 2595),
//! because no maintained crate speaks STLS.
//!
//! POP3 locks the maildrop and shows it as it was at login, so a session never outlives one
//! look: [`Mailbox::canaries`] logs in and lists, [`Mailbox::clean_up`] marks the canaries
//! handed back with `DELE` and ends the session with `QUIT`, which is what commits the
//! deletions. On any error the connection is dropped without `QUIT`, and by RFC 1939 a server
//! then deletes nothing: a half-done cleanup is retried on the next look, never half-applied.
//!
//! POP3 cannot search headers, so each mail is read once with `TOP n L`: its head and the
//! first [`proto::TOP_BODY_LINES`] body lines, of which at most [`proto::TOP_KEEP`] bytes are
//! kept (the rest of a long reply is read and dropped, up to [`proto::TOP_MAX`]). The canary is
//! found by its `X-Mailcanary` header or, where a gateway stripped that, by the signed token at
//! the start of the body. Each mail is then judged for good: its UIDL goes into a set that is
//! kept across looks and, through [`Mailbox::scan_memory`], across restarts and `once` runs,
//! so a mailbox of thousands of mails costs one `UIDL` per look, not thousands of `TOP`s, and a
//! canary is reported once. The set holds a 64-bit digest per UIDL still listed, nothing else:
//! no heads, and nothing of mail that is gone.
//!
//! Anyone can send mail into the box, so no single mail may stop the look. A mail whose head
//! is larger than [`proto::HEAD_MAX`], whose `TOP` is refused with `-ERR`, or whose reply
//! cannot be parsed or is longer than [`proto::TOP_MAX`] is skipped: judged "not a canary",
//! counted once in [`Look::skipped`], left in place, and the look goes on. A reply that was not
//! read to its end leaves the stream out of step, so the session is dropped and a new one
//! logged in (and listed again: numbers may have moved). A connection lost or timed out during
//! a `TOP` may be the server's fault rather than the mail's: that mail is retried once in a new
//! session and skipped only if it fails again; if no new session can be had, the look fails and
//! nothing of it is remembered. At most [`RESYNC_MAX`] new sessions are opened per look; mail
//! not judged by then waits for the next look.
//!
//! Every command is bounded by the endpoint's timeout; the wire format lives in `proto`,
//! which does no I/O.

pub mod proto;
mod record;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::error::Elapsed;
use tokio_native_tls::TlsConnector;

use self::proto::{Command, ProtoError, Reply, ReplyParser};
use super::tls::{self, MailStream};
use super::{Arrival, Look, MailId, Mailbox, MailboxError, MailboxStage, Mark, Step, Steps};
use crate::clock;
use crate::config::{Cleanup, Credentials, Endpoint, Login, Pop3Config, TlsMode};
use crate::mailbox::BODY_WINDOW;
use crate::oauth2;
use crate::setup::SetupError;
use crate::transcript::Recorder;

/// POP3 has one folder; arrivals are reported in it.
const FOLDER: &str = "INBOX";

/// New sessions one look may open after a mail left the stream out of step or the connection
/// was lost; the rest of the maildrop waits for the next look. Each one judges at least one
/// mail (a lost connection is retried once per mail), so looks always make progress.
pub const RESYNC_MAX: u32 = 8;

/// Prefix of the scan memory's serialised form; the account digest and the UIDL digests follow.
const MEMORY_PREFIX: &str = "pop3.1:";

/// A POP3 mailbox: its config, the open session of the current look, and the mails judged.
pub struct Pop3Mailbox {
    config: Pop3Config,
    tls: Option<TlsConnector>,
    session: Option<Session>,
    /// Digests ([`uidl_key`]) of the UIDLs judged (canaries reported, other mail, mail
    /// skipped as unreadable) and still listed at the last look.
    judged: HashSet<u64>,
    /// How long the last look's steps took, and the time spent opening sessions since the
    /// look began (a look logs in from `&self` paths, hence the lock; never held over an
    /// await).
    steps: std::sync::Mutex<(Steps, Duration)>,
    /// The current attempt's dialogue, for a failure's transcript ([`record`]).
    recorder: Recorder,
}

/// A logged-in session and the listing it was opened with: message numbers are only valid in
/// the session that listed them.
struct Session {
    conn: Connection,
    numbers: HashMap<String, u32>,
}

/// One line of a UIDL listing, with the digest the judged set is kept by.
struct Listed {
    number: u32,
    uid: String,
    key: u64,
}

/// The key a UIDL is remembered by: the first 64 bits of its SHA-256. Fixed size whatever the
/// server's UIDLs look like, and stable across restarts; UIDLs are chosen by the server, not
/// by a sender, and a collision among the few thousand mails of a box is a 1 in 10^12 chance.
fn uidl_key(uid: &str) -> u64 {
    let digest = Sha256::digest(uid.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
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
            judged: HashSet::new(),
            steps: std::sync::Mutex::default(),
            recorder: Recorder::default(),
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

    /// Connects, reads the greeting, starts TLS as configured and logs in. A failure says
    /// whether it was a token refused (see [`authenticate`]).
    async fn connect(&self) -> Result<Connection, (MailboxError, bool)> {
        let endpoint = &self.config.endpoint;
        let mut steps = Steps::default();
        let begun = tokio::time::Instant::now();
        let mut conn = self.greeted(&mut steps).await.map_err(|e| (e, false))?;
        if let (TlsMode::StartTls, Some(connector)) = (endpoint.tls, &self.tls) {
            let start_tls = start_tls(conn, connector);
            conn = steps
                .time(Step::Tls, start_tls)
                .await
                .map_err(|e| (e, false))?;
        }
        let login = async {
            let caps = capabilities(&mut conn, MailboxStage::Auth)
                .await
                .map_err(|e| (e, false))?;
            authenticate(&mut conn, &self.config.credentials, caps.sasl_plain).await
        };
        steps.time(Step::Login, login).await?;
        let mut kept = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        kept.0.update(&steps);
        kept.1 += begun.elapsed();
        Ok(conn)
    }

    /// [`Pop3Mailbox::connect`]; a refused token is renewed once, on a new connection (the
    /// refused one is mid-way through a SASL exchange), before the refusal counts.
    async fn login(&self) -> Result<Connection, MailboxError> {
        match self.connect().await {
            Err((e, true)) => {
                tracing::info!(
                    endpoint = %self.config.endpoint, user = %self.config.credentials.username,
                    error = %e.message, "token refused; fetching a new one and trying once more"
                );
                self.connect().await.map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// A connection whose greeting was `+OK`, on implicit TLS when so configured.
    async fn greeted(&self, steps: &mut Steps) -> Result<Connection, MailboxError> {
        let endpoint = &self.config.endpoint;
        self.recorder.note(&format!("connect to {endpoint}"));
        let tcp = steps.time(Step::Connect, tls::connect(endpoint)).await?;
        let stream = match (endpoint.tls, &self.tls) {
            (TlsMode::Tls, Some(connector)) => {
                let handshake = tls::handshake(connector, endpoint, tcp);
                steps.time(Step::Tls, handshake).await?
            }
            _ => MailStream::Plain(tcp),
        };
        let mut conn = Connection::new(stream, endpoint, &self.recorder);
        let greeting = steps.time(
            Step::Greeting,
            conn.read(ReplyParser::single(), "the greeting"),
        );
        let greeting = greeting.await?;
        conn.accepted(greeting, MailboxStage::Greeting, "the greeting")?;
        Ok(conn)
    }

    /// Login and listing, with each UIDL's key.
    async fn listed(&self) -> Result<(Connection, Vec<Listed>), MailboxError> {
        let mut conn = self.login().await?;
        let listing = listing(&mut conn).await?;
        let listing = listing
            .into_iter()
            .map(|(number, uid)| Listed {
                key: uidl_key(&uid),
                number,
                uid,
            })
            .collect();
        Ok((conn, listing))
    }

    /// This look: login, listing, and the start of each mail not judged before. Only when the
    /// whole look succeeds are its verdicts added to the judged set.
    async fn scan(&mut self) -> Result<Look, MailboxError> {
        let (conn, mut listing) = self.listed().await?;
        let mut conn = Some(conn);
        let seen_ms = clock::now_ms();
        let mut look = Look::default();
        let mut judged_now: HashSet<u64> = HashSet::new();
        // Mails whose connection was lost once in this look: skipped if it happens again.
        let mut struck: HashSet<u64> = HashSet::new();
        let mut resyncs = 0;
        let mut i = 0;
        while let (Some(mail), Some(c)) = (listing.get(i), conn.as_mut()) {
            i += 1;
            if self.judged.contains(&mail.key) || judged_now.contains(&mail.key) {
                continue;
            }
            let in_step = match c.top(mail.number).await {
                Top::Read { head, body_start } => {
                    if let Some(mark) = Mark::find(&head, &body_start) {
                        look.arrivals.push(Arrival {
                            id: MailId {
                                folder: FOLDER.to_string(),
                                key: mail.uid.clone(),
                            },
                            mark,
                            head,
                            seen_ms,
                            server_ms: None,
                        });
                    }
                    judged_now.insert(mail.key);
                    true
                }
                Top::Unreadable { why, in_step } => {
                    skip(&mail.uid, &why);
                    look.skipped += 1;
                    judged_now.insert(mail.key);
                    in_step
                }
                Top::Lost(e) => {
                    if struck.insert(mail.key) {
                        tracing::debug!(
                            uidl = %mail.uid, error = %e,
                            "POP3: TOP failed; retrying in a new session"
                        );
                    } else {
                        skip(&mail.uid, &e.message);
                        look.skipped += 1;
                        judged_now.insert(mail.key);
                    }
                    false
                }
            };
            if in_step {
                continue;
            }
            // The rest of a reply may still be on its way: this connection is of no more use.
            conn = None;
            resyncs += 1;
            if resyncs > RESYNC_MAX {
                tracing::warn!(
                    resyncs = RESYNC_MAX,
                    "POP3: too many unreadable mails for one look; the rest waits for the next"
                );
                break;
            }
            let (fresh, relisted) = self.listed().await?;
            (conn, listing, i) = (Some(fresh), relisted, 0);
        }
        let listed: HashSet<u64> = listing.iter().map(|m| m.key).collect();
        self.judged.retain(|key| listed.contains(key));
        self.judged
            .extend(judged_now.into_iter().filter(|key| listed.contains(key)));
        if let Some(conn) = conn {
            let numbers = listing.into_iter().map(|m| (m.uid, m.number)).collect();
            self.session = Some(Session { conn, numbers });
        }
        Ok(look)
    }

    /// A session for a cleanup that has none (the look's session was lost): login and listing.
    async fn relisted(&self) -> Result<Session, MailboxError> {
        let mut conn = self.login().await?;
        let numbers = listing(&mut conn).await?;
        let numbers = numbers.into_iter().map(|(n, uid)| (uid, n)).collect();
        Ok(Session { conn, numbers })
    }

    /// Names the account the scan memory belongs to, so a memory from another server or user
    /// (whose UIDLs may look the same) is not taken for this one's.
    fn account(&self) -> String {
        let e = &self.config.endpoint;
        let who = format!(
            "{}\0{}\0{}",
            e.host, e.port, self.config.credentials.username
        );
        let digest = Sha256::digest(who.as_bytes());
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Logs a mail skipped for good. Once per mail: it is not read again.
fn skip(uid: &str, why: &str) {
    tracing::warn!(
        uidl = %uid, reason = %why,
        "POP3: a mail cannot be read; skipped for good (not a canary), left in the mailbox"
    );
}

impl Pop3Mailbox {
    /// `DELE`s the canaries among `mails` and ends the session with `QUIT`, which commits it.
    async fn remove(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
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
        // Deleted mail leaves the judged set at the next look, which no longer lists it.
        quit(conn, MailboxStage::Cleanup).await
    }
}

#[async_trait]
impl Mailbox for Pop3Mailbox {
    fn protocol(&self) -> &'static str {
        "pop3"
    }

    fn restart_transcript(&mut self) {
        self.recorder.restart();
    }

    fn take_transcript(&mut self) -> Vec<String> {
        self.recorder.take()
    }

    async fn canaries(&mut self) -> Result<Look, MailboxError> {
        // A session left open by an earlier look would still show the maildrop as it was then.
        self.close().await;
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).1 = Duration::ZERO;
        let start = tokio::time::Instant::now();
        let look = self.scan().await;
        // The scan is what the look did besides opening sessions.
        let mut kept = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        let opening = kept.1;
        kept.0
            .record(Step::Scan, start.elapsed().saturating_sub(opening));
        drop(kept);
        look
    }

    /// `pop3.1:ACCOUNT:` and the judged UIDL keys, sorted, as big-endian bytes in base64url:
    /// about 11 characters per mail in the maildrop.
    fn scan_memory(&self) -> Option<String> {
        let mut keys: Vec<u64> = self.judged.iter().copied().collect();
        keys.sort_unstable();
        let bytes: Vec<u8> = keys.iter().flat_map(|k| k.to_be_bytes()).collect();
        let keys = URL_SAFE_NO_PAD.encode(bytes);
        Some(format!("{MEMORY_PREFIX}{}:{keys}", self.account()))
    }

    fn restore_scan_memory(&mut self, memory: &str) {
        let account = self.account();
        let keys = memory
            .strip_prefix(MEMORY_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .filter(|(of, _)| *of == account)
            .and_then(|(_, keys)| URL_SAFE_NO_PAD.decode(keys).ok())
            .filter(|bytes| bytes.len() % 8 == 0);
        match keys {
            Some(bytes) => {
                self.judged = bytes
                    .chunks_exact(8)
                    .map(|k| u64::from_be_bytes(k.try_into().expect("8 bytes")))
                    .collect();
            }
            None => tracing::info!("POP3: the scan memory is not this mailbox's; reading it anew"),
        }
    }

    fn steps(&self) -> Steps {
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    async fn clean_up(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        let start = tokio::time::Instant::now();
        let result = self.remove(mails).await;
        if !mails.is_empty() {
            let took = start.elapsed();
            let mut kept = self.steps.lock().unwrap_or_else(|p| p.into_inner());
            kept.0.record(Step::Cleanup, took);
        }
        result
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
    conn.recorder.note("TLS started");
    Ok(Connection::new(stream, &conn.endpoint, &conn.recorder))
}

/// `AUTH PLAIN` when the server offers it (one round trip, no separate password line), else
/// `USER`/`PASS`; with a token source, `AUTH XOAUTH2` or `AUTH OAUTHBEARER` with the token as
/// the initial response. Messages name the user, never the password or token. A refused token
/// is forgotten (so the next login fetches a new one) and the error says so with `true`.
async fn authenticate(
    conn: &mut Connection,
    creds: &Credentials,
    sasl_plain: bool,
) -> Result<(), (MailboxError, bool)> {
    let user = creds.username.as_str();
    let stage = MailboxStage::Auth;
    let result = match &creds.login {
        Login::Password(password) if sasl_plain => {
            let pass = password.expose();
            conn.simple(Command::AuthPlain { user, pass }, stage).await
        }
        Login::Password(password) => match conn.simple(Command::User(user), stage).await {
            Ok(()) => conn.simple(Command::Pass(password.expose()), stage).await,
            Err(e) => Err(e),
        },
        Login::Token { mechanism, source } => {
            let endpoint = &conn.endpoint;
            let token = oauth2::access_token(source, endpoint.timeout)
                .await
                .map_err(|e| (MailboxError::new(stage, e.to_string()), false))?;
            let response =
                oauth2::initial_response(*mechanism, user, &endpoint.host, endpoint.port, &token);
            let command = Command::AuthToken {
                mechanism: mechanism.as_str(),
                response: response.expose(),
            };
            let result = conn.simple(command, stage).await;
            if result.as_ref().is_err_and(|e| e.stage == stage) {
                oauth2::renew(source, &token);
                let e = result.expect_err("checked above");
                let message = format!("login as {user}: {}", e.message);
                return Err((MailboxError::new(e.stage, message), true));
            }
            result
        }
    };
    result.map_err(|e| {
        let message = format!("login as {user}: {}", e.message);
        (MailboxError::new(e.stage, message), false)
    })
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
    recorder: Recorder,
}

impl Connection {
    fn new(stream: MailStream, endpoint: &Endpoint, recorder: &Recorder) -> Connection {
        Connection {
            stream,
            buf: Vec::new(),
            endpoint: endpoint.clone(),
            recorder: recorder.clone(),
        }
    }

    /// Reads one reply within the timeout. Failures are at stage `Greeting`, the only reply
    /// read without a command.
    async fn read(&mut self, parser: ReplyParser, what: &str) -> Result<Reply, MailboxError> {
        let work = read_reply(&mut self.stream, &mut self.buf, parser);
        let result = tokio::time::timeout(self.endpoint.timeout, work).await;
        record::heard(&self.recorder, &result);
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
        record::said(&self.recorder, &command);
        let result = self.exchange(&wire, parser).await;
        record::heard(&self.recorder, &result);
        self.outcome(result, stage, what)
    }

    /// Writes `wire` and reads the reply, within one timeout.
    async fn exchange(
        &mut self,
        wire: &[u8],
        parser: ReplyParser,
    ) -> Result<Result<Reply, ReadError>, Elapsed> {
        let work = async {
            self.stream.write_all(wire).await?;
            self.stream.flush().await?;
            read_reply(&mut self.stream, &mut self.buf, parser).await
        };
        tokio::time::timeout(self.endpoint.timeout, work).await
    }

    /// `TOP msg L`: the head and the start of the body of one mail, or why that mail cannot
    /// be read, or the connection lost on the way.
    async fn top(&mut self, msg: u32) -> Top {
        let stage = MailboxStage::Search;
        let command = Command::Top {
            msg,
            lines: proto::TOP_BODY_LINES,
        };
        let wire = match command.wire() {
            Ok(wire) => wire,
            Err(e) => return Top::Lost(self.failed(stage, "TOP", &e)),
        };
        let parser = ReplyParser::truncating(proto::TOP_KEEP, proto::TOP_MAX);
        record::said(&self.recorder, &command);
        let result = self.exchange(&wire, parser).await;
        record::heard(&self.recorder, &result);
        match result {
            Ok(Ok(reply)) if reply.ok => match split_top(&reply.body, reply.truncated) {
                Ok((head, body_start)) => Top::Read { head, body_start },
                Err(why) => Top::Unreadable { why, in_step: true },
            },
            // RFC 3206: the server has a passing problem, which says nothing about the mail.
            Ok(Ok(reply)) if reply.text.starts_with("[SYS/TEMP]") => {
                Top::Lost(self.failed(stage, "TOP", &ProtoError::Refused(reply.text)))
            }
            Ok(Ok(reply)) => Top::Unreadable {
                why: ProtoError::Refused(reply.text).to_string(),
                in_step: true,
            },
            Ok(Err(ReadError::Proto(e))) => Top::Unreadable {
                why: e.to_string(),
                in_step: false,
            },
            Ok(Err(e)) => Top::Lost(self.failed(stage, "TOP", &e)),
            Err(_) => Top::Lost(tls::timed_out(&self.endpoint, "TOP", self.endpoint.timeout)),
        }
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

/// What a `TOP` for one mail came to.
enum Top {
    /// Its head (blank line included) and at most [`BODY_WINDOW`] bytes of its body.
    Read { head: Vec<u8>, body_start: Vec<u8> },
    /// The mail cannot be judged, and why; `in_step`: the reply was read to its end, so the
    /// connection can go on.
    Unreadable { why: String, in_step: bool },
    /// The connection failed (closed, timed out, I/O error, a passing server error): maybe
    /// the mail's fault, maybe not.
    Lost(MailboxError),
}

/// Splits a `TOP` body into the head (up to and including the blank line) and the start of
/// the body. A head longer than [`proto::HEAD_MAX`], or not ended within the bytes kept, makes
/// the mail unreadable; a mail that is all head (no blank line) has an empty body.
fn split_top(top: &[u8], truncated: bool) -> Result<(Vec<u8>, Vec<u8>), String> {
    let head_len = if top.starts_with(b"\r\n") {
        Some(2)
    } else {
        top.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
    };
    let head_len = match head_len {
        Some(len) => len,
        None if !truncated => top.len(),
        None => usize::MAX,
    };
    if head_len > proto::HEAD_MAX {
        return Err(format!("head longer than {} bytes", proto::HEAD_MAX));
    }
    let body = &top[head_len..];
    let body_start = &body[..body.len().min(BODY_WINDOW)];
    Ok((top[..head_len].to_vec(), body_start.to_vec()))
}

/// Reads until `parser` has a whole reply; leaves any later bytes in `buf`. Bytes the parser
/// is done with are dropped as it goes, so a long reply passes through a small buffer.
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
        buf.drain(..parser.release());
        buf.reserve(8 * 1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

#[cfg(test)]
mod tests;
