//! Opening a submission connection: TCP, TLS (implicit or STARTTLS), AUTH, with what the TLS
//! handshake settled read on the way ([`super::wire`]). The TLS is ours, not lettre's: one
//! connector per trust setting, shared with the mailboxes ([`crate::mailbox::tls::connector`]).

use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use tokio::net::TcpStream;

use super::heard::{self, Heard};
use super::wire::{Chosen, Secured, Wire};
use super::{
    SendError, SendStage, SessionTls, Submitter, authenticate, classify, dialogue, starttls,
};
use crate::config::TlsMode;
use crate::tls_hello;
use crate::transcript::Transcript;

/// A connection just opened: connected, secured and logged in.
pub(super) struct Opened {
    pub conn: AsyncSmtpConnection,
    /// What its TLS handshake settled, if it had one.
    pub tls: Option<SessionTls>,
    /// Whether the server offered PIPELINING in its `EHLO` reply ([`super::heard`]).
    pub pipelining: bool,
}

impl Submitter {
    /// Connects, secures the connection as configured (implicit TLS, or STARTTLS spoken by
    /// us, [`super::starttls`]), logs in.
    pub(super) async fn open(&self, t: &mut Transcript) -> Result<Opened, SendError> {
        let endpoint = &self.config.endpoint;
        t.note(&format!("connect to {endpoint}"));
        let failed =
            |stage, message: String| SendError::new(stage, format!("{endpoint}: {message}"));
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| failed(SendStage::Connect, e.to_string()))?;
        let (wire, chosen) =
            Wire::new(tcp).map_err(|e| failed(SendStage::Connect, e.to_string()))?;
        let (stream, certificate): (Box<dyn AsyncTokioStream>, _) = match (&self.tls, endpoint.tls)
        {
            (Some(connector), TlsMode::StartTls) => {
                let hello = self.hello.to_string();
                let plain = starttls::plaintext(wire, &hello, endpoint, t).await?;
                let tls = connector
                    .connect(&endpoint.host, plain.wire)
                    .await
                    .map_err(|e| failed(SendStage::Tls, e.to_string()))?;
                t.note("TLS started");
                let certificate = leaf(&tls);
                let secured = Secured::new(tls, Some(&plain.greeting));
                (Box::new(secured), certificate)
            }
            (Some(connector), _) => {
                let tls = connector
                    .connect(&endpoint.host, wire)
                    .await
                    .map_err(|e| failed(SendStage::Tls, e.to_string()))?;
                t.note("TLS started");
                let certificate = leaf(&tls);
                (Box::new(Secured::new(tls, None)), certificate)
            }
            (None, _) => (Box::new(wire), None),
        };
        let (stream, ear) = Heard::new(stream);
        let opened = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello);
        let result = opened.await;
        let reply = heard::ehlo_reply(&heard::stop(&ear));
        let mut conn = result.map_err(|e| {
            dialogue::record_error(t, &e);
            classify(SendStage::Connect, e)
        })?;
        t.client(&format!("EHLO {}", self.hello));
        for line in &reply {
            t.server(line);
        }
        let pipelining = heard::offers(&reply, "PIPELINING");
        if let Some(creds) = &self.config.credentials
            && let Err(e) = authenticate(&mut conn, creds, &self.config.endpoint, t).await
        {
            conn.abort().await;
            return Err(e);
        }
        let tls = session_tls(&chosen, certificate.as_deref());
        Ok(Opened {
            conn,
            tls,
            pipelining,
        })
    }
}

/// The certificate the server presented (its leaf), DER.
fn leaf(tls: &tokio_native_tls::TlsStream<Wire<TcpStream>>) -> Option<Vec<u8>> {
    let cert = tls.get_ref().peer_certificate().ok().flatten()?;
    cert.to_der().ok()
}

/// The session's TLS, when the server's hello was seen (no TLS: none).
fn session_tls(chosen: &Chosen, certificate: Option<&[u8]>) -> Option<SessionTls> {
    let hello = chosen.get()?;
    Some(SessionTls {
        version: tls_hello::version_name(hello.version),
        cipher: tls_hello::cipher_name(hello.cipher),
        certificate_expires_s: certificate.and_then(not_after_s),
    })
}

/// A DER certificate's `notAfter`, Unix seconds.
fn not_after_s(der: &[u8]) -> Option<i64> {
    let cert = openssl::x509::X509::from_der(der).ok()?;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let since = epoch.diff(cert.not_after()).ok()?;
    Some(i64::from(since.days) * 86_400 + i64::from(since.secs))
}
