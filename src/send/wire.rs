//! The submission's TCP stream, watched for what the server chose in its TLS handshake.
//!
//! lettre runs STARTTLS itself and native-tls tells neither the negotiated version nor the
//! cipher, yet "the submission server fell back to TLS 1.2" is what an admin wants to know
//! before a receiver starts refusing it. The server states both in its ServerHello, which
//! crosses the wire in the clear in every TLS version: [`Wire`] copies what the server sends
//! until that message has been read ([`tls_hello::MAX_INBOUND`] at most), and then steps aside.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls_hello::{self, Scan, ServerHello};

/// The server's choice, once read; shared with whoever built the [`Wire`].
pub type Chosen = Arc<OnceLock<ServerHello>>;

/// A stream handed to lettre, copying the server's bytes until its ServerHello is read.
pub struct Wire<S> {
    inner: S,
    peer: SocketAddr,
    /// What the server sent so far; `None` once the hello was found or given up on.
    inbound: Option<Vec<u8>>,
    chosen: Chosen,
}

impl Wire<TcpStream> {
    /// Watches `tcp`; the returned handle holds the server's choice once the handshake ran.
    pub fn new(tcp: TcpStream) -> io::Result<(Wire<TcpStream>, Chosen)> {
        let peer = tcp.peer_addr()?;
        Ok(Wire::around(tcp, peer))
    }
}

impl<S> Wire<S> {
    fn around(inner: S, peer: SocketAddr) -> (Wire<S>, Chosen) {
        let chosen = Chosen::default();
        let wire = Wire {
            inner,
            peer,
            inbound: Some(Vec::new()),
            chosen: Arc::clone(&chosen),
        };
        (wire, chosen)
    }

    fn saw(&mut self, bytes: &[u8]) {
        let Some(inbound) = &mut self.inbound else {
            return;
        };
        let room = tls_hello::MAX_INBOUND.saturating_sub(inbound.len());
        inbound.extend_from_slice(&bytes[..bytes.len().min(room)]);
        match tls_hello::scan(inbound) {
            Scan::NeedMore if inbound.len() < tls_hello::MAX_INBOUND => {}
            Scan::Found(hello) => {
                let _ = self.chosen.set(hello);
                self.inbound = None;
            }
            _ => self.inbound = None,
        }
    }
}

impl<S> fmt::Debug for Wire<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire").field("peer", &self.peer).finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && this.inbound.is_some()
        {
            this.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
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

impl<S> AsyncTokioStream for Wire<S>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin,
{
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

/// TLS done by us over a [`Wire`] (implicit, or after our own STARTTLS), handed to lettre,
/// with the server's greeting replayed first where it was read before the handshake (lettre
/// expects a greeting; after STARTTLS there is none).
pub struct Secured {
    tls: tokio_native_tls::TlsStream<Wire<TcpStream>>,
    replay: Vec<u8>,
    replayed: usize,
}

impl Secured {
    /// `tls`, read as if the server had first said `greeting` (nothing for implicit TLS).
    pub fn new(tls: tokio_native_tls::TlsStream<Wire<TcpStream>>, greeting: Option<&str>) -> Self {
        let replay = greeting.map(|g| format!("{g}\r\n").into_bytes());
        Secured {
            tls,
            replay: replay.unwrap_or_default(),
            replayed: 0,
        }
    }

    fn wire(&self) -> &Wire<TcpStream> {
        self.tls.get_ref().get_ref().get_ref()
    }
}

impl fmt::Debug for Secured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secured").field(self.wire()).finish()
    }
}

impl AsyncRead for Secured {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Secured {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Secured {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.wire().peer)
    }
}
