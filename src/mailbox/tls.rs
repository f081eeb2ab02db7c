//! TCP and TLS plumbing shared by the network mailbox adapters.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_native_tls::{TlsConnector, TlsStream};

use super::{MailboxError, MailboxStage};
use crate::config::Endpoint;
use crate::setup::{Memo, SetupError, read_ca};

/// A connection that is plain or TLS; STARTTLS turns the first into the second.
#[derive(Debug)]
pub enum MailStream {
    /// Not encrypted (before STARTTLS, or `tls = "none"`).
    Plain(TcpStream),
    /// Encrypted.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MailStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MailStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MailStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MailStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MailStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MailStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connectors built so far, by trust setting (`ca_file`, `tls_verify`); the host name is
/// given per connection, so it is not part of the key.
static CONNECTORS: Memo<(Option<std::path::PathBuf>, bool), TlsConnector> = Memo::new();

/// The TLS connector for an endpoint: system roots plus `ca_file`, verification on unless
/// `tls_verify = false` was written. Built once per trust setting and shared by every
/// mailbox with that setting.
pub fn connector(endpoint: &Endpoint) -> Result<TlsConnector, SetupError> {
    let key = (endpoint.ca_file.clone(), endpoint.tls_verify);
    CONNECTORS.get_or_build(key, || build_connector(endpoint))
}

fn build_connector(endpoint: &Endpoint) -> Result<TlsConnector, SetupError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = &endpoint.ca_file {
        let pem = read_ca(path)?;
        let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| SetupError::BadCa {
            path: path.clone(),
            source: Box::new(e),
        })?;
        builder.add_root_certificate(cert);
    }
    if !endpoint.tls_verify {
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    builder
        .build()
        .map(TlsConnector::from)
        .map_err(|e| SetupError::Tls(Box::new(e)))
}

/// Opens the TCP connection within the endpoint's timeout.
pub async fn connect(endpoint: &Endpoint) -> Result<TcpStream, MailboxError> {
    let addr = (endpoint.host.as_str(), endpoint.port);
    match tokio::time::timeout(endpoint.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) => Err(MailboxError::new(
            MailboxStage::Connect,
            format!("{endpoint}: {e}"),
        )),
        Err(_) => Err(timed_out(endpoint, "connect", endpoint.timeout)),
    }
}

/// Runs the TLS handshake within the endpoint's timeout.
pub async fn handshake(
    connector: &TlsConnector,
    endpoint: &Endpoint,
    tcp: TcpStream,
) -> Result<MailStream, MailboxError> {
    let work = connector.connect(&endpoint.host, tcp);
    match tokio::time::timeout(endpoint.timeout, work).await {
        Ok(Ok(tls)) => Ok(MailStream::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(MailboxError::new(
            MailboxStage::Tls,
            format!("{endpoint}: {e}"),
        )),
        Err(_) => Err(timed_out(endpoint, "TLS handshake", endpoint.timeout)),
    }
}

/// The error for a step that got no answer in time.
pub fn timed_out(endpoint: &Endpoint, what: &str, limit: Duration) -> MailboxError {
    MailboxError::new(
        MailboxStage::Timeout,
        format!("{endpoint}: no answer to {what} within {limit:?}"),
    )
}
