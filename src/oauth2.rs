//! OAuth2 access tokens for SASL XOAUTH2 / OAUTHBEARER logins (Microsoft 365, Google).
//!
//! One cache for the whole process, keyed by token source ([`TokenSource::cache_key`]): a
//! thousand probes logging in to one tenant share one token and one request for it, as the
//! identity provider expects from one application. A token is used until shortly before it
//! expires; a server that refuses it gets one new token ([`renew`]) before the refusal counts.
//!
//! Every way to fail is bounded in time: the fetch runs under the endpoint's timeout, and a
//! source that just failed answers with the same error for [`FAILURE_HELD`] instead of being
//! asked again by every waiting login in turn (a down token endpoint must not stack up
//! timeouts behind one lock).

mod command;
mod endpoint;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{SaslMechanism, Secret, TokenSource};

/// An access token. Printing it shows `<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken(Secret);

impl AccessToken {
    /// The token, for the one place that must send it to a server.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// Why no token could be had. The message names the source (token URL or command) and, for an
/// endpoint, the HTTP status and the OAuth2 error code; it never holds a token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    /// What went wrong.
    pub message: String,
}

impl TokenError {
    fn new(source: &TokenSource, what: impl std::fmt::Display) -> TokenError {
        TokenError {
            message: format!("{}: {what}", source.describe()),
        }
    }
}

/// A token as a source handed it out.
struct Issued {
    token: AccessToken,
    /// Lifetime the source announced (`expires_in`), if any.
    expires_in: Option<Duration>,
}

/// How long a token without an announced lifetime (a `token_command`'s, or an endpoint that
/// omits `expires_in`) is used before a new one is asked for; a refusal renews it sooner.
const UNANNOUNCED_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Longest margin kept before an announced expiry: a token is not presented in its last
/// minutes, when it might expire between the fetch and the server's check.
const MAX_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long a failed fetch is answered from memory.
pub const FAILURE_HELD: Duration = Duration::from_secs(5);

/// Until when a token is used: its lifetime less a tenth (at most [`MAX_MARGIN`]).
fn fresh_for(expires_in: Option<Duration>) -> Duration {
    match expires_in {
        Some(life) => life - (life / 10).min(MAX_MARGIN),
        None => UNANNOUNCED_LIFETIME,
    }
}

/// What the cache holds for one source.
#[derive(Default)]
struct Held {
    token: Option<(AccessToken, Instant)>,
    failed: Option<(TokenError, Instant)>,
}

/// One source's entry: what is held, and the gate that lets one fetch run at a time.
#[derive(Default)]
struct Slot {
    held: Mutex<Held>,
    fetching: tokio::sync::Mutex<()>,
}

static CACHE: LazyLock<Mutex<HashMap<String, Arc<Slot>>>> = LazyLock::new(Default::default);

fn slot(source: &TokenSource) -> Arc<Slot> {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(cache.entry(source.cache_key()).or_default())
}

impl Slot {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token if still fresh, or the failure if still held.
    fn answer(&self) -> Option<Result<AccessToken, TokenError>> {
        let held = self.held();
        let now = Instant::now();
        if let Some((token, until)) = &held.token
            && now < *until
        {
            return Some(Ok(token.clone()));
        }
        match &held.failed {
            Some((e, at)) if now.duration_since(*at) < FAILURE_HELD => Some(Err(e.clone())),
            _ => None,
        }
    }
}

/// A valid token from `source`: the cached one while it is fresh, else a new one. One fetch
/// runs at a time per source; logins arriving meanwhile wait for it and share its result.
/// `timeout` bounds the fetch (the HTTP exchange or the command).
pub async fn access_token(
    source: &TokenSource,
    timeout: Duration,
) -> Result<AccessToken, TokenError> {
    let slot = slot(source);
    if let Some(answer) = slot.answer() {
        return answer;
    }
    let _gate = slot.fetching.lock().await;
    // Whoever held the gate before may have fetched (or failed) for us.
    if let Some(answer) = slot.answer() {
        return answer;
    }
    let fetched = match tokio::time::timeout(timeout, fetch(source, timeout)).await {
        Ok(result) => result,
        Err(_) => Err(TokenError::new(
            source,
            format!("no token within {}", humantime::format_duration(timeout)),
        )),
    };
    let mut held = slot.held();
    match fetched {
        Ok(issued) => {
            let until = Instant::now() + fresh_for(issued.expires_in);
            held.token = Some((issued.token.clone(), until));
            held.failed = None;
            tracing::debug!(
                source = %source.describe(), fresh_for = ?fresh_for(issued.expires_in),
                "new access token"
            );
            Ok(issued.token)
        }
        Err(e) => {
            held.failed = Some((e.clone(), Instant::now()));
            Err(e)
        }
    }
}

/// After a server refused `used`: forgets it, so the next [`access_token`] fetches a new one.
/// A token already replaced by another login's renewal stays.
pub fn renew(source: &TokenSource, used: &AccessToken) {
    let slot = slot(source);
    let mut held = slot.held();
    if held.token.as_ref().is_some_and(|(t, _)| t == used) {
        held.token = None;
    }
}

async fn fetch(source: &TokenSource, timeout: Duration) -> Result<Issued, TokenError> {
    match source {
        TokenSource::OAuth2(o) => endpoint::request(o, timeout)
            .await
            .map_err(|e| TokenError::new(source, e)),
        TokenSource::Command(argv) => command::run(argv)
            .await
            .map_err(|e| TokenError::new(source, e)),
    }
}

/// Whether `token` can be a bearer token (RFC 6750 `b64token`). Anything else, a CR or LF
/// above all, would let whoever controls the source write protocol lines of their own.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Checks a token a source handed out and wraps it.
fn accept(token: String) -> Result<AccessToken, String> {
    if is_b64token(&token) {
        Ok(AccessToken(Secret::new(token)))
    } else {
        Err(format!(
            "the token ({} bytes) has characters a bearer token cannot have",
            token.len()
        ))
    }
}

/// The SASL initial client response (before base64) for `mechanism`: Google's and
/// Microsoft's XOAUTH2 (`user=…^Aauth=Bearer …^A^A`) or RFC 7628 OAUTHBEARER, whose GS2 header
/// carries the user as authzid (with `,` and `=` escaped, RFC 5801) and which names the server.
pub fn initial_response(
    mechanism: SaslMechanism,
    user: &str,
    host: &str,
    port: u16,
    token: &AccessToken,
) -> Secret {
    let token = token.expose();
    Secret::new(match mechanism {
        SaslMechanism::Xoauth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
        SaslMechanism::OAuthBearer => {
            let authzid = user.replace('=', "=3D").replace(',', "=2C");
            format!("n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
        }
    })
}

#[cfg(test)]
mod tests;
