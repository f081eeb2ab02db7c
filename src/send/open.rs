//! Opening a submission connection: TCP, TLS (implicit or STARTTLS), AUTH, with what the TLS
//! handshake settled read on the way ([`super::wire`]).

use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::net::TcpStream;

use super::wire::{Chosen, Secured, Wire};
use super::{SendError, SendStage, SessionTls, Submitter, authenticate, classify, dialogue};
use crate::config::TlsMode;
use crate::tls_hello;
use crate::transcript::Transcript;

impl Submitter {
    /// Connects (with implicit TLS when configured), starts TLS when configured, logs in.
    pub(super) async fn open(
        &self,
        t: &mut Transcript,
    ) -> Result<(AsyncSmtpConnection, Option<SessionTls>), SendError> {
        let endpoint = &self.config.endpoint;
        t.note(&format!("connect to {endpoint}"));
        let failed = |stage, message: String| SendError {
            stage,
            message,
            transcript: Vec::new(),
        };
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| failed(SendStage::Connect, format!("{endpoint}: {e}")))?;
        let (wire, chosen) =
            Wire::new(tcp).map_err(|e| failed(SendStage::Connect, format!("{endpoint}: {e}")))?;
        let mut certificate = None;
        let greeted = match &self.implicit {
            Some(connector) => {
                let tls = connector
                    .connect(&endpoint.host, wire)
                    .await
                    .map_err(|e| failed(SendStage::Tls, format!("{endpoint}: {e}")))?;
                t.note("TLS started");
                certificate = tls
                    .get_ref()
                    .peer_certificate()
                    .ok()
                    .flatten()
                    .and_then(|c| c.to_der().ok());
                AsyncSmtpConnection::connect_with_transport(Box::new(Secured(tls)), &self.hello)
                    .await
            }
            None => AsyncSmtpConnection::connect_with_transport(Box::new(wire), &self.hello).await,
        };
        let mut conn = greeted.map_err(|e| {
            dialogue::record_error(t, &e);
            classify(SendStage::Connect, e)
        })?;
        t.note(&format!("greeted; EHLO answered: {}", conn.server_info()));
        if endpoint.tls == TlsMode::StartTls {
            self.start_tls(&mut conn, t).await?;
            certificate = conn.peer_certificate().ok();
        }
        if let Some(creds) = &self.config.credentials
            && let Err(e) = authenticate(&mut conn, creds, &self.config.endpoint, t).await
        {
            conn.abort().await;
            return Err(e);
        }
        let tls = session_tls(&chosen, certificate.as_deref());
        Ok((conn, tls))
    }

    async fn start_tls(
        &self,
        conn: &mut AsyncSmtpConnection,
        t: &mut Transcript,
    ) -> Result<(), SendError> {
        let endpoint = &self.config.endpoint;
        let params = self.tls.clone().expect("TLS parameters exist for starttls");
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(SendError {
                stage: SendStage::Tls,
                message: format!("{endpoint} does not offer STARTTLS, which the config requires"),
                transcript: Vec::new(),
            });
        }
        // A failed STARTTLS leaves lettre's connection without a stream (writing to it would
        // even panic in a debug build): drop it, do not try to QUIT.
        t.client("STARTTLS");
        if let Err(e) = conn.starttls(params, &self.hello).await {
            dialogue::record_error(t, &e);
            return Err(classify(SendStage::Tls, e));
        }
        t.note(&format!(
            "TLS started; EHLO answered: {}",
            conn.server_info()
        ));
        Ok(())
    }
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
