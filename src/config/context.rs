//! What every part of validation shares: where the config came from, to phrase errors as
//! `file:line:column: key: message` and to resolve relative paths. Its own module so that the
//! parts (probes, classes, mailboxes, secrets) depend on it and not on each other.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::Spanned;
use super::{ConfigError, Span};

/// What validation needs to phrase errors and resolve relative paths.
pub(super) struct Context<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Context<'_> {
    pub(super) fn error(&self, span: Option<Span>, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            position: span.map(|s| line_col(self.text, s.start)),
            key: (!key.is_empty()).then(|| key.to_string()),
            message,
        }
    }

    pub(super) fn at<T>(
        &self,
        v: &Spanned<T>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(Some(v.span()), key, message.into())
    }

    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let key = e.span().and_then(|s| key_near(self.text, s.start));
        self.error(
            e.span(),
            key.as_deref().unwrap_or(""),
            e.message().to_string(),
        )
    }

    /// Resolves a path from the config relative to the config file's directory.
    pub(super) fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    pub(super) fn duration(&self, v: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(v.get_ref())
            .map_err(|e| self.at(v, key, format!("{e} (expected a duration like \"90s\")")))?;
        if d.is_zero() {
            return Err(self.at(v, key, "must be greater than zero"));
        }
        Ok(d)
    }

    /// A duration that may be zero (e.g. `jitter = "0s"`).
    pub(super) fn duration_or_zero(
        &self,
        v: &Spanned<String>,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        humantime::parse_duration(v.get_ref())
            .map_err(|e| self.at(v, key, format!("{e} (expected a duration like \"3s\")")))
    }
}

/// The key written on the line of `offset` (`key = value`), for errors toml reports on a value.
fn key_near(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#')).then(|| key.to_string())
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
