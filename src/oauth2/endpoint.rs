//! A token request to an OAuth2 token endpoint (RFC 6749 4.4 and 6): one HTTP/1.1 `POST` of a
//! form, over TLS verified against the system's roots (plain HTTP only to a loopback address,
//! which config validation enforces).
//!
//! The answer is read with a size bound and checked before use: the token must look like a
//! bearer token, and a refresh token the server rotated is written back to its file before the
//! new access token is handed out, so a restart never presents one the server has retired.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Issued, accept};
use crate::config::{Grant, OAuth2Source};

/// Largest answer read from a token endpoint; real ones are a few KiB.
const MAX_ANSWER: usize = 64 * 1024;

/// Longest piece of an endpoint's error text quoted in a message.
const MAX_QUOTED: usize = 200;

/// Asks `source` for a token. Errors are messages for the log (no secret in them); the caller
/// names the endpoint.
pub(super) async fn request(source: &OAuth2Source, timeout: Duration) -> Result<Issued, String> {
    let refresh_token = match &source.grant {
        Grant::RefreshToken { file } => Some(read_refresh_token(file)?),
        Grant::ClientCredentials => None,
    };
    let form = form(source, refresh_token.as_deref());
    let (status, body) = post(&source.token_url, form, timeout).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "HTTP {status}, and the answer is not JSON: {}",
            quoted(&body)
        )
    })?;
    if !status.is_success() {
        return Err(format!("HTTP {status}{}", oauth_error(&answer)));
    }
    let token = answer
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| format!("HTTP {status} without an access_token"))?;
    let token = accept(token.to_string())?;
    if let (Grant::RefreshToken { file }, Some(new)) = (&source.grant, answer.get("refresh_token"))
        && let Some(new) = new.as_str()
        && Some(new) != refresh_token.as_deref()
    {
        store_refresh_token(file, new)?;
    }
    Ok(Issued {
        token,
        expires_in: expires_in(&answer),
    })
}

/// The form for the grant; the client authenticates in the body (`client_secret_post`), which
/// Microsoft's and Google's endpoints both take.
fn form(source: &OAuth2Source, refresh_token: Option<&str>) -> String {
    let mut fields = vec![("client_id", source.client_id.as_str())];
    match refresh_token {
        Some(token) => {
            fields.insert(0, ("grant_type", "refresh_token"));
            fields.push(("refresh_token", token));
        }
        None => fields.insert(0, ("grant_type", "client_credentials")),
    }
    if let Some(secret) = &source.client_secret {
        fields.push(("client_secret", secret.expose()));
    }
    if let Some(scope) = &source.scope {
        fields.push(("scope", scope));
    }
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `application/x-www-form-urlencoded` value encoding: unreserved characters as they are,
/// every other byte as `%XX`.
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `expires_in` as a number or a numeric string (both occur in the wild).
fn expires_in(answer: &serde_json::Value) -> Option<Duration> {
    let value = answer.get("expires_in")?;
    let seconds = value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))?;
    Some(Duration::from_secs(seconds))
}

/// `: error (description)` from an RFC 6749 5.2 error answer, quoted with bounds.
fn oauth_error(answer: &serde_json::Value) -> String {
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(|v| v.as_str())
            .map(|s| quoted(s.as_bytes()))
    };
    match (field("error"), field("error_description")) {
        (Some(e), Some(d)) => format!(": {e} ({d})"),
        (Some(e), None) => format!(": {e}"),
        _ => String::new(),
    }
}

/// Text from the endpoint for a message: printable characters only, at most [`MAX_QUOTED`].
fn quoted(bytes: &[u8]) -> String {
    crate::text::printable(&String::from_utf8_lossy(bytes), MAX_QUOTED)
}

fn read_refresh_token(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the refresh token file {}: {e}", file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "the refresh token file {} is empty",
            file.display()
        ));
    }
    Ok(token.to_string())
}

/// Replaces the refresh token file whole (a new file renamed over it, mode 0600): a crash
/// leaves the old token or the new one, never half of one.
fn store_refresh_token(file: &Path, token: &str) -> Result<(), String> {
    crate::export::replace_file(file, &format!("{token}\n"), 0o600).map_err(|e| {
        format!(
            "the server rotated the refresh token but {} cannot be rewritten ({e}); the new \
             token is lost and the old one may no longer work",
            file.display()
        )
    })?;
    tracing::info!(file = %file.display(), "refresh token rotated by the server; file updated");
    Ok(())
}

/// POSTs `form` to `url`; the status and the body (at most [`MAX_ANSWER`] bytes).
async fn post(
    url: &str,
    form: String,
    timeout: Duration,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad token_url: {e}"))?;
    let host = uri.host().ok_or("token_url names no host")?.to_string();
    let tls = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let request = Request::post(path)
        .header(HOST, authority.as_str())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    if tls {
        let connector = native_tls::TlsConnector::new()
            .map(tokio_native_tls::TlsConnector::from)
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let stream = connector
            .connect(bare, tcp)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        exchange(stream, request, &authority, timeout).await
    } else {
        exchange(tcp, request, &authority, timeout).await
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    authority: &str,
    timeout: Duration,
) -> Result<(hyper::StatusCode, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| format!("HTTP with {authority}: {e}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    // The connection task ends with the exchange (or with the caller's timeout, bounded too).
    tokio::spawn(tokio::time::timeout(timeout, conn));
    let response = sender.send_request(request).await.map_err(failed)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer of {authority}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn forms_encode_every_field_of_the_grant() {
        let mut source = OAuth2Source {
            token_url: "https://idp/token".into(),
            client_id: "app id".into(),
            client_secret: Some(Secret::new("s&=+")),
            scope: Some("https://outlook.office365.com/.default".into()),
            grant: Grant::ClientCredentials,
        };
        assert_eq!(
            form(&source, None),
            "grant_type=client_credentials&client_id=app%20id&client_secret=s%26%3D%2B\
             &scope=https%3A%2F%2Foutlook.office365.com%2F.default"
        );
        source.client_secret = None;
        source.scope = None;
        assert_eq!(
            form(&source, Some("r/1")),
            "grant_type=refresh_token&client_id=app%20id&refresh_token=r%2F1"
        );
    }

    #[test]
    fn lifetimes_come_as_numbers_or_strings() {
        let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(
            expires_in(&v(r#"{"expires_in":3599}"#)),
            Some(Duration::from_secs(3599))
        );
        assert_eq!(
            expires_in(&v(r#"{"expires_in":"60"}"#)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(expires_in(&v(r#"{"expires_in":"soon"}"#)), None);
        assert_eq!(expires_in(&v("{}")), None);
    }

    #[test]
    fn endpoint_errors_are_quoted_without_control_characters_and_bounded() {
        let v = serde_json::json!({"error": "invalid_grant", "error_description": "a\r\nb"});
        assert_eq!(oauth_error(&v), ": invalid_grant (a  b)");
        let long = "x".repeat(1000);
        let q = quoted(long.as_bytes());
        assert_eq!(q.chars().count(), MAX_QUOTED + 1);
        assert_eq!(oauth_error(&serde_json::json!({"e": 1})), "");
    }
}
