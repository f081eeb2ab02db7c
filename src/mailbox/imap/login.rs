//! Logging in: `LOGIN` with a password, or `AUTHENTICATE` with an OAuth2 token (XOAUTH2 or
//! OAUTHBEARER), sent as an initial response (RFC 4959 SASL-IR) when the server offers it.

use async_imap::error::Error as ImapError;
use async_imap::{Authenticator, Client};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::ImapSession;
use crate::config::{Credentials, Endpoint, Login, SaslMechanism, Secret, TokenSource};
use crate::mailbox::tls::{self, MailStream};
use crate::mailbox::{MailboxError, MailboxStage};
use crate::oauth2;

/// Logs `client` in as `creds` within the endpoint's timeout (a token fetch has its own).
pub(super) async fn log_in(
    client: Client<MailStream>,
    creds: &Credentials,
    endpoint: &Endpoint,
    sasl_ir: bool,
) -> Result<ImapSession, MailboxError> {
    let user = &creds.username;
    let refused = |e: ImapError| {
        MailboxError::new(
            MailboxStage::Auth,
            format!("{endpoint}: login as {user} refused: {e}"),
        )
    };
    match &creds.login {
        Login::Password(password) => {
            let login = client.login(user, password.expose());
            match tokio::time::timeout(endpoint.timeout, login).await {
                Ok(Ok(session)) => Ok(session),
                Ok(Err((e, _))) => Err(refused(e)),
                Err(_) => Err(tls::timed_out(endpoint, "LOGIN", endpoint.timeout)),
            }
        }
        Login::Token { mechanism, source } => {
            with_token(client, creds, endpoint, (*mechanism, source), sasl_ir).await
        }
    }
}

/// `AUTHENTICATE` with a token; a refused token is renewed once before the refusal counts
/// (it may have been revoked or have expired early), on the same connection.
async fn with_token(
    mut client: Client<MailStream>,
    creds: &Credentials,
    endpoint: &Endpoint,
    (mechanism, source): (SaslMechanism, &TokenSource),
    sasl_ir: bool,
) -> Result<ImapSession, MailboxError> {
    let user = &creds.username;
    let mut renewed = false;
    loop {
        let token = oauth2::access_token(source, endpoint.timeout)
            .await
            .map_err(|e| MailboxError::new(MailboxStage::Auth, e.to_string()))?;
        let response =
            oauth2::initial_response(mechanism, user, &endpoint.host, endpoint.port, &token);
        let command = match sasl_ir {
            true => format!("{mechanism} {}", BASE64.encode(response.expose())),
            false => mechanism.as_str().to_string(),
        };
        let authenticator = TokenResponse {
            response,
            sent: sasl_ir,
        };
        let attempt = client.authenticate(command, authenticator);
        match tokio::time::timeout(endpoint.timeout, attempt).await {
            Ok(Ok(session)) => return Ok(session),
            Ok(Err((ImapError::No(text), back))) if !renewed => {
                tracing::info!(
                    %endpoint, %user, %mechanism, answer = %text,
                    "token refused; fetching a new one and trying once more"
                );
                oauth2::renew(source, &token);
                renewed = true;
                client = back;
            }
            Ok(Err((e, _))) => {
                return Err(MailboxError::new(
                    MailboxStage::Auth,
                    format!("{endpoint}: AUTHENTICATE {mechanism} as {user} refused: {e}"),
                ));
            }
            Err(_) => return Err(tls::timed_out(endpoint, "AUTHENTICATE", endpoint.timeout)),
        }
    }
}

/// Answers the server's first (empty) challenge with the initial response, unless it went
/// with the command already; any later challenge is the server's error report for XOAUTH2 or
/// OAUTHBEARER, answered with an empty response so the server sends its final `NO`.
struct TokenResponse {
    response: Secret,
    sent: bool,
}

impl Authenticator for TokenResponse {
    type Response = Vec<u8>;

    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        if std::mem::replace(&mut self.sent, true) {
            Vec::new()
        } else {
            self.response.expose().as_bytes().to_vec()
        }
    }
}
