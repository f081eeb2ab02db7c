//! What the user wrote in `probes.toml`, with positions, before any meaning is applied.
//!
//! Every field is optional here so that `[defaults]` can hold any probe key and a missing key
//! is reported by validation with the probe's position, not by serde without one.

use std::collections::BTreeMap;

use serde::Deserialize;
pub use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub agent: Option<RawAgent>,
    pub defaults: Option<RawDefaults>,
    #[serde(default)]
    pub probe: Vec<Spanned<RawProbe>>,
    #[serde(default)]
    pub class: BTreeMap<String, Spanned<RawClass>>,
}

/// `[class.NAME]`: a custom class.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    pub template: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub subject: Option<Spanned<String>>,
    pub size: Option<Spanned<RawSize>>,
    pub lost_after: Option<Spanned<String>>,
}

/// A size: `"2MiB"` or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `[agent]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub id: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub forget_after: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<String>>,
    pub secret_env: Option<Spanned<String>>,
}

/// `[defaults]`: any probe key except the ones that identify a probe.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub interval: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub lost_after: Option<Spanned<String>>,
    pub late_after: Option<Spanned<String>>,
    pub classes: Option<Spanned<Vec<String>>>,
    pub smtp: Option<RawEndpoint>,
    pub mailbox: Option<RawMailbox>,
    pub bounces: Option<RawMailbox>,
}

/// One `[[probe]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub name: Option<Spanned<String>>,
    pub from: Option<Spanned<String>>,
    pub to: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub lost_after: Option<Spanned<String>>,
    pub late_after: Option<Spanned<String>>,
    pub classes: Option<Spanned<Vec<String>>>,
    pub smtp: Option<RawEndpoint>,
    pub mailbox: Option<RawMailbox>,
    pub bounces: Option<RawMailbox>,
}

/// Connection keys shared by `[probe.smtp]` and `[probe.mailbox]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub tls: Option<Spanned<String>>,
    pub tls_verify: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub mechanism: Option<Spanned<String>>,
    pub oauth2: Option<Spanned<RawOAuth2>>,
    pub token_command: Option<Spanned<Vec<String>>>,
}

/// `oauth2 = { … }`: where an endpoint's access tokens come from.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    pub token_url: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret_env: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<String>>,
    pub scope: Option<Spanned<String>>,
    pub grant: Option<Spanned<String>>,
    pub refresh_token_file: Option<Spanned<String>>,
}

/// `[probe.mailbox]`: the endpoint keys plus the receiver's own.
///
/// The endpoint keys are repeated rather than `#[serde(flatten)]`ed because serde cannot combine
/// `flatten` with `deny_unknown_fields`, and rejecting unknown keys matters more.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailbox {
    pub protocol: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub tls: Option<Spanned<String>>,
    pub tls_verify: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub mechanism: Option<Spanned<String>>,
    pub oauth2: Option<Spanned<RawOAuth2>>,
    pub token_command: Option<Spanned<Vec<String>>>,
    pub folders: Option<Spanned<Vec<String>>>,
    pub watch: Option<Spanned<String>>,
    pub poll_interval: Option<Spanned<String>>,
    pub cleanup: Option<Spanned<String>>,
    pub forged: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub trusted_authserv_ids: Option<Spanned<Vec<String>>>,
}

/// Fills every unset field of `$probe` from `$defaults`.
macro_rules! inherit {
    ($probe:expr, $defaults:expr, $($field:ident),+) => {
        $( if $probe.$field.is_none() { $probe.$field = $defaults.$field.clone(); } )+
    };
}

/// Fills every login key of `$probe` from `$defaults` (only done when the probe names none).
macro_rules! inherit_login {
    ($probe:expr, $defaults:expr) => {
        inherit!(
            $probe,
            $defaults,
            password,
            password_env,
            password_file,
            mechanism,
            oauth2,
            token_command
        )
    };
}

impl RawEndpoint {
    /// Whether any key that says how to log in is set (a password or a token source).
    pub fn names_a_login_source(&self) -> bool {
        self.password.is_some()
            || self.password_env.is_some()
            || self.password_file.is_some()
            || self.oauth2.is_some()
            || self.token_command.is_some()
    }

    fn inherit(mut self, d: &RawEndpoint) -> RawEndpoint {
        inherit!(
            self, d, host, port, tls, tls_verify, ca_file, timeout, username
        );
        // A probe that names any login source (a password or a token source) replaces the
        // default's, mechanism included, rather than ending up with two sources.
        if !self.names_a_login_source() {
            inherit_login!(self, d);
        }
        self
    }
}

impl RawMailbox {
    fn inherit(mut self, d: &RawMailbox) -> RawMailbox {
        inherit!(
            self, d, protocol, host, port, tls, tls_verify, ca_file, timeout, username
        );
        inherit!(
            self,
            d,
            folders,
            watch,
            poll_interval,
            cleanup,
            forged,
            path,
            trusted_authserv_ids
        );
        if !self.endpoint().names_a_login_source() {
            inherit_login!(self, d);
        }
        self
    }

    /// The connection keys, in the shape shared with SMTP.
    pub fn endpoint(&self) -> RawEndpoint {
        RawEndpoint {
            host: self.host.clone(),
            port: self.port.clone(),
            tls: self.tls.clone(),
            tls_verify: self.tls_verify.clone(),
            ca_file: self.ca_file.clone(),
            timeout: self.timeout.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            password_env: self.password_env.clone(),
            password_file: self.password_file.clone(),
            mechanism: self.mechanism.clone(),
            oauth2: self.oauth2.clone(),
            token_command: self.token_command.clone(),
        }
    }
}

impl RawProbe {
    /// This probe with every key it leaves unset taken from `[defaults]`.
    pub fn with_defaults(mut self, d: &RawDefaults) -> RawProbe {
        inherit!(self, d, interval, jitter, lost_after, late_after, classes);
        self.smtp = match (self.smtp, &d.smtp) {
            (Some(p), Some(d)) => Some(p.inherit(d)),
            (p, d) => p.or_else(|| d.clone()),
        };
        self.mailbox = match (self.mailbox, &d.mailbox) {
            (Some(p), Some(d)) => Some(p.inherit(d)),
            (p, d) => p.or_else(|| d.clone()),
        };
        self.bounces = match (self.bounces, &d.bounces) {
            (Some(p), Some(d)) => Some(p.inherit(d)),
            (p, d) => p.or_else(|| d.clone()),
        };
        self
    }
}
