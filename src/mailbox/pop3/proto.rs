//! POP3 on the wire, without the wire: command forms and a reply parser over byte slices.
//!
//! Nothing here reads a socket or a clock, so every oddity a server can produce (a reply split
//! at any byte, a bare LF, a line that never ends) is a unit test on a byte string. The parser
//! is incremental: it is handed everything received so far, returns `Ok(None)` while a reply is
//! incomplete, and remembers how far it got so a long listing is scanned once, not once per
//! read. Every line and every multi-line body has a cap, so a hostile or broken server costs a
//! clear error, not the agent's memory.
//!
//! Replies follow RFC 1939: a status line `+OK text` or `-ERR text`, ended by CRLF; for
//! multi-line commands (CAPA, UIDL, TOP) an `+OK` is followed by lines ended by a lone `.`,
//! with a leading `.` stuffed onto every line that starts with one.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;

/// Longest status line accepted, CRLF included. RFC 2449 allows 512 octets; servers' free text
/// sometimes runs longer, so there is room, but not unbounded room.
pub const STATUS_LINE_MAX: usize = 8 * 1024;
/// Largest CAPA body: a few dozen short lines in practice.
pub const CAPA_MAX: usize = 64 * 1024;
/// Largest `TOP n 0` body (a mail's header block). Real heads are a few KiB; a mail with more
/// than this is not one of our canaries and is reported as an error rather than buffered.
pub const TOP_MAX: usize = 1024 * 1024;
/// Largest UIDL listing: about 400,000 mails with Dovecot's 32-character UIDLs.
pub const UIDL_MAX: usize = 16 * 1024 * 1024;
/// Longest unique-id RFC 1939 allows.
const UID_MAX: usize = 70;

/// Why bytes from the server, or an argument for it, cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The reply does not start with `+OK` or `-ERR` (the bytes, escaped and shortened).
    #[error("not a POP3 status line: \"{0}\"")]
    BadStatus(String),
    /// A line ended in LF without the CR before it.
    #[error("line not ended by CRLF")]
    BareLf,
    /// A line ran past the cap without ending.
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    /// A multi-line body ran past its cap.
    #[error("multi-line reply longer than {0} bytes")]
    BodyTooLong(usize),
    /// The server answered `-ERR` (its text).
    #[error("server said -ERR {0}")]
    Refused(String),
    /// A UIDL listing line is malformed (the line, escaped).
    #[error("bad UIDL line \"{0}\"")]
    BadListing(String),
    /// Two messages share a UIDL, so deleting by UIDL could hit the wrong one.
    #[error("UIDL \"{0}\" appears twice in the listing")]
    DuplicateUid(String),
    /// An argument cannot be sent (it would break the command line); the value is not shown,
    /// since it may be a password.
    #[error("{0} argument contains a forbidden byte (CR, LF or NUL)")]
    BadArgument(&'static str),
}

/// One command the client sends. Its wire form is [`Command::wire`]; its `Debug` hides secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// List capabilities (RFC 2449).
    Capa,
    /// Start TLS (RFC 2595).
    Stls,
    /// Name the user for `PASS`.
    User(&'a str),
    /// The password after `USER`.
    Pass(&'a str),
    /// SASL PLAIN with the initial response on the command line (RFC 5034).
    AuthPlain {
        /// Login name (authentication and authorisation identity are the same).
        user: &'a str,
        /// Password.
        pass: &'a str,
    },
    /// Unique ids of every message.
    Uidl,
    /// The header block and `lines` body lines of message `msg`.
    Top {
        /// Message number in this session.
        msg: u32,
        /// Body lines wanted (0: headers only).
        lines: u32,
    },
    /// Mark message `n` for deletion at `QUIT`.
    Dele(u32),
    /// End the session; deletions are committed only now.
    Quit,
}

impl Command<'_> {
    /// The command word, for messages. Never the arguments: they may hold a password.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::AuthPlain { .. } => "AUTH PLAIN",
            Command::Uidl => "UIDL",
            Command::Top { .. } => "TOP",
            Command::Dele(_) => "DELE",
            Command::Quit => "QUIT",
        }
    }

    /// The bytes to send, CRLF included. Refuses arguments that would end the line early
    /// (and so smuggle in a second command) or, for PLAIN, shift its NUL-separated fields.
    pub fn wire(&self) -> Result<Vec<u8>, ProtoError> {
        let line = match *self {
            Command::Capa | Command::Stls | Command::Uidl | Command::Quit => self.name().into(),
            Command::User(user) => format!("USER {}", line_safe(user, "USER")?),
            Command::Pass(pass) => format!("PASS {}", line_safe(pass, "PASS")?),
            Command::AuthPlain { user, pass } => {
                let user = line_safe(user, "AUTH PLAIN")?;
                let pass = line_safe(pass, "AUTH PLAIN")?;
                let token = format!("\0{user}\0{pass}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(token);
                format!("AUTH PLAIN {encoded}")
            }
            Command::Top { msg, lines } => format!("TOP {msg} {lines}"),
            Command::Dele(msg) => format!("DELE {msg}"),
        };
        Ok(format!("{line}\r\n").into_bytes())
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(user) => write!(f, "USER {user}"),
            Command::Pass(_) => write!(f, "PASS <redacted>"),
            Command::AuthPlain { user, .. } => write!(f, "AUTH PLAIN <{user}, redacted>"),
            Command::Top { msg, lines } => write!(f, "TOP {msg} {lines}"),
            Command::Dele(msg) => write!(f, "DELE {msg}"),
            other => f.write_str(other.name()),
        }
    }
}

fn line_safe<'a>(value: &'a str, command: &'static str) -> Result<&'a str, ProtoError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(ProtoError::BadArgument(command));
    }
    Ok(value)
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `+OK` (true) or `-ERR` (false).
    pub ok: bool,
    /// The status line's text after the indicator, lossily decoded.
    pub text: String,
    /// For an `+OK` to a multi-line command: the lines, dot-unstuffed, each ended by CRLF,
    /// without the terminating `.`. Empty otherwise.
    pub body: Vec<u8>,
}

impl Reply {
    /// The reply if it is `+OK`; `-ERR` becomes [`ProtoError::Refused`] with the server's text.
    pub fn accepted(self) -> Result<Reply, ProtoError> {
        if self.ok {
            Ok(self)
        } else {
            Err(ProtoError::Refused(self.text))
        }
    }
}

/// Parses one reply from a growing buffer. Make a new one per reply.
#[derive(Debug)]
pub struct ReplyParser {
    /// `None` for a single-line reply; the body cap for a multi-line one.
    max_body: Option<usize>,
    /// The status line, once read, for a multi-line reply.
    status: Option<String>,
    body: Vec<u8>,
    /// Start of the first line not yet taken.
    pos: usize,
    /// Bytes after `pos` already searched for LF without finding one.
    scanned: usize,
}

impl ReplyParser {
    /// For commands answered by one status line.
    pub fn single() -> ReplyParser {
        ReplyParser::new(None)
    }

    /// For commands whose `+OK` is followed by a body (CAPA, UIDL, TOP), capped at `max_body`
    /// bytes after unstuffing.
    pub fn multi(max_body: usize) -> ReplyParser {
        ReplyParser::new(Some(max_body))
    }

    fn new(max_body: Option<usize>) -> ReplyParser {
        ReplyParser {
            max_body,
            status: None,
            body: Vec::new(),
            pos: 0,
            scanned: 0,
        }
    }

    /// Parses as far as `buf` allows. `buf` must hold every byte received since the reply
    /// began, the same prefix on every call, only ever longer. Returns the reply and how many
    /// bytes of `buf` it took, or `Ok(None)` when more bytes are needed.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtoError> {
        while let Some(range) = self.next_line(buf)? {
            let line = &buf[range];
            let Some(max_body) = self.max_body.filter(|_| self.status.is_some()) else {
                let (ok, text) = status(line)?;
                if ok && self.max_body.is_some() {
                    self.status = Some(text);
                    continue;
                }
                let body = Vec::new();
                return Ok(Some((Reply { ok, text, body }, self.pos)));
            };
            if line == b"." {
                let text = self.status.take().unwrap_or_default();
                let body = std::mem::take(&mut self.body);
                return Ok(Some((
                    Reply {
                        ok: true,
                        text,
                        body,
                    },
                    self.pos,
                )));
            }
            let data = line.strip_prefix(b".").unwrap_or(line);
            if self.body.len() + data.len() + 2 > max_body {
                return Err(ProtoError::BodyTooLong(max_body));
            }
            self.body.extend_from_slice(data);
            self.body.extend_from_slice(b"\r\n");
        }
        Ok(None)
    }

    /// The next complete line (without its CRLF), consuming it; `None` if it has not ended yet.
    fn next_line(&mut self, buf: &[u8]) -> Result<Option<Range<usize>>, ProtoError> {
        let cap = match (self.max_body, &self.status) {
            // A stuffed line of a full body: its dot, its data, its CRLF.
            (Some(max_body), Some(_)) => max_body.saturating_add(3),
            _ => STATUS_LINE_MAX,
        };
        let rest = &buf[self.pos..];
        let from = self.scanned.min(rest.len());
        let Some(lf) = rest[from..].iter().position(|&b| b == b'\n') else {
            self.scanned = rest.len();
            if rest.len() >= cap {
                return Err(ProtoError::LineTooLong(cap));
            }
            return Ok(None);
        };
        let end = from + lf;
        if end + 1 > cap {
            return Err(ProtoError::LineTooLong(cap));
        }
        if end == 0 || rest[end - 1] != b'\r' {
            return Err(ProtoError::BareLf);
        }
        let line = self.pos..self.pos + end - 1;
        self.pos += end + 1;
        self.scanned = 0;
        Ok(Some(line))
    }
}

/// Splits a status line into `+OK`/`-ERR` and its text. The indicator must be followed by the
/// end of the line or a space: `+OKAY` is garbage, not agreement.
fn status(line: &[u8]) -> Result<(bool, String), ProtoError> {
    let (ok, rest) = if let Some(rest) = line.strip_prefix(b"+OK") {
        (true, rest)
    } else if let Some(rest) = line.strip_prefix(b"-ERR") {
        (false, rest)
    } else {
        return Err(ProtoError::BadStatus(shown(line)));
    };
    let text = match rest {
        [] => &[][..],
        [b' ', text @ ..] => text,
        _ => return Err(ProtoError::BadStatus(shown(line))),
    };
    Ok((ok, String::from_utf8_lossy(text).into_owned()))
}

/// Bytes from the server, escaped and cut short, for an error message.
fn shown(bytes: &[u8]) -> String {
    let mut text: String = bytes
        .iter()
        .take(80)
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect();
    if bytes.len() > 80 {
        text.push('…');
    }
    text
}

/// What a server announced in its CAPA reply, as far as this client cares.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `STLS`: TLS can be started on this connection.
    pub stls: bool,
    /// `SASL` lists `PLAIN`.
    pub sasl_plain: bool,
}

/// Reads a CAPA body. Tags and mechanism names are case-insensitive; unknown ones are ignored.
pub fn capabilities(body: &[u8]) -> Capabilities {
    let mut caps = Capabilities::default();
    for line in String::from_utf8_lossy(body).lines() {
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some(tag) if tag.eq_ignore_ascii_case("STLS") => caps.stls = true,
            Some(tag) if tag.eq_ignore_ascii_case("SASL") => {
                caps.sasl_plain |= words.any(|m| m.eq_ignore_ascii_case("PLAIN"));
            }
            _ => {}
        }
    }
    caps
}

/// Reads a UIDL body into (message number, unique id) pairs, in the server's order. Strict:
/// any odd line fails the whole listing, and so do repeated numbers or ids, because the ids
/// decide which message a `DELE` removes.
pub fn uidl_listing(body: &[u8]) -> Result<Vec<(u32, String)>, ProtoError> {
    let mut out = Vec::new();
    let mut numbers = std::collections::HashSet::new();
    let mut uids = std::collections::HashSet::new();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let bad = || ProtoError::BadListing(shown(line));
        let text = std::str::from_utf8(line).map_err(|_| bad())?;
        let (number, uid) = text.split_once(' ').ok_or_else(bad)?;
        let number: u32 = match number.parse() {
            Ok(n) if n > 0 && number.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad()),
        };
        let uid_ok =
            (1..=UID_MAX).contains(&uid.len()) && uid.bytes().all(|b| b.is_ascii_graphic());
        if !uid_ok || !numbers.insert(number) {
            return Err(bad());
        }
        if !uids.insert(uid) {
            return Err(ProtoError::DuplicateUid(uid.to_string()));
        }
        out.push((number, uid.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::ProtoError::*;
    use super::*;

    /// `None`: a single-line reply; `Some(cap)`: a multi-line one.
    fn parse(multi: Option<usize>, bytes: &[u8]) -> Result<Option<(Reply, usize)>, ProtoError> {
        ReplyParser::new(multi).advance(bytes)
    }

    fn reply(ok: bool, text: &str, body: &[u8]) -> Reply {
        let (text, body) = (text.to_string(), body.to_vec());
        Reply { ok, text, body }
    }

    /// A server's side of a whole session, and the replies the client expects to read from it.
    fn transcript() -> (&'static [u8], Vec<(Option<usize>, Reply)>) {
        let wire = b"+OK Dovecot (Debian) ready.\r\n\
            +OK\r\nCAPA\r\nTOP\r\nUIDL\r\nSTLS\r\nSASL PLAIN LOGIN\r\n.\r\n\
            +OK Logged in.\r\n\
            +OK\r\n1 000a1b2c\r\n2 000a1b2d\r\n.\r\n\
            +OK\r\nSubject: dots\r\nX-Mailcanary: v=1;\r\n\tid=A\r\n\r\n.\r\n\
            +OK headers follow\r\n..leading dot\r\n...\r\n\r\nX: y\r\n\r\n.\r\n\
            -ERR no such message\r\n\
            +OK\r\n\
            +OK Logging out.\r\n";
        let (capa, uidl, top) = (Some(CAPA_MAX), Some(UIDL_MAX), Some(TOP_MAX));
        let capa_body = b"CAPA\r\nTOP\r\nUIDL\r\nSTLS\r\nSASL PLAIN LOGIN\r\n";
        let head = b"Subject: dots\r\nX-Mailcanary: v=1;\r\n\tid=A\r\n\r\n";
        let dotted = b".leading dot\r\n..\r\n\r\nX: y\r\n\r\n";
        let expected = vec![
            (None, reply(true, "Dovecot (Debian) ready.", b"")),
            (capa, reply(true, "", capa_body)),
            (None, reply(true, "Logged in.", b"")),
            (uidl, reply(true, "", b"1 000a1b2c\r\n2 000a1b2d\r\n")),
            (top, reply(true, "", head)),
            (top, reply(true, "headers follow", dotted)),
            (top, reply(false, "no such message", b"")),
            (None, reply(true, "", b"")),
            (None, reply(true, "Logging out.", b"")),
        ];
        (wire, expected)
    }

    #[test]
    fn a_transcript_parses_the_same_in_chunks_of_every_size() {
        let (wire, expected) = transcript();
        for chunk in 1..=512 {
            let (mut fed, mut buf) = (0, Vec::new());
            for (i, (multi, want)) in expected.iter().enumerate() {
                let mut parser = ReplyParser::new(*multi);
                let (reply, used) = loop {
                    if let Some(done) = parser.advance(&buf).unwrap() {
                        break done;
                    }
                    assert!(fed < wire.len(), "chunk {chunk}: reply {i} never completed");
                    let next = (fed + chunk).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                };
                assert_eq!(&reply, want, "chunk {chunk}, reply {i}");
                buf.drain(..used);
            }
            assert!(
                buf.is_empty() && fed == wire.len(),
                "chunk {chunk}: bytes left"
            );
        }
    }

    #[test]
    fn incomplete_replies_ask_for_more() {
        let cases: [(&[u8], Option<usize>); 7] = [
            (b"", None),
            (b"+O", None),
            (b"+OK ready\r", None),
            (b"+OK\r\n", Some(100)),
            (b"+OK\r\nline\r\n", Some(100)),
            (b"+OK\r\nline\r\n.", Some(100)),
            (b"+OK\r\nline\r\n.\r", Some(100)),
        ];
        for (bytes, multi) in cases {
            assert_eq!(parse(multi, bytes), Ok(None), "{}", shown(bytes));
        }
    }

    #[test]
    fn a_reply_takes_only_its_own_bytes() {
        let done = parse(None, b"+OK\r\n+OK next\r\n").unwrap();
        assert_eq!(done, Some((reply(true, "", b""), 5)));
        // -ERR to a multi-line command has no body: the next line is another reply.
        let done = parse(Some(100), b"-ERR no\r\n+OK\r\n.\r\n").unwrap();
        assert_eq!(done, Some((reply(false, "no", b""), 9)));
    }

    #[test]
    fn bad_replies_are_refused_with_a_reason() {
        let long_status = [b"+OK ".as_slice(), &[b'a'; STATUS_LINE_MAX]].concat();
        let long_body = [b"+OK\r\n".as_slice(), &[b'a'; 200], b"\r\n.\r\n"].concat();
        let bad = |s: &str| BadStatus(s.to_string());
        let cases: Vec<(&[u8], Option<usize>, ProtoError)> = vec![
            (b"HELLO\r\n", None, bad("HELLO")),
            (b"\r\n", None, bad("")),
            (b"+OKAY\r\n", None, bad("+OKAY")),
            (b"+ok\r\n", None, bad("+ok")),
            (b"-ERRor\r\n", None, bad("-ERRor")),
            (b"+ \r\n", None, bad("+ ")),
            (b"\x00\xff\r\n", None, bad("\\x00\\xff")),
            (b"* OK IMAP4rev1\r\n", None, bad("* OK IMAP4rev1")),
            (b"HELLO\r\n", Some(100), bad("HELLO")),
            (b"+OK hi\n", None, BareLf),
            (b"\n", None, BareLf),
            (b"+OK\r\nline\n.\r\n", Some(100), BareLf),
            (&long_status, None, LineTooLong(STATUS_LINE_MAX)),
            (&long_body, Some(100), LineTooLong(103)),
            (
                b"+OK\r\n0123456789\r\n0123456789\r\n.\r\n",
                Some(20),
                BodyTooLong(20),
            ),
        ];
        for (bytes, multi, want) in cases {
            assert_eq!(parse(multi, bytes), Err(want), "{}", shown(bytes));
        }
    }

    #[test]
    fn err_replies_become_refusals_with_the_server_text() {
        let (reply, _) = parse(None, b"-ERR [AUTH] Authentication failed.\r\n")
            .unwrap()
            .unwrap();
        let want = Refused("[AUTH] Authentication failed.".into());
        assert_eq!(reply.accepted(), Err(want));
        let (reply, _) = parse(None, b"-ERR\r\n").unwrap().unwrap();
        assert_eq!(reply.accepted(), Err(Refused(String::new())));
    }

    #[test]
    fn a_status_line_at_the_cap_is_accepted() {
        let mut line = b"+OK ".to_vec();
        line.resize(STATUS_LINE_MAX - 2, b'a');
        line.extend_from_slice(b"\r\n");
        let (reply, used) = parse(None, &line).unwrap().unwrap();
        assert_eq!(
            (reply.text.len(), used),
            (STATUS_LINE_MAX - 6, STATUS_LINE_MAX)
        );
    }

    #[test]
    fn commands_have_their_wire_forms() {
        let plain = Command::AuthPlain {
            user: "box@example.test",
            pass: "secret",
        };
        let cases: [(Command, &[u8]); 9] = [
            (Command::Capa, b"CAPA\r\n"),
            (Command::Stls, b"STLS\r\n"),
            (
                Command::User("box14@example.test"),
                b"USER box14@example.test\r\n",
            ),
            (Command::Pass("pass word"), b"PASS pass word\r\n"),
            (plain, b"AUTH PLAIN AGJveEBleGFtcGxlLnRlc3QAc2VjcmV0\r\n"),
            (Command::Uidl, b"UIDL\r\n"),
            (Command::Top { msg: 7, lines: 0 }, b"TOP 7 0\r\n"),
            (Command::Dele(12), b"DELE 12\r\n"),
            (Command::Quit, b"QUIT\r\n"),
        ];
        for (command, wire) in cases {
            assert_eq!(command.wire().unwrap(), wire, "{command:?}");
        }
    }

    #[test]
    fn arguments_cannot_smuggle_commands() {
        let plain = |user, pass| Command::AuthPlain { user, pass };
        let cases = [
            Command::User("a\r\nDELE 1"),
            Command::Pass("x\nDELE 1"),
            Command::Pass("x\r"),
            plain("a\0b", "p"),
            plain("a", "p\0"),
        ];
        for command in cases {
            assert_eq!(command.wire(), Err(BadArgument(command.name())));
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let pass = "hunter2";
        let shown = format!(
            "{:?} {:?} {}",
            Command::Pass(pass),
            Command::AuthPlain { user: "u", pass },
            Command::Pass("hunter2\n").wire().unwrap_err()
        );
        assert!(!shown.contains(pass), "{shown}");
    }

    #[test]
    fn capabilities_are_read_case_insensitively() {
        let both = Capabilities {
            stls: true,
            sasl_plain: true,
        };
        let dovecot = b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n\
            AUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n";
        assert_eq!(capabilities(dovecot), both);
        assert_eq!(capabilities(b"stls\r\nsasl login plain\r\n"), both);
        let none = capabilities(b"SASL LOGIN PLAINX\r\nX-STLS\r\nUSER\r\n");
        assert_eq!(none, Capabilities::default());
        assert_eq!(capabilities(b""), Capabilities::default());
    }

    #[test]
    fn uidl_listings_are_read_in_order() {
        let body = b"1 a0b1c2\r\n2 ~!x-Y_z\r\n10 3\r\n";
        let want = [(1, "a0b1c2"), (2, "~!x-Y_z"), (10, "3")].map(|(n, u)| (n, u.to_string()));
        assert_eq!(uidl_listing(body), Ok(want.to_vec()));
        assert_eq!(uidl_listing(b""), Ok(vec![]));
    }

    #[test]
    fn bad_uidl_listings_are_refused() {
        let uid = "u".repeat(UID_MAX + 1);
        let long = format!("1 {uid}\r\n");
        let bad = |s: &str| BadListing(s.to_string());
        let cases: Vec<(&[u8], ProtoError)> = vec![
            (b"1\r\n", bad("1")),
            (b"x abc\r\n", bad("x abc")),
            (b"0 abc\r\n", bad("0 abc")),
            (b"+1 abc\r\n", bad("+1 abc")),
            (b"1 a b\r\n", bad("1 a b")),
            (b"1 \r\n", bad("1 ")),
            (b"1 a\xffb\r\n", bad("1 a\\xffb")),
            (b"1 abc\r\n1 abd\r\n", bad("1 abd")),
            (b"1 abc\r\n2 abc\r\n", DuplicateUid("abc".into())),
            (
                long.as_bytes(),
                BadListing(shown(format!("1 {uid}").as_bytes())),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(uidl_listing(body), Err(want), "{}", shown(body));
        }
    }
}
