//! Secrets: passwords and the canary signing key.
//!
//! A secret is read from the environment or a file, never echoed: [`Secret`]'s `Debug` and
//! `Display` print `<secret>` so that logging a config struct cannot leak it.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::raw::RawEndpoint;
use super::{ConfigError, Context, SecretSource};
use crate::canary::SigningKey;

/// A password or key. Printing it shows `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Resolves `password_env` / `password_file` / `password` of one endpoint.
pub(super) fn resolve_password(
    cx: &Context,
    raw: &RawEndpoint,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Secret>, ConfigError> {
    let sources = [&raw.password, &raw.password_env, &raw.password_file];
    if sources.iter().filter(|s| s.is_some()).count() > 1 {
        let first = sources
            .iter()
            .find_map(|s| s.as_ref())
            .expect("counted above");
        return Err(cx.at(
            first,
            &format!("{key}.password"),
            "set only one of password_env, password_file, password",
        ));
    }
    if let Some(var) = &raw.password_env {
        let key = format!("{key}.password_env");
        return match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(cx.at(
                var,
                &key,
                format!("environment variable {} is not set or empty", var.get_ref()),
            )),
        };
    }
    if let Some(file) = &raw.password_file {
        let path = cx.resolve(file.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            cx.at(
                file,
                &format!("{key}.password_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let value = text.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            let key = format!("{key}.password_file");
            return Err(cx.at(file, &key, format!("{} is empty", path.display())));
        }
        return Ok(Some(Secret(value)));
    }
    if let Some(literal) = &raw.password {
        let (line, _) = super::context::line_col(cx.text, literal.span().start);
        warnings.push(format!(
            "{}:{line}: {key}.password is written in the config file; prefer password_env or password_file",
            cx.path.display()
        ));
        return Ok(Some(Secret(literal.get_ref().clone())));
    }
    Ok(None)
}

/// Loads the canary signing key, creating a random one (mode 0600) when the file is missing.
///
/// The key is the file's or variable's text with surrounding white space removed, so it can be
/// copied between agents that must verify each other's canaries.
pub fn load_signing_key(source: &SecretSource) -> Result<SigningKey, String> {
    let text = match source {
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("agent.secret_env: environment variable {var} is not set"))?,
        SecretSource::File(path) => read_or_create_key(path)?,
    };
    SigningKey::new(text.trim().as_bytes().to_vec())
        .ok_or_else(|| "the canary signing key is empty".to_string())
}

fn read_or_create_key(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let text = format!("{}\n", URL_SAFE_NO_PAD.encode(bytes));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
                .map_err(|e| format!("cannot create signing key {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new canary signing key");
            Ok(text)
        }
        Err(e) => Err(format!("cannot read signing key {}: {e}", path.display())),
    }
}
