//! Secrets: passwords and the canary signing key.
//!
//! A secret is read from the environment or a file, never echoed: [`Secret`]'s `Debug` and
//! `Display` print `<secret>` so that logging a config struct cannot leak it.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

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

/// Keys shorter than this many bytes are warned about: the key is all that stands between a
/// forger and a canary that counts.
pub const SHORT_KEY: usize = 16;

/// Why the canary signing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `secret_env` names a variable that is not set.
    #[error("agent.secret_env: environment variable {var} is not set")]
    EnvNotSet {
        /// The variable.
        var: String,
    },
    /// `secret_env` names a variable whose value is not UTF-8 text.
    #[error("agent.secret_env: environment variable {var} is not valid UTF-8")]
    EnvNotText {
        /// The variable.
        var: String,
    },
    /// The key file exists but cannot be read (or is not UTF-8 text).
    #[error("cannot read signing key {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The key file is missing and the directory to create it in cannot be made.
    #[error("cannot create directory {} for signing key {}", dir.display(), path.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The key file is missing and cannot be created.
    #[error("cannot create signing key {}", path.display())]
    Create {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The key is only white space.
    #[error("the canary signing key {what} is empty")]
    Empty {
        /// Where it was read: `in /path/to/key` or `in environment variable NAME`.
        what: String,
    },
}

/// Loads the canary signing key, creating a random one (mode 0600) when the file is missing.
///
/// The key is the file's or variable's text with surrounding white space removed, so it can be
/// copied between agents that must verify each other's canaries. A key file that group or others
/// can read, or a key shorter than 16 bytes, works but is warned about in the log
/// (which names the file, its mode and the length, never the key).
pub fn load_signing_key(source: &SecretSource) -> Result<SigningKey, KeyError> {
    let (key, warnings) = read_signing_key(source)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(key)
}

/// The key and what is wrong with how it is kept.
fn read_signing_key(source: &SecretSource) -> Result<(SigningKey, Vec<String>), KeyError> {
    let mut warnings = Vec::new();
    let (text, what) = match source {
        SecretSource::Env(var) => (
            std::env::var(var).map_err(|e| match e {
                std::env::VarError::NotPresent => KeyError::EnvNotSet { var: var.clone() },
                std::env::VarError::NotUnicode(_) => KeyError::EnvNotText { var: var.clone() },
            })?,
            format!("in environment variable {var}"),
        ),
        SecretSource::File(path) => (
            read_or_create_key(path, &mut warnings)?,
            format!("in {}", path.display()),
        ),
    };
    let bytes = text.trim().as_bytes();
    if !bytes.is_empty() && bytes.len() < SHORT_KEY {
        warnings.push(format!(
            "the canary signing key {what} is only {} bytes long; use at least {SHORT_KEY} random \
             bytes (a missing key file is created with 32)",
            bytes.len()
        ));
    }
    let key = SigningKey::new(bytes.to_vec()).ok_or(KeyError::Empty { what })?;
    Ok((key, warnings))
}

fn read_or_create_key(path: &Path, warnings: &mut Vec<String>) -> Result<String, KeyError> {
    let cannot_read = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::File::open(path) {
        Ok(mut file) => {
            // The mode of the file read, not of whatever the path names a moment later.
            let mode = file.metadata().map_err(cannot_read)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "the canary signing key {} has mode {mode:04o}: group or others can read or \
                     write it; chmod 600 it",
                    path.display()
                ));
            }
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(cannot_read)?;
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let text = format!("{}\n", URL_SAFE_NO_PAD.encode(bytes));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| KeyError::CreateDir {
                    dir: dir.to_path_buf(),
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
                .map_err(|source| KeyError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            tracing::info!(path = %path.display(), "created a new canary signing key");
            Ok(text)
        }
        Err(e) => Err(cannot_read(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(mode: u32, text: &str) -> (tempfile::TempDir, SecretSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, SecretSource::File(path))
    }

    const GOOD: &str = "0123456789abcdef0123456789abcdef\n";

    #[test]
    fn a_private_long_key_gives_no_warning() {
        let (_dir, source) = key_file(0o600, GOOD);
        let (_, warnings) = read_signing_key(&source).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_key_file_others_can_read_is_warned_about() {
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let (_dir, source) = key_file(mode, GOOD);
            let (_, warnings) = read_signing_key(&source).unwrap();
            assert_eq!(warnings.len(), 1, "{mode:o}: {warnings:?}");
            assert!(
                warnings[0].contains(&format!("mode {mode:04o}"))
                    && warnings[0].contains("chmod 600"),
                "{warnings:?}"
            );
            assert!(
                !warnings[0].contains(GOOD.trim()),
                "the key must not be shown"
            );
        }
    }

    #[test]
    fn a_short_key_is_warned_about_without_showing_it() {
        let (_dir, source) = key_file(0o600, "  s3cr3t-15-bytes \n");
        let (_, warnings) = read_signing_key(&source).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("only 15 bytes long"), "{warnings:?}");
        assert!(!warnings[0].contains("s3cr3t"), "the key must not be shown");
        let (_dir, source) = key_file(0o600, "0123456789abcdef");
        assert!(read_signing_key(&source).unwrap().1.is_empty());
    }

    #[test]
    fn a_created_key_gives_no_warning() {
        let dir = tempfile::tempdir().unwrap();
        let source = SecretSource::File(dir.path().join("canary.key"));
        let (_, warnings) = read_signing_key(&source).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn key_errors_name_the_file_or_variable_and_keep_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the key file should be: it opens, but cannot be read as text.
        let path = dir.path().join("canary.key");
        std::fs::create_dir(&path).unwrap();
        let e = read_signing_key(&SecretSource::File(path.clone())).unwrap_err();
        assert!(matches!(e, KeyError::Read { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("cannot read signing key {}", path.display())
        );
        let chain = crate::setup::chain(&e);
        assert!(
            chain.starts_with(&format!("cannot read signing key {}: ", path.display()))
                && chain.len() > e.to_string().len() + 2,
            "{chain}"
        );

        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let path = blocked.join("canary.key");
        let e = read_signing_key(&SecretSource::File(path.clone())).unwrap_err();
        let shown = crate::setup::chain(&e);
        assert!(
            shown.starts_with(&format!("cannot read signing key {}: ", path.display())),
            "{shown}"
        );

        let e = read_signing_key(&SecretSource::Env("MC_SECRET_TEST_UNSET".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "agent.secret_env: environment variable MC_SECRET_TEST_UNSET is not set"
        );

        let (_dir, source) = key_file(0o600, " \n");
        let e = read_signing_key(&source).unwrap_err();
        assert!(
            e.to_string().starts_with("the canary signing key in ")
                && e.to_string().ends_with("canary.key is empty"),
            "{e}"
        );
    }

    #[test]
    fn a_key_that_cannot_be_created_names_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        // A dangling link on the way: the key is missing, and its directory cannot be made.
        let blocked = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere/x"), &blocked).unwrap();
        let path = blocked.join("sub/canary.key");
        let e = read_signing_key(&SecretSource::File(path.clone())).unwrap_err();
        assert!(matches!(e, KeyError::CreateDir { .. }), "{e:?}");
        let shown = crate::setup::chain(&e);
        assert!(
            shown.starts_with(&format!(
                "cannot create directory {} for signing key {}: ",
                blocked.join("sub").display(),
                path.display()
            )),
            "{shown}"
        );
    }
}
