//! Failure transcripts: what was said on the wire during the attempt that failed, as `C: …`
//! (client) and `S: …` (server) lines, plus `-- …` notes of ours (a TLS handshake, a timeout).
//!
//! When sending or reading fails, the person on call wants the server's own words, not only our
//! one-line summary. A [`Transcript`] keeps the current attempt's dialogue, bounded: at most
//! [`MAX_LINES`] lines and [`MAX_BYTES`] bytes, the oldest dropped first (the end of a dialogue
//! is where it went wrong), each line cut at [`MAX_LINE`] bytes with a marker saying how much
//! was left out, control characters written as `\xNN`. A server that answers with a megabyte
//! on one line therefore costs at most one line's worth here.
//!
//! Credentials never reach a transcript. Where we issue a login command ourselves (SMTP `AUTH`,
//! POP3 `USER`/`PASS`/`AUTH`), the redacted form is what is recorded: the secret is never handed
//! over. IMAP's dialogue is recorded below async-imap by a stream wrapper ([`stream`]), because
//! async-imap hides its tags, untagged replies and continuation requests; there the login code
//! marks its span with [`Recorder::conceal`], inside which every client line that is not a
//! recognised login command is recorded as `<redacted>` whole. On top of both, every client line
//! passes [`redact`] (`LOGIN user pass`, `AUTHENTICATE`/`AUTH mechanism response`, `PASS …`) and
//! every line after an `AUTH`/`AUTHENTICATE` up to the server's final answer (SASL
//! continuations) is recorded as `<redacted>`.
//!
//! Cheap on the success path: one transcript per attempt, lines kept in a ring whose buffers
//! are reused once it is full, dropped unread when the attempt succeeds.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;

pub mod stream;

pub use stream::{Recorded, Recorder};

/// Most lines kept per transcript.
pub const MAX_LINES: usize = 64;
/// Most bytes kept per transcript (prefixes and markers included).
pub const MAX_BYTES: usize = 8 * 1024;
/// Longest line kept, in bytes of its text; the rest is replaced by a marker.
pub const MAX_LINE: usize = 512;
/// What stands for a credential.
pub const REDACTED: &str = "<redacted>";

/// Who said a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The agent (a command).
    Client,
    /// The server (a reply).
    Server,
    /// The agent's own remark on what happened (not on the wire).
    Note,
}

impl Who {
    fn prefix(self) -> &'static str {
        match self {
            Who::Client => "C: ",
            Who::Server => "S: ",
            Who::Note => "-- ",
        }
    }
}

/// One attempt's dialogue, bounded (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines dropped from the front to stay within the bounds.
    left_out: usize,
}

impl Transcript {
    /// Records a command we sent; it passes [`redact`] even when the caller redacted it.
    pub fn client(&mut self, line: &str) {
        match redact(line) {
            Redaction::Redacted(shown) => self.push(Who::Client, &shown),
            Redaction::Plain(line) | Redaction::Safe(line) => self.push(Who::Client, line),
        }
    }

    /// Records a reply line of the server.
    pub fn server(&mut self, line: &str) {
        self.push(Who::Server, line);
    }

    /// Records a remark of ours.
    pub fn note(&mut self, line: &str) {
        self.push(Who::Note, line);
    }

    /// Records `line` as said by `who`: cut, made printable, oldest lines dropped to fit.
    pub fn push(&mut self, who: Who, line: &str) {
        self.push_cut(who, line, 0);
    }

    /// [`Transcript::push`] for a line of which `dropped` further bytes were not kept.
    pub(crate) fn push_cut(&mut self, who: Who, line: &str, dropped: usize) {
        let mut entry = if self.lines.len() >= MAX_LINES {
            self.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        entry.clear();
        entry.push_str(who.prefix());
        let mut dropped = dropped;
        for (i, c) in line.char_indices() {
            if entry.len() >= MAX_LINE + who.prefix().len() {
                dropped += line.len() - i;
                break;
            }
            if c.is_control() {
                let _ = write!(entry, "\\x{:02x}", u32::from(c).min(0xff));
            } else {
                entry.push(c);
            }
        }
        if dropped > 0 {
            let _ = write!(entry, " …[{dropped} more bytes not kept]");
        }
        while !self.lines.is_empty() && self.bytes + entry.len() > MAX_BYTES {
            self.pop_front();
        }
        self.bytes += entry.len();
        self.lines.push_back(entry);
    }

    fn pop_front(&mut self) -> Option<String> {
        let line = self.lines.pop_front()?;
        self.bytes -= line.len();
        self.left_out += 1;
        Some(line)
    }

    /// Forgets everything: a new attempt starts.
    pub fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
        self.left_out = 0;
    }

    /// The lines, oldest first, behind a note of how many were dropped, if any.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        if self.left_out > 0 {
            out.push(format!("-- {} earlier lines not kept", self.left_out));
        }
        out.extend(self.lines.iter().cloned());
        out
    }
}

/// What [`redact`] made of a client line.
#[derive(Debug, PartialEq, Eq)]
pub enum Redaction<'a> {
    /// Not a login command: shown as it is (unless recorded inside [`Recorder::conceal`]).
    Plain(&'a str),
    /// A login command that carries no secret (`AUTHENTICATE XOAUTH2`, `USER name`).
    Safe(&'a str),
    /// A login command with its secret replaced.
    Redacted(String),
}

impl Redaction<'_> {
    /// Whether the line starts a SASL exchange, whose continuation lines are secret.
    pub fn starts_sasl(line: &str) -> bool {
        let (_, command, _) = split_command(line);
        matches!(
            command.to_ascii_uppercase().as_str(),
            "AUTH" | "AUTHENTICATE"
        )
    }
}

/// The line with any credential replaced by `<redacted>`: IMAP `[tag] LOGIN user pass`, IMAP
/// `[tag] AUTHENTICATE mechanism response`, SMTP and POP3 `AUTH mechanism response`, POP3
/// `PASS pass`. The command word is matched in any case, as servers do.
pub fn redact(line: &str) -> Redaction<'_> {
    let (tag, command, args) = split_command(line);
    let args = args.trim_start();
    match command.to_ascii_uppercase().as_str() {
        "LOGIN" => match astring_end(args) {
            Some(end) if args[end..].trim().is_empty() => Redaction::Safe(line),
            Some(end) => Redaction::Redacted(format!("{tag}{command} {} {REDACTED}", &args[..end])),
            None => Redaction::Redacted(format!("{tag}{command} {REDACTED}")),
        },
        "AUTH" | "AUTHENTICATE" => {
            let (mechanism, rest) = args.split_once(' ').unwrap_or((args, ""));
            if rest.trim().is_empty() {
                Redaction::Safe(line)
            } else {
                Redaction::Redacted(format!("{tag}{command} {mechanism} {REDACTED}"))
            }
        }
        "PASS" if !args.trim().is_empty() => Redaction::Redacted(format!("{command} {REDACTED}")),
        "PASS" | "USER" => Redaction::Safe(line),
        _ => Redaction::Plain(line),
    }
}

/// `(tag with its space, command word, arguments)`: IMAP lines start with a tag, SMTP and POP3
/// lines with the command. A first word that is itself a login command is taken as the command.
fn split_command(line: &str) -> (&str, &str, &str) {
    let is_login = |w: &str| {
        ["LOGIN", "AUTHENTICATE", "AUTH", "PASS", "USER"]
            .iter()
            .any(|c| w.eq_ignore_ascii_case(c))
    };
    let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
    if is_login(first) {
        return ("", first, rest);
    }
    let (second, args) = rest.split_once(' ').unwrap_or((rest, ""));
    if is_login(second) {
        (&line[..first.len() + 1], second, args)
    } else {
        ("", first, rest)
    }
}

/// Where the IMAP astring at the start of `args` ends: a quoted string (with `\` escapes) or
/// an atom up to the next space. `None` for what does not parse (a literal `{n}`).
fn astring_end(args: &str) -> Option<usize> {
    if let Some(quoted) = args.strip_prefix('"') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return Some(i + 2),
                _ => {}
            }
        }
        None
    } else if args.starts_with('{') || args.is_empty() {
        None
    } else {
        Some(args.find(' ').unwrap_or(args.len()))
    }
}

/// A line as bytes from the wire, without its line end, as text for [`Transcript::push_cut`].
pub(crate) fn wire_text(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests;
