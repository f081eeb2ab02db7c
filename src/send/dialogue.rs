//! The SMTP dialogue of one submission, recorded at our level into a [`Transcript`]: each
//! command as we issue it and lettre's parsed reply (code and text lines), or its error.
//!
//! Recorded here rather than on the stream because lettre owns its stream (it upgrades it for
//! STARTTLS itself) and because here the credentials can be left out by construction: `AUTH` is
//! recorded as `AUTH <mechanism> <redacted>` by the code that issues it, and the secret is
//! never handed to the transcript. What lettre says without our asking (the greeting, the
//! EHLO exchange, the challenges of `AUTH LOGIN`) appears as a note or in the final reply.

use std::fmt::Display;

use lettre::address::Envelope;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::pool::Session;
use crate::transcript::{REDACTED, Transcript};

/// Issues `command` and records it (as `shown`, when given: the redacted form) and its reply.
pub(super) async fn command(
    conn: &mut AsyncSmtpConnection,
    t: &mut Transcript,
    command: impl Display,
    shown: Option<&str>,
) -> Result<Response, Error> {
    match shown {
        Some(shown) => t.client(shown),
        None => t.client(command.to_string().trim_end()),
    }
    answered(t, conn.command(command).await)
}

/// Records what a step came to: the reply's lines, or the error (with the server's code and
/// text when it was a negative reply). Hands the result on.
pub(super) fn answered(
    t: &mut Transcript,
    result: Result<Response, Error>,
) -> Result<Response, Error> {
    match &result {
        Ok(reply) => record_reply(t, reply),
        Err(e) => record_error(t, e),
    }
    result
}

/// `250-first`, `250 last`: a reply's lines as the server wrote them.
pub(super) fn record_reply(t: &mut Transcript, reply: &Response) {
    let code = reply.code();
    let lines: Vec<&str> = reply.message().collect();
    if lines.is_empty() {
        t.server(&code.to_string());
    }
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        t.server(&format!("{code}{sep}{line}"));
    }
}

/// A negative reply as `S: 535 text` (lettre joins its lines); any other error as a note.
pub(super) fn record_error(t: &mut Transcript, e: &Error) {
    match (e.status(), std::error::Error::source(e)) {
        (Some(code), Some(text)) => t.server(&format!("{code} {text}")),
        (Some(code), None) => t.server(&code.to_string()),
        _ => t.note(&super::error_chain(e)),
    }
}

/// `AUTH <mechanism> <redacted>`, as recorded for a login whose exchange lettre runs.
pub(super) fn auth_shown(mechanism: impl Display) -> String {
    format!("AUTH {mechanism} {REDACTED}")
}

/// A transaction that did not end in an accepted message.
pub(super) struct Failed {
    /// What went wrong, as lettre said it.
    pub error: Error,
    /// Whether it failed at `MAIL`, the first command of the transaction: on a kept connection
    /// a failure there without a reply of the server's own means the server had closed it
    /// meanwhile, and nothing was accepted.
    pub at_mail: bool,
}

impl Failed {
    /// Whether the connection was found closed at `MAIL`: no reply, or 421 (the server says it
    /// is closing the channel). A real refusal of the sender is no such thing.
    pub fn closed_at_mail(&self) -> bool {
        self.at_mail && matches!(self.error.status().map(u16::from), None | Some(421))
    }
}

/// MAIL, RCPT and DATA, then the message: lettre's `send`, step by step so that each command
/// and reply is recorded. Where lettre would refuse to send (non-ASCII without the extension
/// for it), its own `send` is called to refuse in its words.
///
/// Where the server offered PIPELINING, `MAIL`, `RCPT` and `DATA` go out in one write and
/// their replies are read in order (RFC 2920: `DATA` ends the group, the message waits for its
/// `354`); the message and its final dot are one write either way.
pub(super) async fn transaction(
    session: &mut Session<AsyncSmtpConnection>,
    t: &mut Transcript,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Response, Failed> {
    let later = |error| Failed {
        error,
        at_mail: false,
    };
    let conn = &mut session.conn;
    let info = conn.server_info();
    let utf8 = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    let eight_bit = !message.is_ascii();
    if (utf8 && !info.supports_feature(Extension::SmtpUtfEight))
        || (eight_bit && !info.supports_feature(Extension::EightBitMime))
    {
        return answered(t, conn.send(envelope, message).await).map_err(later);
    }
    let mut options = Vec::new();
    if utf8 {
        options.push(MailParameter::SmtpUtfEight);
    }
    if eight_bit {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mail = Mail::new(envelope.from().cloned(), options).to_string();
    let rcpts: Vec<String> = envelope
        .to()
        .iter()
        .map(|to| Rcpt::new(to.clone(), vec![]).to_string())
        .collect();
    let at_mail = |error| Failed {
        error,
        at_mail: true,
    };
    if session.pipelining {
        let group: String = std::iter::once(mail.as_str())
            .chain(rcpts.iter().map(String::as_str))
            .chain(std::iter::once("DATA\r\n"))
            .collect();
        for command in group.split_inclusive("\r\n") {
            t.client(command.trim_end());
        }
        answered(t, conn.command(Verbatim(&group)).await).map_err(at_mail)?;
        // One reply per RCPT, then DATA's.
        for _ in 0..=rcpts.len() {
            answered(t, conn.read_response().await).map_err(later)?;
        }
    } else {
        command(conn, t, Verbatim(&mail), None)
            .await
            .map_err(at_mail)?;
        for rcpt in &rcpts {
            command(conn, t, Verbatim(rcpt), None)
                .await
                .map_err(later)?;
        }
        command(conn, t, Data, None).await.map_err(later)?;
    }
    t.client(&format!("<the canary, {} bytes>", message.len()));
    let reply = match std::str::from_utf8(message) {
        Ok(text) => conn.command(Verbatim(&data_block(text))).await,
        Err(_) => conn.message(message).await,
    };
    answered(t, reply).map_err(later)
}

/// Text written as it is: commands already spelled out, or a message's data block.
struct Verbatim<'a>(&'a str);

impl Display for Verbatim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A message as `DATA` carries it (RFC 5321 4.5.2): a `.` that starts a line doubled, then
/// `CRLF . CRLF`; byte for byte what lettre's `message` writes, but in one write instead of two.
fn data_block(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    let mut after_cr = false;
    for c in message.chars() {
        if c == '.' && line_start {
            out.push('.');
        }
        out.push(c);
        line_start = after_cr && c == '\n';
        after_cr = c == '\r';
    }
    out.push_str("\r\n.\r\n");
    out
}

#[cfg(test)]
mod tests;
