//! What the server said while lettre opened the session: the greeting and the `EHLO` reply.
//!
//! lettre reads the `EHLO` reply into the few extensions it knows and drops the rest, and
//! PIPELINING (RFC 2920) is not among them. Without it every canary cost five writes and four
//! round trips (`MAIL`, `RCPT`, `DATA`, the message, its final dot), each a TLS record, a
//! system call and a wake-up; with it, two. So the stream lettre reads is wrapped ([`Heard`])
//! and the server's bytes are copied until lettre has opened the session ([`MAX_HEARD`] at
//! most), then the copy stops and the last reply in it, the `EHLO` reply, is read here.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes copied: a greeting and an `EHLO` reply are far shorter (lettre itself gives up
/// on a reply beyond 4 KiB per line and 64 KiB in all, and then the session fails anyway).
pub const MAX_HEARD: usize = 16 * 1024;

/// Most lines of the `EHLO` reply looked at.
const MAX_LINES: usize = 64;

/// The copy of what the server said; `None` once the session is open and the copy stopped.
pub type Ear = Arc<Mutex<Option<Vec<u8>>>>;

/// A stream handed to lettre, copying what the server sends until [`stop`] is called.
pub struct Heard<S> {
    inner: S,
    ear: Ear,
}

impl<S> Heard<S> {
    /// Wraps `inner`; the returned [`Ear`] holds what was read.
    pub fn new(inner: S) -> (Heard<S>, Ear) {
        let ear = Ear::new(Mutex::new(Some(Vec::new())));
        let heard = Heard {
            inner,
            ear: Arc::clone(&ear),
        };
        (heard, ear)
    }
}

/// Stops the copy and hands out what was heard.
pub fn stop(ear: &Ear) -> Vec<u8> {
    ear.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
        .unwrap_or_default()
}

/// The lines of the last `250` reply in `heard` (the `EHLO` reply, when `heard` is what the
/// server said up to an opened session), each without its line end; at most [`MAX_LINES`].
pub fn ehlo_reply(heard: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(heard);
    let mut last = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        if current.len() < MAX_LINES {
            current.push(line);
        }
        // `250-` goes on; `250 ` (or a bare code) ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            if line.starts_with("250") {
                last = current.iter().map(|l| l.to_string()).collect();
            }
            current.clear();
        }
    }
    last
}

/// Whether an `EHLO` reply's lines offer `extension` (its keyword, in any case; the first line
/// is the server's name, not an extension).
pub fn offers(reply: &[String], extension: &str) -> bool {
    reply.iter().skip(1).any(|line| {
        line.get(4..)
            .and_then(|rest| rest.split_ascii_whitespace().next())
            .is_some_and(|keyword| keyword.eq_ignore_ascii_case(extension))
    })
}

impl<S> fmt::Debug for Heard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heard").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let mut ear = this.ear.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(copy) = ear.as_mut() {
                let read = &buf.filled()[before..];
                let room = MAX_HEARD.saturating_sub(copy.len());
                copy.extend_from_slice(&read[..read.len().min(room)]);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Heard<Box<dyn AsyncTokioStream>> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX: &[u8] = b"220 smtp.example.test ESMTP Postfix\r\n\
        250-smtp.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n\
        250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 CHUNKING\r\n";

    #[test]
    fn the_ehlo_reply_is_the_last_250_reply_and_its_keywords_are_read() {
        let reply = ehlo_reply(POSTFIX);
        assert_eq!(reply.len(), 7);
        assert_eq!(reply[0], "250-smtp.example.test");
        assert!(offers(&reply, "PIPELINING"));
        assert!(offers(&reply, "pipelining"));
        assert!(offers(&reply, "CHUNKING"), "the last line too");
        assert!(offers(&reply, "SIZE"), "a keyword with parameters");
        assert!(!offers(&reply, "SMTPUTF8"));
    }

    #[test]
    fn only_an_extension_line_offers_it() {
        // The server's name is no extension, a greeting's text is not the EHLO reply, and a
        // keyword must be whole.
        let heard = b"220-PIPELINING\r\n220 hi\r\n250-PIPELINING\r\n250 PIPELININGX\r\n";
        let reply = ehlo_reply(heard);
        assert_eq!(reply, ["250-PIPELINING", "250 PIPELININGX"]);
        assert!(!offers(&reply, "PIPELINING"));
        // No 250 reply at all (a refused EHLO), or a reply cut short: nothing offered.
        assert!(ehlo_reply(b"220 hi\r\n554 no\r\n").is_empty());
        assert!(ehlo_reply(b"220 hi\r\n250-x\r\n250-PIPELINING\r\n").is_empty());
        assert!(ehlo_reply(b"").is_empty());
    }

    #[test]
    fn a_reply_of_endless_lines_is_read_within_bounds() {
        let mut heard = b"250-x\r\n".repeat(10_000);
        heard.extend_from_slice(b"250 PIPELINING\r\n");
        let reply = ehlo_reply(&heard);
        assert_eq!(reply.len(), MAX_LINES);
        assert!(!offers(&reply, "PIPELINING"), "beyond the bound");
        let garbage: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let _ = ehlo_reply(&garbage);
    }

    #[tokio::test]
    async fn the_copy_holds_what_was_read_until_stopped_and_no_more_than_the_bound() {
        use tokio::io::AsyncReadExt as _;
        let mut said = POSTFIX.to_vec();
        said.extend(std::iter::repeat_n(b'x', MAX_HEARD));
        let (mut heard, ear) = Heard::new(&said[..]);
        let mut first = vec![0; POSTFIX.len()];
        heard.read_exact(&mut first).await.unwrap();
        assert_eq!(ear.lock().unwrap().as_deref(), Some(POSTFIX));
        let mut rest = Vec::new();
        heard.read_to_end(&mut rest).await.unwrap();
        assert_eq!(stop(&ear).len(), MAX_HEARD);
        assert!(stop(&ear).is_empty(), "stopped: nothing more is kept");
    }
}
