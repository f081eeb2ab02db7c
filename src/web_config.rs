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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
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

/// Checks a password against a bcrypt hash; replaceable in tests to count or pace the hashing.
type Verifier = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// How long a request whose credentials are not cached waits for a hashing slot before it is
/// answered 503.
///
/// Waiting (rather than refusing at once) lets a few legitimate first verifications that
/// arrive together (two Prometheus replicas, a human with curl) queue behind each other: at
/// htpasswd's default cost one bcrypt takes 50–100 ms, so a second is room for a handful. Under
/// a flood of wrong passwords the queue never drains, and refusing after a bounded wait keeps
/// every request (and so every connection slot) short-lived. Scrapes whose credentials were
/// verified once never wait here: they are answered from the cache.
pub const HASH_WAIT: Duration = Duration::from_secs(1);

/// Result of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Proceed.
    Allowed,
    /// Missing or wrong credentials: 401.
    Denied,
    /// Not cached, and every hashing slot stayed busy for [`HASH_WAIT`]: 503, try again.
    Busy,
}

/// The web endpoints' protection.
pub struct WebConfig {
    /// Serve HTTPS with this acceptor.
    pub tls: Option<TlsAcceptor>,
    users: BTreeMap<String, String>,
    /// Verified for user names that are not configured, so that an unknown user costs one
    /// bcrypt like a wrong password does and user names cannot be told apart by response time
    /// (exporter-toolkit does the same). Same cost as the most expensive configured hash; its
    /// password is random and thrown away. Empty when there are no users.
    decoy: String,
    /// Credentials already checked: bcrypt is deliberately slow (tens of ms), and Prometheus
    /// sends the same ones every scrape. Holds SHA-256 digests, never the passwords. Its lock
    /// is only ever held for a lookup or an insert, never across hashing. Only successes are
    /// cached, so it holds at most one entry per configured user and hash.
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
    /// Bounds concurrent bcrypt verifications; see [`hashing_slots`].
    hashing: Arc<Semaphore>,
    verify: Verifier,
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

/// How many bcrypt verifications may run at once: half the cores, at least one.
///
/// Legitimate hashing is rare (once per credential and process lifetime; later scrapes hit the
/// cache), so throughput is not needed. What matters is that a flood of wrong passwords can
/// never occupy every core: the probes, whose timestamps are the product, and the cached
/// `/metrics` path keep at least half the machine.
pub fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl WebConfig {
    /// No TLS, no authentication: the default without `--web.config.file`.
    pub fn unprotected() -> WebConfig {
        WebConfig::new(None, BTreeMap::new(), hashing_slots())
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
        Ok(WebConfig::new(tls, raw.basic_auth_users, hashing_slots()))
    }

    /// `users` must hold valid bcrypt hashes (checked by [`WebConfig::load`]).
    fn new(tls: Option<TlsAcceptor>, users: BTreeMap<String, String>, slots: usize) -> WebConfig {
        let decoy = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|h| h.get_cost())
            .max()
            .map(|cost| {
                let password = STANDARD.encode(rand::random::<[u8; 24]>());
                bcrypt::hash(password, cost).expect("a cost read from a valid hash is valid")
            })
            .unwrap_or_default();
        WebConfig {
            tls,
            users,
            decoy,
            verified: Arc::default(),
            hashing: Arc::new(Semaphore::new(slots)),
            verify: Arc::new(|password, hash| bcrypt::verify(password, hash).unwrap_or(false)),
        }
    }

    /// Whether requests must carry credentials at all.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether a request with this `Authorization` header may proceed.
    ///
    /// Cached credentials are answered at once, on the calling task. Anything else costs one
    /// bcrypt (against the decoy for unknown users), run on the blocking pool once one of the
    /// bounded hashing slots is free; the slot is held until the hash is done, even if the
    /// request is abandoned meanwhile.
    pub async fn authorize(&self, authorization: Option<&[u8]>) -> Verdict {
        if !self.requires_auth() {
            return Verdict::Allowed;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Denied;
        };
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.decoy).clone();
        let digest: [u8; 32] = Sha256::digest(format!("{user}\0{password}\0{hash}")).into();
        if lock(&self.verified).contains(&digest) {
            return Verdict::Allowed;
        }
        let permit = match tokio::time::timeout(
            HASH_WAIT,
            Arc::clone(&self.hashing).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => return Verdict::Busy,
        };
        let (verify, verified) = (Arc::clone(&self.verify), Arc::clone(&self.verified));
        let cacheable = known.is_some();
        // The result is cached from the blocking task itself: a client that gave up meanwhile
        // (a scrape timeout shorter than a costly hash) still finds it verified next time.
        let allowed = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let allowed = verify(&password, &hash) && cacheable;
            if allowed {
                lock(&verified).insert(digest);
            }
            allowed
        })
        .await
        .unwrap_or(false);
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

fn lock(cache: &Mutex<HashSet<[u8; 32]>>) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
    cache.lock().unwrap_or_else(|p| p.into_inner())
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

    impl WebConfig {
        /// Replaces bcrypt by `verify` (which may count, pace or call bcrypt itself).
        fn with_verifier(
            mut self,
            verify: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
        ) -> Self {
            self.verify = Arc::new(verify);
            self
        }
    }

    /// `prometheus:s3cret` at cost 4 and `grafana:other` at cost 5, with `slots` hashing slots.
    fn two_users(slots: usize) -> WebConfig {
        let users = BTreeMap::from([
            ("prometheus".to_string(), bcrypt::hash("s3cret", 4).unwrap()),
            ("grafana".to_string(), bcrypt::hash("other", 5).unwrap()),
        ]);
        WebConfig::new(None, users, slots)
    }

    /// Calls of the verifier, with the hash each was given.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<String>>>);

    impl Calls {
        /// A verifier that records its call and then runs bcrypt.
        fn bcrypt(&self) -> impl Fn(&str, &str) -> bool + Send + Sync + 'static {
            let calls = self.clone();
            move |password, hash| {
                calls.0.lock().unwrap().push(hash.to_string());
                bcrypt::verify(password, hash).unwrap_or(false)
            }
        }

        fn hashes(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_hashes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let web = config(&format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
        assert!(web.tls.is_none());
        let ask = |header: Option<Vec<u8>>| {
            let web = &web;
            async move { web.authorize(header.as_deref()).await }
        };
        assert_eq!(
            ask(Some(basic("prometheus", "s3cret"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            ask(Some(basic("prometheus", "s3cret"))).await,
            Verdict::Allowed,
            "cached"
        );
        assert_eq!(
            ask(Some(basic("prometheus", "wrong"))).await,
            Verdict::Denied
        );
        assert_eq!(ask(Some(basic("someone", "s3cret"))).await, Verdict::Denied);
        assert_eq!(ask(None).await, Verdict::Denied);
        assert_eq!(ask(Some(b"Bearer abc".to_vec())).await, Verdict::Denied);
        assert_eq!(ask(Some(b"Basic !!!".to_vec())).await, Verdict::Denied);
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_hash_of_the_configured_cost() {
        let calls = Calls::default();
        let web = two_users(2).with_verifier(calls.bcrypt());
        let verdict = web.authorize(Some(&basic("intruder", "s3cret"))).await;
        assert_eq!(verdict, Verdict::Denied);
        let hashes = calls.hashes();
        assert_eq!(
            hashes.len(),
            1,
            "an unknown user is hashed like a wrong password"
        );
        let decoy: bcrypt::HashParts = hashes[0].parse().unwrap();
        assert_eq!(
            decoy.get_cost(),
            5,
            "the decoy costs as much as the dearest real hash"
        );
        assert!(
            !web.users.values().any(|h| *h == hashes[0]),
            "not a user's hash"
        );

        let verdict = web.authorize(Some(&basic("prometheus", "wrong"))).await;
        assert_eq!(verdict, Verdict::Denied);
        assert_eq!(calls.hashes().len(), 2);
    }

    #[tokio::test]
    async fn a_cached_credential_is_not_hashed_again() {
        let calls = Calls::default();
        let web = two_users(2).with_verifier(calls.bcrypt());
        for _ in 0..3 {
            let verdict = web.authorize(Some(&basic("prometheus", "s3cret"))).await;
            assert_eq!(verdict, Verdict::Allowed);
        }
        assert_eq!(calls.hashes().len(), 1);
        // Wrong passwords are not cached: each one is hashed.
        for _ in 0..2 {
            let verdict = web.authorize(Some(&basic("prometheus", "wrong"))).await;
            assert_eq!(verdict, Verdict::Denied);
        }
        assert_eq!(calls.hashes().len(), 3);
    }

    #[tokio::test]
    async fn a_verification_abandoned_by_its_client_is_still_cached() {
        let calls = Calls::default();
        let slow = calls.bcrypt();
        let web = two_users(1).with_verifier(move |password, hash| {
            std::thread::sleep(Duration::from_millis(300));
            slow(password, hash)
        });
        let right = basic("prometheus", "s3cret");
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), web.authorize(Some(&right))).await;
        assert!(gave_up.is_err(), "the client timed out first");
        // The slot is free again once the abandoned hash is done.
        while web.hashing.available_permits() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(web.authorize(Some(&right)).await, Verdict::Allowed);
        assert_eq!(calls.hashes().len(), 1, "the abandoned result was kept");
    }

    #[tokio::test]
    async fn a_cached_credential_passes_while_every_slot_is_hashing() {
        let web = Arc::new(two_users(1));
        let verdict = web.authorize(Some(&basic("prometheus", "s3cret"))).await;
        assert_eq!(verdict, Verdict::Allowed);
        // From now on every hash blocks until released: a flood that occupies the only slot.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let (entering, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let web = Arc::new(Arc::into_inner(web).unwrap().with_verifier(move |_, _| {
            let _ = entering.send(());
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
            false
        }));
        let flood = {
            let web = Arc::clone(&web);
            tokio::spawn(async move { web.authorize(Some(&basic("prometheus", "wrong"))).await })
        };
        let hashing = tokio::time::timeout(Duration::from_secs(5), entered.recv()).await;
        assert_eq!(hashing, Ok(Some(())), "the flood's hash started");
        assert_eq!(web.hashing.available_permits(), 0, "it holds the only slot");
        let cached = tokio::time::timeout(
            Duration::from_secs(2),
            web.authorize(Some(&basic("prometheus", "s3cret"))),
        )
        .await;
        assert_eq!(cached, Ok(Verdict::Allowed), "not held up by the hashing");
        // A credential that needs hashing waits HASH_WAIT for the slot, then gives up.
        let verdict = web.authorize(Some(&basic("grafana", "other"))).await;
        assert_eq!(verdict, Verdict::Busy);
        release.send(()).unwrap();
        assert_eq!(flood.await.unwrap(), Verdict::Denied);
    }

    /// A verifier that notes how many run at once; each call waits until `wanted` are running
    /// together (or `patience` passed), so overlap shows whenever it is possible.
    #[derive(Clone, Default)]
    struct Overlap(Arc<(Mutex<(usize, usize)>, std::sync::Condvar)>);

    impl Overlap {
        fn verifier(
            &self,
            wanted: usize,
            patience: Duration,
        ) -> impl Fn(&str, &str) -> bool + Send + Sync + 'static {
            let this = self.clone();
            move |_, _| {
                let (lock, changed) = &*this.0;
                let mut state = lock.lock().unwrap();
                state.0 += 1;
                state.1 = state.1.max(state.0);
                changed.notify_all();
                let (mut state, _) = changed
                    .wait_timeout_while(state, patience, |s| s.1 < wanted)
                    .unwrap();
                // Stay a moment so that a slot bound that is not kept would show.
                drop(state);
                std::thread::sleep(Duration::from_millis(20));
                state = lock.lock().unwrap();
                state.0 -= 1;
                false
            }
        }

        fn max(&self) -> usize {
            self.0.0.lock().unwrap().1
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_run_concurrently_without_the_cache_lock() {
        let overlap = Overlap::default();
        let web = two_users(2).with_verifier(overlap.verifier(2, Duration::from_secs(5)));
        let (one, two) = (basic("prometheus", "wrong-1"), basic("grafana", "wrong-2"));
        let (a, b) = tokio::join!(web.authorize(Some(&one)), web.authorize(Some(&two)));
        assert_eq!((a, b), (Verdict::Denied, Verdict::Denied));
        assert_eq!(overlap.max(), 2, "the two hashes overlapped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_hashes_run_at_once_than_there_are_slots() {
        let overlap = Overlap::default();
        let web = two_users(2).with_verifier(overlap.verifier(3, Duration::from_millis(300)));
        let attempts = (0..8).map(|n| basic("prometheus", &format!("wrong-{n}")));
        let attempts: Vec<Vec<u8>> = attempts.collect();
        let verdicts =
            futures::future::join_all(attempts.iter().map(|a| web.authorize(Some(a)))).await;
        // Each hash waits 300 ms for a third to join; within HASH_WAIT some of the eight get
        // their turn, and they were never more than two at a time.
        assert!(verdicts.contains(&Verdict::Denied), "{verdicts:?}");
        assert_eq!(overlap.max(), 2, "{verdicts:?}");
    }

    #[tokio::test]
    async fn no_users_means_no_authentication() {
        let web = config("{}\n").unwrap();
        assert_eq!(web.authorize(None).await, Verdict::Allowed);
        assert_eq!(
            WebConfig::unprotected().authorize(None).await,
            Verdict::Allowed
        );
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
