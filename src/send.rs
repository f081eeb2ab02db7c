//! Submitting a canary over SMTP, reporting the stage that failed.
//!
//! The transaction is driven step by step over lettre's connection (connect, STARTTLS, AUTH,
//! MAIL/RCPT/DATA) instead of through its transport, because the step that failed *is* the
//! diagnosis an SRE needs ("auth" vs "rejected" vs "tls") and lettre's transport only returns the
//! last error. The whole transaction runs under one timeout: lettre's own covers the connect only.
//!
//! A connection that has just submitted a canary is kept briefly for the next canary of the
//! same account ([`pool`]): a busy agent does not pay a TLS handshake per canary, and a lone
//! probe still opens, secures and logs in on every round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials as SmtpCredentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::config::{Credentials, Endpoint, Login, SaslMechanism, Secret, SmtpConfig, TlsMode};
use crate::oauth2;
use crate::setup::{Memo, SetupError};
use crate::transcript::{REDACTED, Transcript};

mod dialogue;
mod heard;
mod open;
pub mod pool;
mod starttls;
mod wire;

use self::pool::{Pool, Session};

pub use crate::stage::SendStage;

/// A failed submission.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {message}", stage = .stage.as_str())]
pub struct SendError {
    /// The step that failed.
    pub stage: SendStage,
    /// What the server or the network said.
    pub message: String,
    /// The attempt's dialogue, redacted and bounded ([`dialogue`]); empty where none was had.
    pub transcript: Vec<String>,
}

impl SendError {
    /// A failure at `stage` with no dialogue recorded (yet): the caller's transcript is
    /// attached where the attempt ends.
    pub fn new(stage: SendStage, message: impl Into<String>) -> SendError {
        SendError {
            stage,
            message: message.into(),
            transcript: Vec::new(),
        }
    }
}

/// A submission the server accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Queue id from the final reply (`250 2.0.0 Ok: queued as 4XyZ1`), when the server names one.
    pub queue_id: Option<String>,
    /// Connect to accepted; on a kept connection, MAIL to accepted.
    pub duration: Duration,
    /// What the connection's TLS handshake settled, if it had one.
    pub tls: Option<SessionTls>,
}

/// The TLS of a submission session, as the server chose it and showed it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionTls {
    /// `TLSv1.3`, `TLSv1.2`, … (from the server's ServerHello).
    pub version: String,
    /// IANA name of the cipher suite, or its code (`0x1302`).
    pub cipher: String,
    /// When the server's certificate (the leaf it presented) expires, Unix seconds.
    pub certificate_expires_s: Option<i64>,
}

/// What a probe needs from its sending side: one submission, with the stage that failed.
///
/// [`Submitter`] is the only real implementation; the trait exists so the probe's loops can be
/// tested with a scripted sender and paused time, without a network.
#[async_trait::async_trait]
pub trait Submit: Send + Sync {
    /// Submits one message; the caller takes `sent` before calling. Bounded in time by the
    /// implementation, so a caller that awaits it during shutdown waits at most that long.
    async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<Accepted, SendError>;
}

/// An SMTP submission account, ready to send.
pub struct Submitter {
    config: SmtpConfig,
    /// For implicit TLS and STARTTLS, both run by us ([`open`]): the connector of the
    /// endpoint's trust setting, shared with every probe and mailbox of that setting.
    tls: Option<tokio_native_tls::TlsConnector>,
    hello: ClientId,
    /// Connections kept for this account, shared with every probe submitting through it.
    kept: Arc<Pool<AsyncSmtpConnection>>,
}

/// Which connections may be handed from one probe to another: the same server, TLS mode and
/// trust, and the same login (the password as a hash, so no second copy of it is kept).
type Account = (
    String,
    u16,
    String,
    Option<std::path::PathBuf>,
    bool,
    Option<(String, u64)>,
);

/// The kept connections of every account in use.
static POOLS: Memo<Account, Arc<Pool<AsyncSmtpConnection>>> = Memo::new();

/// The account `config` submits as.
fn account(config: &SmtpConfig) -> Account {
    use std::hash::{Hash as _, Hasher as _};
    let e = &config.endpoint;
    let login = config.credentials.as_ref().map(|c| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        c.login.fingerprint().hash(&mut h);
        (c.username.clone(), h.finish())
    });
    let mode = format!("{:?}", e.tls);
    (
        e.host.clone(),
        e.port,
        mode,
        e.ca_file.clone(),
        e.tls_verify,
        login,
    )
}

/// Closes every kept submission connection with QUIT (bounded by `within` each): the agent
/// is stopping.
pub async fn close_kept(within: Duration) {
    for pool in POOLS.values() {
        pool.close_all(within).await;
    }
}

impl Submitter {
    /// Takes the TLS connector of the endpoint's trust setting (built once per setting, reading
    /// `ca_file`), so each send only connects.
    pub fn new(config: &SmtpConfig) -> Result<Submitter, SetupError> {
        let endpoint = &config.endpoint;
        let tls = match endpoint.tls {
            TlsMode::None => None,
            TlsMode::Tls | TlsMode::StartTls => Some(crate::mailbox::tls::connector(endpoint)?),
        };
        let kept = POOLS.get_or_build(account(config), || {
            Ok::<_, SetupError>(Arc::new(Pool::default()))
        })?;
        Ok(Submitter {
            config: config.clone(),
            tls,
            hello: ClientId::default(),
            kept,
        })
    }

    /// Submits one message under the endpoint's timeout; the caller takes `sent` before calling.
    pub async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<Accepted, SendError> {
        let envelope = envelope(from, to)?;
        let start = Instant::now();
        let limit = self.config.endpoint.timeout;
        let mut t = Transcript::default();
        let transaction = async {
            let t = &mut t;
            let mut session = self.session(t).await?;
            let mut result = dialogue::transaction(&mut session, t, &envelope, message).await;
            if let Err(failed) = &result
                && session.reused
                && failed.closed_at_mail()
            {
                // Nothing was accepted: the same canary goes over a new connection.
                t.note("the kept connection had been closed meanwhile; a new one");
                session.conn.abort().await;
                session = self.fresh(t).await?;
                result = dialogue::transaction(&mut session, t, &envelope, message).await;
            }
            match result {
                Ok(reply) => {
                    // Accepted: the connection may serve the next canary of this account.
                    let said = reply.message().collect::<Vec<_>>().join(" ");
                    session.sent += 1;
                    let tls = session.tls.clone();
                    self.kept.give_back(session, limit);
                    Ok((queue_id(&said), tls))
                }
                Err(failed) => {
                    session.conn.abort().await;
                    Err(classify(SendStage::Rejected, failed.error))
                }
            }
        };
        let (queue_id, tls) = self.bounded(transaction).await.map_err(|mut e| {
            if e.stage == SendStage::Timeout {
                t.note(&e.message);
            }
            e.transcript = t.lines();
            e
        })?;
        Ok(Accepted {
            queue_id,
            duration: start.elapsed(),
            tls,
        })
    }

    /// A kept connection, else a new one. A kept connection is used without a `NOOP` first:
    /// it was used within the last [`pool::MAX_IDLE`], and one that the server closed meanwhile
    /// shows at `MAIL`, before anything is accepted, where [`Submitter::send`] takes a new one
    /// for the same canary. At 50 canaries a second the `NOOP` was a round trip, two wake-ups
    /// and two TLS records per canary spent on a question whose answer is almost always yes.
    async fn session(&self, t: &mut Transcript) -> Result<Session<AsyncSmtpConnection>, SendError> {
        match self.kept.take(self.config.endpoint.timeout) {
            Some(kept) => {
                t.note("a kept connection");
                Ok(kept)
            }
            None => self.fresh(t).await,
        }
    }

    /// A new connection: connected, secured and logged in.
    async fn fresh(&self, t: &mut Transcript) -> Result<Session<AsyncSmtpConnection>, SendError> {
        let opened = self.open(t).await?;
        Ok(Session {
            conn: opened.conn,
            opened: tokio::time::Instant::now(),
            sent: 0,
            reused: false,
            tls: opened.tls,
            pipelining: opened.pipelining,
        })
    }

    /// Connects, secures and authenticates, then quits: what `check` needs to know.
    pub async fn check_login(&self) -> Result<(), SendError> {
        self.bounded(async {
            let mut opened = self.open(&mut Transcript::default()).await?;
            let _ = opened.conn.quit().await;
            Ok(())
        })
        .await
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, SendError>>,
    ) -> Result<T, SendError> {
        let limit = self.config.endpoint.timeout;
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(SendError::new(
                SendStage::Timeout,
                format!("no answer from {} within {limit:?}", self.config.endpoint),
            ))
        })
    }
}

#[async_trait::async_trait]
impl Submit for Submitter {
    async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<Accepted, SendError> {
        Submitter::send(self, from, to, message).await
    }
}

async fn authenticate(
    conn: &mut AsyncSmtpConnection,
    creds: &Credentials,
    endpoint: &Endpoint,
    t: &mut Transcript,
) -> Result<(), SendError> {
    let (mechanism, source) = match &creds.login {
        Login::Password(password) => return authenticate_password(conn, creds, password, t).await,
        Login::Token { mechanism, source } => (*mechanism, source),
    };
    let refused = |message: String| SendError::new(SendStage::Auth, message);
    // A token the server refuses may have been revoked or have expired early: one new token is
    // tried before the refusal counts.
    let mut renewed = false;
    loop {
        let token = oauth2::access_token(source, endpoint.timeout)
            .await
            .map_err(|e| refused(e.to_string()))?;
        let response = oauth2::initial_response(
            mechanism,
            &creds.username,
            &endpoint.host,
            endpoint.port,
            &token,
        );
        match auth_with_token(conn, mechanism, &response, t).await {
            Ok(()) => return Ok(()),
            Err(TokenAuth::Refused(e)) if !renewed => {
                tracing::info!(
                    %endpoint, user = %creds.username, %mechanism, error = %e.message,
                    "token refused; fetching a new one and trying once more"
                );
                oauth2::renew(source, &token);
                renewed = true;
            }
            Err(TokenAuth::Refused(e) | TokenAuth::Failed(e)) => return Err(e),
        }
    }
}

/// How a token login failed: the server refused the token (`535`, worth one new token), or
/// anything else (no such mechanism, a broken connection), which a new token would not mend.
enum TokenAuth {
    Refused(SendError),
    Failed(SendError),
}

/// `AUTH <mechanism> <initial response>` (RFC 4954). A refusal of XOAUTH2 or OAUTHBEARER comes
/// as a `334` challenge carrying the error, answered with an empty line to get the final reply.
async fn auth_with_token(
    conn: &mut AsyncSmtpConnection,
    mechanism: SaslMechanism,
    response: &Secret,
    t: &mut Transcript,
) -> Result<(), TokenAuth> {
    let encoded = BASE64.encode(response.expose());
    let command = Secret::new(format!("AUTH {mechanism} {encoded}\r\n"));
    let judge = |e: lettre::transport::smtp::Error| {
        let refused = e.status().is_some_and(|c| c.to_string() == "535");
        let e = classify(SendStage::Auth, e);
        if refused {
            TokenAuth::Refused(e)
        } else {
            TokenAuth::Failed(e)
        }
    };
    // Recorded as issued, without the token: the transcript never holds it.
    let shown = dialogue::auth_shown(mechanism);
    let mut reply = dialogue::command(conn, t, command.expose(), Some(&shown))
        .await
        .map_err(judge)?;
    if reply.has_code(334) {
        reply = dialogue::command(conn, t, "\r\n", Some(REDACTED))
            .await
            .map_err(judge)?;
    }
    if reply.has_code(235) {
        Ok(())
    } else {
        Err(TokenAuth::Failed(SendError::new(
            SendStage::Auth,
            format!("server answered {}", reply.code()),
        )))
    }
}

async fn authenticate_password(
    conn: &mut AsyncSmtpConnection,
    creds: &Credentials,
    password: &Secret,
    t: &mut Transcript,
) -> Result<(), SendError> {
    let creds = SmtpCredentials::new(creds.username.clone(), password.expose().to_string());
    let mechanisms = [Mechanism::Plain, Mechanism::Login];
    // lettre runs the exchange; what is recorded is the command's redacted form and the
    // final reply, so the password never reaches the transcript.
    match conn.server_info().get_auth_mechanism(&mechanisms) {
        Some(mechanism) => t.client(&dialogue::auth_shown(mechanism)),
        None => t.note("no AUTH mechanism in common (PLAIN, LOGIN)"),
    }
    let reply = dialogue::answered(t, conn.auth(&mechanisms, &creds).await)
        .map_err(|e| classify(SendStage::Auth, e))?;
    if reply.is_positive() {
        Ok(())
    } else {
        Err(SendError::new(
            SendStage::Auth,
            format!("server answered {}", reply.code()),
        ))
    }
}

fn envelope(from: &str, to: &str) -> Result<Envelope, SendError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        SendError::new(SendStage::Rejected, format!("invalid {what} address: {e}"))
    };
    let from = from.parse().map_err(|e| bad("from", &e))?;
    let to = to.parse().map_err(|e| bad("to", &e))?;
    Envelope::new(Some(from), vec![to]).map_err(|e| bad("envelope", &e))
}

/// Maps a lettre error raised during `stage` to the stage it really belongs to: a timeout or a
/// TLS failure is reported as such wherever it happened.
fn classify(stage: SendStage, e: lettre::transport::smtp::Error) -> SendError {
    let stage = if e.is_timeout() {
        SendStage::Timeout
    } else if e.is_tls() {
        SendStage::Tls
    } else {
        stage
    };
    SendError::new(stage, error_chain(&e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Extracts the queue id from the text of a final `250` reply.
///
/// Postfix says `Ok: queued as 4XyZ1`, Exim `OK id=1abcDE-000Xyz-Ab`, Exchange
/// `Queued mail for delivery` (no id); the id is a diagnostic, so absence is fine.
pub fn queue_id(reply: &str) -> Option<String> {
    let lower = reply.to_ascii_lowercase();
    let start = ["queued as ", "id="]
        .iter()
        .find_map(|marker| lower.find(marker).map(|i| i + marker.len()))?;
    let id: String = reply[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_id_from_common_servers() {
        assert_eq!(
            queue_id("2.0.0 Ok: queued as 4XyZ1AbC").as_deref(),
            Some("4XyZ1AbC")
        );
        assert_eq!(
            queue_id("OK id=1abcDE-000Xyz-Ab").as_deref(),
            Some("1abcDE-000Xyz-Ab")
        );
        assert_eq!(queue_id("2.6.0 Queued mail for delivery"), None);
        assert_eq!(queue_id("Ok: queued as "), None);
        assert_eq!(queue_id(""), None);
    }
}
