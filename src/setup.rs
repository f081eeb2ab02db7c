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
