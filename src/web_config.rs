//! `--web.config.file`: TLS and basic auth for the HTTP endpoints, in the Prometheus
//! exporter-toolkit format, so the file an SRE already writes for node_exporter works here.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.pem      # relative paths are relative to this file
//!   key_file: server.key       # PKCS#8 PEM
//! basic_auth_users:
//!   prometheus: $2y$10$...     # bcrypt hashes (htpasswd -nB, or any bcrypt tool)
//! ```
//!
//! Keys of the format this agent does not implement (client certificates, cipher and version
//! pinning) are refused rather than ignored: silently weaker security is worse than an error.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio_native_tls::TlsAcceptor;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
}

/// The web endpoints' protection.
pub struct WebConfig {
    /// Serve HTTPS with this acceptor.
    pub tls: Option<TlsAcceptor>,
    users: BTreeMap<String, String>,
    /// Credentials already checked: bcrypt is deliberately slow (tens of ms), and Prometheus
    /// sends the same ones every scrape. Holds SHA-256 digests, never the passwords.
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// Why the web config file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}", path = .path.display())]
pub struct WebConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl WebConfig {
    /// No TLS, no authentication: the default without `--web.config.file`.
    pub fn open() -> WebConfig {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Reads and checks a web config file.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let error = |message: String| WebConfigError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let raw: RawWebConfig = yaml_serde::from_str(&text).map_err(|e| error(e.to_string()))?;
        for (user, hash) in &raw.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(error(format!("basic_auth_users.{user}: not a bcrypt hash")));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => {
                Some(acceptor(&base.join(&t.cert_file), &base.join(&t.key_file)).map_err(error)?)
            }
        };
        Ok(WebConfig {
            tls,
            users: raw.basic_auth_users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether requests must carry credentials at all.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether a request with this `Authorization` header may proceed.
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        if !self.requires_auth() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(format!("{user}\0{password}\0{hash}")).into();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.contains(&digest) {
            return true;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if ok {
            verified.insert(digest);
        }
        ok
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let identity = native_tls::Identity::from_pkcs8(&read(cert)?, &read(key)?)
        .map_err(|e| format!("tls_server_config: {e} (key_file must be PKCS#8 PEM)"))?;
    native_tls::TlsAcceptor::new(identity)
        .map(TlsAcceptor::from)
        .map_err(|e| format!("tls_server_config: {e}"))
}

/// User and password of an `Authorization: Basic …` header.
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Result<WebConfig, WebConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, yaml).unwrap();
        WebConfig::load(&path)
    }

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    #[test]
    fn basic_auth_checks_bcrypt_hashes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let web = config(&format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
        assert!(web.tls.is_none());
        assert!(web.authorized(Some(&basic("prometheus", "s3cret"))));
        assert!(
            web.authorized(Some(&basic("prometheus", "s3cret"))),
            "cached"
        );
        assert!(!web.authorized(Some(&basic("prometheus", "wrong"))));
        assert!(!web.authorized(Some(&basic("someone", "s3cret"))));
        assert!(!web.authorized(None));
        assert!(!web.authorized(Some(b"Bearer abc")));
        assert!(!web.authorized(Some(b"Basic !!!")));
    }

    #[test]
    fn no_users_means_no_authentication() {
        let web = config("{}\n").unwrap();
        assert!(web.authorized(None));
    }

    #[test]
    fn mistakes_are_refused_with_the_file_named() {
        let e = config("basic_auth_users:\n  prometheus: plaintext\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("web.yml: basic_auth_users.prometheus: not a bcrypt hash"),
            "{e}"
        );
        let e = config("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client_ca_file"), "{e}");
        let e = config("tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );
    }
}
