//! POP3 on the wire, without the wire: command forms and a reply parser over byte slices.
//!
//! Nothing here reads a socket or a clock, so every oddity a server can produce (a reply split
//! at any byte, a bare LF, a line that never ends) is a unit test on a byte string. The parser
//! is incremental: it is handed everything received so far, returns `Ok(None)` while a reply is
//! incomplete, and remembers how far it got so a long listing is scanned once, not once per
//! read; the caller may drop the bytes it has [released](ReplyParser::release), so even a long
//! reply passes through a small buffer. Every line and every multi-line body has a cap, so a
//! hostile or broken server costs a clear error, not the agent's memory. For `TOP`, whose
//! replies are the mail's own bytes and so anyone's to make large, the parser keeps only the
//! start of the body and reads past the rest (up to a larger cap), so one large mail neither
//! fills memory nor breaks the session.
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
/// Largest head (header block, blank line included) a mail may have to be judged. Real heads
/// are a few KiB; a canary's is never near this. A mail with a larger head is skipped.
pub const HEAD_MAX: usize = 64 * 1024;
/// Body lines asked for with `TOP`: enough for the body token, which the templates put in the
/// first lines of the first text part, with room for a gateway's banner or a quoted-printable
/// re-encoding. Lines are only the server's bound; [`TOP_KEEP`] is ours.
pub const TOP_BODY_LINES: u32 = 128;
/// Bytes of a `TOP` reply kept: a head at [`HEAD_MAX`] and the body-token window after it.
/// The rest is read and dropped, so one long body line costs reading, not memory.
pub const TOP_KEEP: usize = HEAD_MAX + crate::mailbox::BODY_WINDOW;
/// Largest `TOP` reply read to its end (kept or dropped). Past this the reply is an error and
/// the rest of it is still in the stream: the caller drops the connection.
pub const TOP_MAX: usize = 4 * 1024 * 1024;
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
    /// SASL with a bearer token as the initial response (RFC 5034, RFC 7628 or XOAUTH2).
    AuthToken {
        /// `XOAUTH2` or `OAUTHBEARER`.
        mechanism: &'static str,
        /// The initial response (before base64); holds the token.
        response: &'a str,
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
            Command::AuthToken { mechanism, .. } => match *mechanism {
                "OAUTHBEARER" => "AUTH OAUTHBEARER",
                _ => "AUTH XOAUTH2",
            },
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
            Command::AuthToken { response, .. } => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(response);
                format!("{} {encoded}", self.name())
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
            Command::AuthToken { .. } => write!(f, "{} <redacted>", self.name()),
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
    /// without the terminating `.`; only the first bytes if the reply was `truncated`. Empty
    /// otherwise.
    pub body: Vec<u8>,
    /// The body ran past what the parser keeps: `body` is its start, the rest was dropped.
    pub truncated: bool,
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

/// A body line still without its end is taken in pieces once this much of it is buffered, so
/// the buffer holds about this much of a long line, never the whole line.
const PIECE: usize = 8 * 1024;

/// Parses one reply from a growing buffer. Make a new one per reply.
#[derive(Debug)]
pub struct ReplyParser {
    /// `None` for a single-line reply; the body cap for a multi-line one.
    max_body: Option<usize>,
    /// Body bytes kept; later ones are counted against `max_body` but dropped.
    keep: usize,
    /// The status line, once read, for a multi-line reply.
    status: Option<String>,
    body: Vec<u8>,
    /// Body bytes received (unstuffed), kept or not.
    body_len: usize,
    /// Part of the current body line was taken already (it was long): what follows is its
    /// continuation, neither dot-stuffed nor the terminator.
    mid_line: bool,
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

    /// For commands whose `+OK` is followed by a body (CAPA, UIDL), capped at `max_body`
    /// bytes after unstuffing.
    pub fn multi(max_body: usize) -> ReplyParser {
        ReplyParser::new(Some(max_body))
    }

    /// For a multi-line reply of which only the first `keep` body bytes matter (TOP): the
    /// rest is read to the end of the reply and dropped, up to `max_body` bytes in all, so the
    /// stream stays in step with the commands.
    pub fn truncating(keep: usize, max_body: usize) -> ReplyParser {
        ReplyParser {
            keep: keep.min(max_body),
            ..ReplyParser::new(Some(max_body))
        }
    }

    fn new(max_body: Option<usize>) -> ReplyParser {
        ReplyParser {
            max_body,
            keep: max_body.unwrap_or(0),
            status: None,
            body: Vec::new(),
            body_len: 0,
            mid_line: false,
            pos: 0,
            scanned: 0,
        }
    }

    /// Parses as far as `buf` allows. `buf` must hold every byte received since the reply
    /// began (or since the last [`ReplyParser::release`]), the same prefix on every call, only
    /// ever longer. Returns the reply and how many bytes of `buf` it took, or `Ok(None)` when
    /// more bytes are needed.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtoError> {
        loop {
            let Some(max_body) = self.max_body.filter(|_| self.status.is_some()) else {
                let Some(range) = self.next_line(buf, STATUS_LINE_MAX)? else {
                    return Ok(None);
                };
                let (ok, text) = status(&buf[range])?;
                if ok && self.max_body.is_some() {
                    self.status = Some(text);
                    continue;
                }
                let body = Vec::new();
                let reply = Reply {
                    ok,
                    text,
                    body,
                    truncated: false,
                };
                return Ok(Some((reply, self.pos)));
            };
            if !self.mid_line && self.whole_line_pending(buf) {
                // No line cap here: the body cap counts every byte, however the reply was
                // split into reads, so the outcome does not depend on the split.
                let Some(range) = self.next_line(buf, usize::MAX)? else {
                    return Ok(None);
                };
                let line = &buf[range];
                if line == b"." {
                    let reply = Reply {
                        ok: true,
                        text: self.status.take().unwrap_or_default(),
                        truncated: self.body_len > self.body.len(),
                        body: std::mem::take(&mut self.body),
                    };
                    return Ok(Some((reply, self.pos)));
                }
                let data = line.strip_prefix(b".").unwrap_or(line);
                self.take(data, max_body)?;
                self.take(b"\r\n", max_body)?;
                continue;
            }
            // A long line: take what has come of it, but its last byte, which may be the CR
            // of its CRLF.
            let rest = &buf[self.pos..];
            let from = self.scanned.min(rest.len());
            match rest[from..].iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    let end = from + lf;
                    if end == 0 || rest[end - 1] != b'\r' {
                        return Err(ProtoError::BareLf);
                    }
                    let data = &rest[..end - 1];
                    self.take(data, max_body)?;
                    self.take(b"\r\n", max_body)?;
                    (self.pos, self.scanned, self.mid_line) = (self.pos + end + 1, 0, false);
                }
                None if rest.len() > PIECE => {
                    let piece = &rest[..rest.len() - 1];
                    let data = match self.mid_line {
                        true => piece,
                        false => piece.strip_prefix(b".").unwrap_or(piece),
                    };
                    self.take(data, max_body)?;
                    (self.pos, self.scanned, self.mid_line) = (self.pos + piece.len(), 1, true);
                }
                None => {
                    self.scanned = rest.len();
                    return Ok(None);
                }
            }
        }
    }

    /// Bytes at the start of `buf` the parser is done with; it forgets them, and the caller
    /// may drop them from `buf` before the next [`ReplyParser::advance`]. Lets a long reply
    /// pass through a small buffer.
    pub fn release(&mut self) -> usize {
        std::mem::take(&mut self.pos)
    }

    /// Whether the next body line can be read whole: it has ended, or is still short.
    fn whole_line_pending(&self, buf: &[u8]) -> bool {
        let rest = &buf[self.pos..];
        rest.len() <= PIECE || rest[self.scanned.min(rest.len())..].contains(&b'\n')
    }

    /// Counts body bytes against the cap, keeping those that fit in `keep`.
    fn take(&mut self, data: &[u8], max_body: usize) -> Result<(), ProtoError> {
        self.body_len += data.len();
        if self.body_len > max_body {
            return Err(ProtoError::BodyTooLong(max_body));
        }
        let room = self.keep.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..data.len().min(room)]);
        Ok(())
    }

    /// The next complete line (without its CRLF), consuming it; `None` if it has not ended yet.
    fn next_line(&mut self, buf: &[u8], cap: usize) -> Result<Option<Range<usize>>, ProtoError> {
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
    } else if line == b"+" || line.starts_with(b"+ ") {
        // A SASL challenge (RFC 5034). The only one this client can meet is the error report
        // XOAUTH2 and OAUTHBEARER send before their final -ERR: a refusal. The session is then
        // mid-exchange and is dropped by the caller.
        return Ok((
            false,
            "(a SASL challenge: the server refused the token)".into(),
        ));
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
mod tests;
