//! Why a probe's endpoint cannot be prepared, before anything connects: its trust root, the
//! TLS library, a Maildir that is not one. Found at start-up, so `run`, `once` and `check` fail
//! at once with the probe, the side and the file named, instead of on the first round.

use std::error::Error as StdError;
use std::path::PathBuf;

/// What went wrong preparing one endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// `ca_file` cannot be read.
    #[error("cannot read ca_file {}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// `ca_file` holds no usable PEM certificate.
    #[error("ca_file {} is not a PEM certificate", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What the TLS library said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The TLS library refused the settings.
    #[error("cannot set up TLS")]
    Tls(#[source] Box<dyn StdError + Send + Sync>),
    /// A Maildir folder name (one to watch, or clean-up's move target) is not a Maildir++
    /// name, so it names no directory.
    #[error("Maildir {}: {key}", maildir.display())]
    MaildirFolder {
        /// The Maildir.
        maildir: PathBuf,
        /// The setting the name is in: `folders` or `cleanup`.
        key: &'static str,
        /// The name and what is wrong with it.
        #[source]
        source: crate::mailbox::maildir::FolderNameError,
    },
}

/// A [`SetupError`] with the probe and side (`smtp`, `mailbox`) it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("probe {probe}: {side}")]
pub struct ProbeSetupError {
    /// The probe's name.
    pub probe: String,
    /// `smtp` or `mailbox`.
    pub side: &'static str,
    /// What went wrong.
    #[source]
    pub source: SetupError,
}

/// Reads a `ca_file`'s bytes.
pub(crate) fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::ReadCa {
        path: path.to_path_buf(),
        source,
    })
}

/// An error and its causes on one line (`a: b: c`), for output that is not an anyhow chain.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A process-wide memo of what is costly to build and the same for equal settings (TLS
/// connectors: each holds its own copy of the trust roots), so 1,000 probes with one trust
/// setting build it once. Failures are not remembered: they stop the start-up anyway.
pub(crate) struct Memo<K, V>(
    std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<K, V>>>,
);

impl<K: Eq + std::hash::Hash, V: Clone> Memo<K, V> {
    /// An empty memo, for a `static`.
    pub(crate) const fn new() -> Memo<K, V> {
        Memo(std::sync::LazyLock::new(Default::default))
    }

    /// The value for `key`, built by `build` the first time.
    pub(crate) fn get_or_build<E>(
        &self,
        key: K,
        build: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        // Built under the lock: at start-up, so equal settings wait for the first build.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get(&key) {
            return Ok(v.clone());
        }
        let v = build()?;
        map.insert(key, v.clone());
        Ok(v)
    }

    /// Every value built so far.
    pub(crate) fn values(&self) -> Vec<V> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}

#[cfg(test)]
mod memo_tests {
    use super::Memo;

    #[test]
    fn a_memo_builds_once_per_key_and_forgets_failures() {
        static MEMO: Memo<(Option<&str>, bool), u32> = Memo::new();
        let mut builds = 0;
        let mut get = |key, fail: bool| {
            MEMO.get_or_build(key, || {
                builds += 1;
                if fail { Err(()) } else { Ok(builds) }
            })
        };
        assert_eq!(get((None, true), false), Ok(1));
        assert_eq!(get((None, true), false), Ok(1));
        assert_eq!(get((Some("ca.pem"), true), true), Err(()));
        assert_eq!(get((Some("ca.pem"), true), false), Ok(3));
        assert_eq!(get((Some("ca.pem"), true), false), Ok(3));
        assert_eq!(get((None, false), false), Ok(4));
        assert_eq!(builds, 4);
    }
}
