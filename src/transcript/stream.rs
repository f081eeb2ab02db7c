//! Recording a dialogue below a protocol library: [`Recorded`] wraps a stream and hands every
//! byte read or written to a shared [`Recorder`], which cuts it into lines.
//!
//! Used for IMAP: async-imap keeps its tags, untagged replies and continuation requests to
//! itself, so the only place the whole dialogue can be seen is the stream. That the recording
//! sees the bytes before any redaction is why it redacts by three means at once: the login code
//! marks its span ([`Recorder::conceal`]), every client line passes [`super::redact`], and the
//! client lines of a SASL exchange are replaced whole. Lines are cut to [`super::MAX_LINE`]
//! while they arrive, so a line that never ends costs that much, not its length.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{MAX_LINE, REDACTED, Redaction, Transcript, Who, redact, wire_text};

/// The recording of one connection's current attempt, shared by the stream and the adapter.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Recording>>);

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Recorder")
    }
}

#[derive(Default)]
struct Recording {
    transcript: Transcript,
    /// The unfinished client and server lines.
    client: Pending,
    server: Pending,
    /// Inside a SASL exchange: client lines are secret until the server's final answer.
    sasl: bool,
    /// Open [`Concealed`] guards.
    concealed: u32,
}

/// An unfinished line: its first [`MAX_LINE`] bytes and how many more came.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.dropped == 0
    }
}

/// While alive, client lines that are not recognised login commands are recorded as
/// `<redacted>`; see [`Recorder::conceal`].
pub struct Concealed(Recorder);

impl Drop for Concealed {
    fn drop(&mut self) {
        let mut r = self.0.lock();
        r.concealed = r.concealed.saturating_sub(1);
    }
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Recording> {
        // Every change finishes before it could panic: a poisoned lock guards a whole record.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what was recorded: a new attempt starts.
    pub fn restart(&self) {
        let mut r = self.lock();
        r.transcript.clear();
        r.client = Pending::default();
        r.server = Pending::default();
        r.sasl = false;
    }

    /// The attempt's lines (an unfinished line included), and a new attempt starts.
    pub fn take(&self) -> Vec<String> {
        let mut r = self.lock();
        r.finish(Who::Client);
        r.finish(Who::Server);
        let lines = r.transcript.lines();
        r.transcript.clear();
        r.sasl = false;
        lines
    }

    /// Records a remark of ours (a handshake, a reconnection).
    pub fn note(&self, line: &str) {
        self.lock().transcript.note(line);
    }

    /// Records a command issued at our level (it passes [`redact`] too).
    pub fn client(&self, line: &str) {
        self.lock().transcript.client(line);
    }

    /// Records a reply read at our level.
    pub fn server(&self, line: &str) {
        self.lock().transcript.server(line);
    }

    /// Until the guard is dropped, client lines are shown only as far as [`redact`] vouches
    /// for them; anything else (a password sent as a literal, a SASL response) as
    /// `<redacted>`. The login code holds one around the login command.
    pub fn conceal(&self) -> Concealed {
        self.lock().concealed += 1;
        Concealed(self.clone())
    }

    /// Takes bytes that went over the wire, by `who`.
    fn feed(&self, who: Who, mut bytes: &[u8]) {
        let mut r = self.lock();
        while !bytes.is_empty() {
            let (line, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &[][..], false),
            };
            let pending = r.pending(who);
            let room = MAX_LINE.saturating_sub(pending.bytes.len()).min(line.len());
            pending.bytes.extend_from_slice(&line[..room]);
            pending.dropped += line.len() - room;
            if ended {
                r.finish(who);
            }
            bytes = rest;
        }
    }
}

impl Recording {
    fn pending(&mut self, who: Who) -> &mut Pending {
        match who {
            Who::Client => &mut self.client,
            _ => &mut self.server,
        }
    }

    /// Moves the unfinished line of `who`, if any, into the transcript, redacting client lines.
    /// The line's buffer is kept for the next line: every line read passes through here, on
    /// the success path too, so it must not cost an allocation.
    fn finish(&mut self, who: Who) {
        if self.pending(who).is_empty() {
            return;
        }
        let mut pending = std::mem::take(self.pending(who));
        self.record(who, &wire_text(&pending.bytes), pending.dropped);
        pending.bytes.clear();
        pending.dropped = 0;
        *self.pending(who) = pending;
    }

    /// Records one finished line of `who`.
    fn record(&mut self, who: Who, text: &str, dropped: usize) {
        if who != Who::Client {
            // A final answer ends a SASL exchange; a continuation request (`+ …`) or an
            // untagged line in between does not.
            if !(text.starts_with('+') && !text.starts_with("+OK") || text.starts_with("* ")) {
                self.sasl = false;
            }
            self.transcript.push_cut(who, text, dropped);
            return;
        }
        if self.sasl {
            self.transcript.push(Who::Client, REDACTED);
            return;
        }
        self.sasl = Redaction::starts_sasl(text);
        match redact(text) {
            Redaction::Redacted(shown) => self.transcript.push(Who::Client, &shown),
            Redaction::Plain(_) if self.concealed > 0 => {
                self.transcript.push(Who::Client, REDACTED)
            }
            Redaction::Plain(line) | Redaction::Safe(line) => {
                self.transcript.push_cut(Who::Client, line, dropped)
            }
        }
    }
}

/// A stream whose traffic is recorded (see the module documentation).
pub struct Recorded<S> {
    inner: S,
    recorder: Recorder,
}

impl<S> Recorded<S> {
    /// Records `inner`'s traffic into `recorder`.
    pub fn new(inner: S, recorder: Recorder) -> Recorded<S> {
        Recorded { inner, recorder }
    }

    /// The stream itself (for STARTTLS: the plain stream is handed to the TLS handshake).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Recorded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorded")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.recorder.feed(Who::Server, &buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.recorder.feed(Who::Client, &buf[..n]);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
