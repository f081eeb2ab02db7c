//! How an endpoint logs in: a password, or an OAuth2 access token presented with SASL
//! XOAUTH2 or OAUTHBEARER (RFC 7628), which is all Microsoft 365 and Google Workspace accept.
//!
//! A token source is configuration, not a token: the tokens themselves are fetched, cached and
//! renewed by [`crate::oauth2`]. What is checked here is what can be checked before the first
//! login: that exactly one source is named, that its secrets can be read, and that a token URL
//! is not plain HTTP to another host (a client secret must never cross a network in clear).

use std::fmt;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::raw::{RawEndpoint, RawOAuth2, Spanned};
use super::secret::{self, Secret};
use super::{ConfigError, Context};

/// How a login proves itself.
#[derive(Debug, Clone)]
pub enum Login {
    /// A password (PLAIN or LOGIN, or the protocol's own command).
    Password(Secret),
    /// An access token from `source`, presented with `mechanism`.
    Token {
        /// The SASL mechanism.
        mechanism: SaslMechanism,
        /// Where tokens come from.
        source: TokenSource,
    },
}

impl Login {
    /// The password, for a password login.
    pub fn password(&self) -> Option<&Secret> {
        match self {
            Login::Password(p) => Some(p),
            Login::Token { .. } => None,
        }
    }

    /// The SASL mechanism `check` and the logs name: `PLAIN/LOGIN` for a password.
    pub fn mechanism_name(&self) -> &'static str {
        match self {
            Login::Password(_) => "password",
            Login::Token { mechanism, .. } => mechanism.as_str(),
        }
    }

    /// What decides whether two endpoints log in the same way (a hash, never the secret).
    pub fn fingerprint(&self) -> String {
        match self {
            Login::Password(p) => format!("password {}", hash(p.expose())),
            Login::Token { mechanism, source } => {
                format!("{} {}", mechanism.as_str(), source.cache_key())
            }
        }
    }
}

/// The SASL mechanisms that carry a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    Xoauth2,
    /// RFC 7628 `OAUTHBEARER`.
    OAuthBearer,
}

impl SaslMechanism {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Xoauth2 => "XOAUTH2",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an endpoint's access tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// An OAuth2 token endpoint.
    OAuth2(OAuth2Source),
    /// A command whose standard output is the token (as isync's `PassCmd`).
    Command(Vec<String>),
}

impl TokenSource {
    /// Identifies the source for the token cache: endpoints with the same key share tokens.
    /// Secrets enter only as a hash, so the key can be kept and compared freely.
    pub fn cache_key(&self) -> String {
        match self {
            TokenSource::OAuth2(o) => {
                let grant = match &o.grant {
                    Grant::ClientCredentials => "client_credentials".to_string(),
                    Grant::RefreshToken { file } => format!("refresh_token {}", file.display()),
                };
                let secret = o.client_secret.as_ref().map(|s| hash(s.expose()));
                format!(
                    "oauth2 {} {} {:?} {grant} {:?}",
                    o.token_url, o.client_id, o.scope, secret
                )
            }
            TokenSource::Command(argv) => format!("command {argv:?}"),
        }
    }

    /// Names the source in messages: the token URL or the command's program, never a secret.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::OAuth2(o) => format!("token endpoint {}", o.token_url),
            TokenSource::Command(argv) => format!("token command {}", argv[0]),
        }
    }
}

/// An OAuth2 token endpoint and the grant used at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Source {
    /// Where tokens are requested (`https://`, or `http://` to a loopback address).
    pub token_url: String,
    /// The application's id at the identity provider.
    pub client_id: String,
    /// The application's secret, when the grant needs one.
    pub client_secret: Option<Secret>,
    /// The scope asked for, when set.
    pub scope: Option<String>,
    /// How the token is obtained.
    pub grant: Grant,
}

/// OAuth2 grants mailcanary can use without a person present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 4.4 (Microsoft 365 app-only access).
    ClientCredentials,
    /// RFC 6749 6 with a refresh token kept in `file`; a new refresh token returned by the
    /// server replaces the stored one (Microsoft rotates them).
    RefreshToken {
        /// The file holding the current refresh token.
        file: PathBuf,
    },
}

fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Resolves how `raw` (the endpoint at `key`) logs in, if it names any login source.
pub(super) fn resolve(
    cx: &Context,
    raw: &RawEndpoint,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Login>, ConfigError> {
    let password_key = [
        (&raw.password, "password"),
        (&raw.password_env, "password_env"),
        (&raw.password_file, "password_file"),
    ]
    .into_iter()
    .find_map(|(v, name)| v.as_ref().map(|_| name));
    let token_key = match (&raw.oauth2, &raw.token_command) {
        (Some(o), Some(_)) => {
            return Err(cx.at(
                o,
                &format!("{key}.oauth2"),
                format!("{key}.oauth2 and {key}.token_command: set only one token source"),
            ));
        }
        (Some(_), None) => Some("oauth2"),
        (None, Some(_)) => Some("token_command"),
        (None, None) => None,
    };
    if let (Some(password), Some(token)) = (password_key, token_key) {
        let span = raw
            .oauth2
            .as_ref()
            .map(Spanned::span)
            .or_else(|| raw.token_command.as_ref().map(Spanned::span));
        return Err(cx.error(
            span,
            &format!("{key}.{token}"),
            format!(
                "{key}.{password} and {key}.{token} are both set: a login uses a password or a \
                 token source, not both"
            ),
        ));
    }
    let mechanism = mechanism(cx, raw, key, token_key.is_some())?;
    if let Some(oauth2) = &raw.oauth2 {
        let source = oauth2_source(cx, oauth2, &format!("{key}.oauth2"))?;
        return Ok(Some(Login::Token {
            mechanism,
            source: TokenSource::OAuth2(source),
        }));
    }
    if let Some(argv) = &raw.token_command {
        if argv.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
            return Err(cx.at(
                argv,
                &format!("{key}.token_command"),
                "needs the command to run, e.g. [\"/usr/local/bin/get-token\", \"--account\", \"probe\"]",
            ));
        }
        return Ok(Some(Login::Token {
            mechanism,
            source: TokenSource::Command(argv.get_ref().clone()),
        }));
    }
    Ok(secret::resolve_password(cx, raw, key, warnings)?.map(Login::Password))
}

fn mechanism(
    cx: &Context,
    raw: &RawEndpoint,
    key: &str,
    has_token_source: bool,
) -> Result<SaslMechanism, ConfigError> {
    let Some(m) = &raw.mechanism else {
        return Ok(SaslMechanism::Xoauth2);
    };
    let key = format!("{key}.mechanism");
    if !has_token_source {
        return Err(cx.at(
            m,
            &key,
            "a mechanism needs a token source (oauth2 or token_command); passwords are sent \
             with PLAIN or LOGIN",
        ));
    }
    match m.get_ref().as_str() {
        "xoauth2" => Ok(SaslMechanism::Xoauth2),
        "oauthbearer" => Ok(SaslMechanism::OAuthBearer),
        other => Err(cx.at(
            m,
            &key,
            format!("unknown mechanism {other:?}; expected \"xoauth2\" or \"oauthbearer\""),
        )),
    }
}

fn oauth2_source(
    cx: &Context,
    spanned: &Spanned<RawOAuth2>,
    key: &str,
) -> Result<OAuth2Source, ConfigError> {
    let raw = spanned.get_ref();
    let missing = |name: &str, what: &str| {
        cx.at(
            spanned,
            &format!("{key}.{name}"),
            format!("{key} needs {name} ({what})"),
        )
    };
    let token_url = raw
        .token_url
        .as_ref()
        .ok_or_else(|| missing("token_url", "the identity provider's token endpoint"))?;
    check_token_url(cx, token_url, &format!("{key}.token_url"))?;
    let client_id = raw
        .client_id
        .as_ref()
        .filter(|c| !c.get_ref().trim().is_empty())
        .ok_or_else(|| missing("client_id", "the application's id"))?;
    let client_secret = client_secret(cx, raw, key)?;
    let grant = match (raw.grant.as_ref(), &raw.refresh_token_file) {
        (Some(g), _) if !matches!(g.get_ref().as_str(), "client_credentials" | "refresh_token") => {
            return Err(cx.at(
                g,
                &format!("{key}.grant"),
                format!(
                    "unknown grant {:?}; expected \"client_credentials\" or \"refresh_token\"",
                    g.get_ref()
                ),
            ));
        }
        (Some(g), Some(file)) if g.get_ref() == "client_credentials" => {
            return Err(cx.at(
                file,
                &format!("{key}.refresh_token_file"),
                "a refresh token is only used with grant = \"refresh_token\"",
            ));
        }
        (Some(g), None) if g.get_ref() == "refresh_token" => {
            return Err(cx.at(
                g,
                &format!("{key}.refresh_token_file"),
                "grant = \"refresh_token\" needs refresh_token_file (the file holding the refresh token)",
            ));
        }
        (_, Some(file)) => {
            let path = cx.resolve(file.get_ref());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                cx.at(
                    file,
                    &format!("{key}.refresh_token_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if text.trim().is_empty() {
                return Err(cx.at(
                    file,
                    &format!("{key}.refresh_token_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Grant::RefreshToken { file: path }
        }
        (_, None) => {
            if client_secret.is_none() {
                return Err(missing(
                    "client_secret_env",
                    "or client_secret_file: the client credentials grant needs the application's secret",
                ));
            }
            Grant::ClientCredentials
        }
    };
    Ok(OAuth2Source {
        token_url: token_url.get_ref().clone(),
        client_id: client_id.get_ref().clone(),
        client_secret,
        scope: raw.scope.as_ref().map(|s| s.get_ref().clone()),
        grant,
    })
}

/// A token URL must be `https://`; plain `http://` only to this host (a local identity
/// provider or a test stand-in), since the client secret and the tokens travel in it.
fn check_token_url(cx: &Context, url: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    let text = url.get_ref();
    let bad = |why: &str| cx.at(url, key, format!("{text:?}: {why}"));
    let uri: hyper::Uri = text.parse().map_err(|_| bad("not a URL"))?;
    let host = uri.host().ok_or_else(|| bad("names no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") => Ok(()),
        Some("http") => Err(bad(
            "must be https:// (plain http only to a loopback address): the client secret and \
             tokens travel in it",
        )),
        _ => Err(bad("must be an https:// URL")),
    }
}

fn client_secret(cx: &Context, raw: &RawOAuth2, key: &str) -> Result<Option<Secret>, ConfigError> {
    match (&raw.client_secret_env, &raw.client_secret_file) {
        (Some(env), Some(_)) => Err(cx.at(
            env,
            &format!("{key}.client_secret_env"),
            "set only one of client_secret_env, client_secret_file",
        )),
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Err(cx.at(
                var,
                &format!("{key}.client_secret_env"),
                format!("environment variable {} is not set or empty", var.get_ref()),
            )),
        },
        (None, Some(file)) => {
            let path = cx.resolve(file.get_ref());
            let key = format!("{key}.client_secret_file");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| cx.at(file, &key, format!("cannot read {}: {e}", path.display())))?;
            let value = text.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                return Err(cx.at(file, &key, format!("{} is empty", path.display())));
            }
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
