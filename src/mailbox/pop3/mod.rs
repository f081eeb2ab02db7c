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

mod proto;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::error::Elapsed;
use tokio_native_tls::TlsConnector;

use self::proto::{Command, ProtoError, Reply, ReplyParser};
use super::tls::{self, MailStream};
use super::{Arrival, MailId, Mailbox, MailboxError, MailboxStage};
use crate::canary::find_header;
use crate::clock;
use crate::config::{Cleanup, Credentials, Endpoint, Pop3Config, TlsMode};

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
    /// Canary header value and raw head, for canaries; `None` for other mail.
    canary: Option<(String, Vec<u8>)>,
}

impl Seen {
    /// The arrival this mail is, if it carries a canary header.
    fn arrival(&self, uid: &str) -> Option<Arrival> {
        let (header, head) = self.canary.as_ref()?;
        Some(Arrival {
            id: MailId {
                folder: FOLDER.to_string(),
                key: uid.to_string(),
            },
            header: header.clone(),
            head: head.clone(),
            seen_ms: self.first_ms,
            server_ms: None,
        })
    }
}

impl Pop3Mailbox {
    /// Prepares the adapter; reads `ca_file` now so a bad one fails at start-up.
    pub fn new(config: Pop3Config) -> Result<Pop3Mailbox, String> {
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
                let canary = find_header(&head).map(|header| (header, head));
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

    async fn canaries(&mut self) -> Result<Vec<Arrival>, MailboxError> {
        // A session left open by an earlier look would still show the maildrop as it was then.
        self.close().await;
        self.scan().await
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
mod tests {
    //! The adapter against a scripted fake, for what the real stack will not do: stay silent,
    //! send garbage, lack STLS, inject bytes; and to count which commands a look sends.

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt as _, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Secret;

    const PASSWORD: &str = "sekrit-pw";

    /// A fake maildrop server. `greeting: None` accepts and never says anything.
    struct Fake {
        greeting: Option<&'static str>,
        capa: &'static str,
        stls: &'static str,
        auth_ok: bool,
        mails: Vec<(String, String)>,
        log: Vec<String>,
    }

    fn fake(mails: &[(&str, &str)]) -> Fake {
        Fake {
            greeting: Some("+OK fake ready\r\n"),
            capa: "TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n",
            stls: "+OK go ahead\r\n",
            auth_ok: true,
            mails: mails
                .iter()
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .collect(),
            log: Vec::new(),
        }
    }

    /// Serves `fake` on a loopback port; returns a mailbox for it and the shared state.
    async fn serve(fake: Fake, tls: TlsMode) -> (Pop3Mailbox, Arc<Mutex<Fake>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(fake));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                match shared.lock().unwrap().greeting {
                    Some(_) => drop(tokio::spawn(session(tcp, Arc::clone(&shared)))),
                    None => held.push(tcp),
                }
            }
        });
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls,
            tls_verify: true,
            ca_file: None,
            timeout: Duration::from_millis(300),
        };
        let credentials = Credentials {
            username: "u@example.test".into(),
            password: Secret::new(PASSWORD),
        };
        let (poll_interval, cleanup) = (Duration::from_secs(1), Cleanup::Delete);
        let config = Pop3Config {
            endpoint,
            credentials,
            poll_interval,
            cleanup,
        };
        (Pop3Mailbox::new(config).unwrap(), state)
    }

    async fn session(tcp: tokio::net::TcpStream, state: Arc<Mutex<Fake>>) {
        let (read, mut write) = tcp.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = state.lock().unwrap().greeting.unwrap_or_default();
        write.write_all(greeting.as_bytes()).await.unwrap();
        let mut deleted = BTreeSet::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let (reply, end) = answer(&mut state.lock().unwrap(), &line, &mut deleted);
            let _ = write.write_all(reply.as_bytes()).await;
            if end {
                break;
            }
        }
    }

    /// The fake's reply to one command line, and whether the session ends after it.
    fn answer(fake: &mut Fake, line: &str, deleted: &mut BTreeSet<usize>) -> (String, bool) {
        fake.log.push(line.to_string());
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or_default();
        let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let multi = |body: &str| format!("+OK\r\n{body}.\r\n");
        let reply = match verb {
            "CAPA" => multi(fake.capa),
            "STLS" => return (fake.stls.to_string(), true),
            "PASS" | "AUTH" if !fake.auth_ok => "-ERR [AUTH] failed\r\n".to_string(),
            "USER" | "PASS" | "AUTH" => "+OK\r\n".to_string(),
            "UIDL" => multi(
                &(fake.mails.iter().enumerate())
                    .map(|(i, (uid, _))| format!("{} {uid}\r\n", i + 1))
                    .collect::<String>(),
            ),
            "TOP" => multi(&format!("{}\r\n\r\n", fake.mails[n - 1].1)),
            "DELE" if deleted.insert(n) => "+OK\r\n".to_string(),
            "QUIT" => {
                let mut number = 0;
                fake.mails.retain(|_| {
                    number += 1;
                    !deleted.contains(&number)
                });
                return ("+OK bye\r\n".to_string(), true);
            }
            _ => "-ERR no\r\n".to_string(),
        };
        (reply, false)
    }

    /// Runs one look that must fail; returns the error and the commands the fake received.
    async fn failure(fake: Fake, tls: TlsMode) -> (MailboxError, Vec<String>) {
        let (mut mailbox, state) = serve(fake, tls).await;
        let error = mailbox.canaries().await.expect_err("the look fails");
        let log = state.lock().unwrap().log.clone();
        (error, log)
    }

    fn canary(id: &str) -> String {
        format!("Subject: c\r\nX-Mailcanary: v=1; id={id}")
    }

    fn keys(arrivals: &[Arrival]) -> Vec<&str> {
        arrivals.iter().map(|a| a.id.key.as_str()).collect()
    }

    #[tokio::test]
    async fn heads_are_read_once_and_only_named_canaries_are_deleted() {
        let (a, b) = (canary("A"), canary("B"));
        let drop = fake(&[("u1", "Subject: lunch"), ("u2", &a), ("u3", &b)]);
        let (mut mailbox, state) = serve(drop, TlsMode::None).await;
        let first = mailbox.canaries().await.unwrap();
        assert_eq!(keys(&first), ["u2", "u3"]);
        assert_eq!(first[0].header, "v=1; id=A");
        assert_eq!(first[0].head, format!("{a}\r\n\r\n").into_bytes());
        let id = |key: &str| MailId {
            folder: FOLDER.into(),
            key: key.into(),
        };
        mailbox
            .clean_up(&[id("u2"), id("u2"), id("gone")])
            .await
            .unwrap();

        state.lock().unwrap().mails.push(("u4".into(), canary("D")));
        let second = mailbox.canaries().await.unwrap();
        mailbox.clean_up(&[]).await.unwrap();
        assert_eq!(keys(&second), ["u3", "u4"]);
        assert_eq!(second[0].seen_ms, first[1].seen_ms, "first sight is kept");

        let state = state.lock().unwrap();
        let log: Vec<&str> = state.log.iter().map(|l| l.as_str()).collect();
        let login = ["CAPA", "AUTH PLAIN AHVAZXhhbXBsZS50ZXN0AHNla3JpdC1wdw=="];
        let look1 = ["UIDL", "TOP 1 0", "TOP 2 0", "TOP 3 0", "DELE 2", "QUIT"];
        // Only the new mail's head is read; u4 is message 3 now that u2 is gone.
        let look2 = ["UIDL", "TOP 3 0", "QUIT"];
        assert_eq!(log, [&login[..], &look1, &login, &look2].concat());
        let left: Vec<&str> = state.mails.iter().map(|(uid, _)| uid.as_str()).collect();
        assert_eq!(left, ["u1", "u3", "u4"]);
    }

    #[tokio::test]
    async fn check_login_logs_in_and_quits() {
        let (mut mailbox, state) = serve(fake(&[]), TlsMode::None).await;
        mailbox.check_login().await.unwrap();
        let log = state.lock().unwrap().log.clone();
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!((log[0].as_str(), log[2].as_str()), ("CAPA", "QUIT"));
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let mut silent = fake(&[]);
        silent.greeting = None;
        let (e, _) = failure(silent, TlsMode::None).await;
        assert_eq!(e.stage, MailboxStage::Timeout, "{e}");
    }

    #[tokio::test]
    async fn a_garbage_greeting_is_a_greeting_error() {
        let mut imap = fake(&[]);
        imap.greeting = Some("* OK IMAP4rev1 ready\r\n");
        let (e, log) = failure(imap, TlsMode::None).await;
        assert_eq!(e.stage, MailboxStage::Greeting, "{e}");
        assert!(log.is_empty(), "{log:?}");
    }

    #[tokio::test]
    async fn starttls_without_stls_fails_before_any_login() {
        let (e, log) = failure(fake(&[]), TlsMode::StartTls).await;
        assert_eq!(e.stage, MailboxStage::Tls, "{e}");
        assert_eq!(log, ["CAPA"]);
    }

    #[tokio::test]
    async fn bytes_after_the_stls_reply_are_refused() {
        let mut injecting = fake(&[]);
        (injecting.capa, injecting.stls) = ("STLS\r\n", "+OK go ahead\r\n+OK injected\r\n");
        let (e, log) = failure(injecting, TlsMode::StartTls).await;
        assert_eq!(e.stage, MailboxStage::Tls, "{e}");
        assert!(e.message.contains("data after the STLS reply"), "{e}");
        assert_eq!(log, ["CAPA", "STLS"]);
    }

    #[tokio::test]
    async fn a_refused_login_names_the_user_never_the_password() {
        let plain = "AHVAZXhhbXBsZS50ZXN0AHNla3JpdC1wdw=="; // \0u@example.test\0sekrit-pw
        for (capa, last) in [("SASL PLAIN\r\n", "AUTH PLAIN"), ("USER\r\n", "PASS")] {
            let mut refusing = fake(&[]);
            (refusing.capa, refusing.auth_ok) = (capa, false);
            let (e, log) = failure(refusing, TlsMode::None).await;
            assert_eq!(e.stage, MailboxStage::Auth, "{e}");
            assert!(e.message.contains("login as u@example.test"), "{e}");
            assert!(e.message.contains("-ERR [AUTH] failed"), "{e}");
            assert!(
                !e.message.contains(PASSWORD) && !e.message.contains(plain),
                "{e}"
            );
            assert!(log.last().unwrap().starts_with(last), "{log:?}");
        }
    }
}
