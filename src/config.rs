//! `probes.toml` → typed, validated configuration.
//!
//! Two layers, as ripgrep does with its arguments: `raw` mirrors exactly what the user wrote
//! (with source positions, unknown keys rejected), and this module turns it into what it means
//! (defaults applied, durations parsed, secrets resolved). Every error names `file:line:column`
//! and the key, because the person reading it is editing that file.

mod classes;
mod context;
mod login;
mod mailbox;
mod raw;
mod secret;
mod validate;

pub use classes::{SizeError, parse_size};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use login::{Grant, Login, OAuth2Source, SaslMechanism, TokenSource};
pub use secret::{KeyError, Secret, load_signing_key};

use crate::class::ClassSpec;
use context::Context;
use raw::RawConfig;

/// A byte range in the config text.
type Span = std::ops::Range<usize>;

/// A configuration error, pointing at the place in the file that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place.
    pub position: Option<(usize, usize)>,
    /// Dotted key path (`probe[0].smtp.port`), when known.
    pub key: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Agent-wide settings.
    pub agent: AgentConfig,
    /// Every probe, in file order.
    pub probes: Vec<ProbeConfig>,
    /// Things that work but deserve a word in the log (e.g. a literal password).
    pub warnings: Vec<String>,
}

/// `[agent]`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Goes into every canary; defaults to the host name.
    pub id: String,
    /// Durable store of in-flight canaries and counters.
    pub state_dir: PathBuf,
    /// How long lost and delivered canaries are remembered, to recognise late arrivals and
    /// duplicates.
    pub forget_after: Duration,
    /// Where the HMAC signing key comes from.
    pub secret: SecretSource,
}

/// Where the canary signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, created with mode 0600 when missing.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// One `[[probe]]`: a mail path from an SMTP account to a mailbox.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Label value, `[a-z0-9_-]+`.
    pub name: String,
    /// Sender address (header and envelope).
    pub from: String,
    /// Recipient address (header and envelope).
    pub to: String,
    /// How often a canary of every class is sent.
    pub interval: Duration,
    /// Longest random pause between two classes of one round, so they do not arrive as a burst.
    pub jitter: Duration,
    /// After this long a canary is counted lost.
    pub lost_after: Duration,
    /// After this long in flight a canary makes its class `late` on the status page and in
    /// `/api/status` (default 15 min, the `MailDeliveryDelayed` alert's threshold).
    pub late_after: Duration,
    /// Classes sent each interval.
    pub classes: Vec<ClassConfig>,
    /// Submission side.
    pub smtp: SmtpConfig,
    /// Receiving side.
    pub mailbox: MailboxConfig,
    /// Where bounces of this probe's canaries come back (`[probe.bounces]`, usually the
    /// sending account's own mailbox), if watched.
    pub bounces: Option<MailboxConfig>,
    /// The receiving side's names (`trusted_authserv_ids` in `[probe.mailbox]`): only what
    /// they wrote into a delivered canary (`Authentication-Results`, spam verdicts) counts.
    /// Empty: nothing is read.
    pub trusted_authserv_ids: Vec<String>,
}

impl ProbeConfig {
    /// The mailboxes this probe watches: its receiving mailbox, then its bounce mailbox.
    pub fn watched(&self) -> impl Iterator<Item = &MailboxConfig> {
        std::iter::once(&self.mailbox).chain(&self.bounces)
    }
}

/// A class a probe sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// What its messages look like.
    pub spec: ClassSpec,
    /// Overrides the probe's `lost_after` for this class.
    pub lost_after: Option<Duration>,
}

impl ClassConfig {
    /// The class name, its label value.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text, then `STARTTLS` (required: a server that does not offer it is a failure).
    StartTls,
    /// TLS from the first byte.
    Tls,
    /// No TLS at all.
    None,
}

/// A server to connect to, and how.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or address; also the name the certificate must carry.
    pub host: String,
    /// TCP port; defaults follow `tls` (587/465/25, 993/143, 995/110).
    pub port: u16,
    /// Implicit TLS, STARTTLS (required, never opportunistic) or none.
    pub tls: TlsMode,
    /// Verify the server certificate (default true; off only when written explicitly).
    pub tls_verify: bool,
    /// Extra trust root in PEM.
    pub ca_file: Option<PathBuf>,
    /// Bound on connecting and on every command.
    pub timeout: Duration,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A login. Passwords and token sources' secrets are [`Secret`]s, so no `Debug` or log line
/// can show them.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Login name, often the full address (with a token: the mailbox the token may use).
    pub username: String,
    /// A password or a token source.
    pub login: Login,
}

/// `[probe.smtp]`.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Where to submit.
    pub endpoint: Endpoint,
    /// AUTH, when a username is configured.
    pub credentials: Option<Credentials>,
}

impl ProbeConfig {
    /// After how long a canary of `class` counts as lost: the class's own `lost_after`, else
    /// the probe's.
    pub fn lost_after_for(&self, class: &str) -> Duration {
        self.classes
            .iter()
            .find(|c| c.name() == class)
            .and_then(|c| c.lost_after)
            .unwrap_or(self.lost_after)
    }
}

/// `[probe.mailbox]`.
#[derive(Debug, Clone)]
pub enum MailboxConfig {
    /// An IMAP account.
    Imap(ImapConfig),
    /// A POP3 account.
    Pop3(Pop3Config),
    /// A Maildir on this host.
    Maildir(MaildirConfig),
}

impl MailboxConfig {
    /// Protocol name, as in the `protocol` label.
    pub fn protocol(&self) -> &'static str {
        match self {
            MailboxConfig::Imap(_) => "imap",
            MailboxConfig::Pop3(_) => "pop3",
            MailboxConfig::Maildir(_) => "maildir",
        }
    }

    /// Folders watched, the expected one first.
    pub fn folders(&self) -> &[String] {
        match self {
            MailboxConfig::Imap(imap) => &imap.folders,
            MailboxConfig::Pop3(_) => std::slice::from_ref(&*INBOX),
            MailboxConfig::Maildir(m) => &m.folders,
        }
    }

    /// Which mailbox this is: protocol, server, login name and folders (for IMAP without
    /// `folders`: INBOX and `\Junk`, whatever the server calls it); for a Maildir its
    /// path and folders. Probes with the same identity (and password, see
    /// [`share_key`](MailboxConfig::share_key)) share one connection and one watcher, which
    /// hands each canary to the probe it names.
    pub fn identity(&self) -> String {
        let folders = self.folders().join("\u{0}");
        match self {
            MailboxConfig::Imap(imap) => format!(
                "imap\u{0}{}\u{0}{}\u{0}{}\u{0}{folders}{}",
                imap.endpoint.host,
                imap.endpoint.port,
                imap.credentials.username,
                if imap.find_junk { "\u{0}\\Junk" } else { "" }
            ),
            MailboxConfig::Pop3(pop3) => format!(
                "pop3\u{0}{}\u{0}{}\u{0}{}\u{0}{folders}",
                pop3.endpoint.host, pop3.endpoint.port, pop3.credentials.username
            ),
            MailboxConfig::Maildir(m) => format!("maildir\u{0}{}\u{0}{folders}", m.path.display()),
        }
    }

    /// What decides whether probes share one watcher: the mailbox's [`identity`] and the
    /// password. Probes that log in to one account with different passwords (one of them
    /// wrong) each keep their own connection, so each reports its own login.
    ///
    /// [`identity`]: MailboxConfig::identity
    pub fn share_key(&self) -> (String, Option<String>) {
        let login = match self {
            MailboxConfig::Imap(i) => Some(i.credentials.login.fingerprint()),
            MailboxConfig::Pop3(p) => Some(p.credentials.login.fingerprint()),
            MailboxConfig::Maildir(_) => None,
        };
        (self.identity(), login)
    }

    /// Everything but the [`share_key`](MailboxConfig::share_key) that changes how a mailbox
    /// is watched or cleaned: probes sharing a mailbox must agree on it.
    pub(crate) fn sharing_settings(&self) -> String {
        let endpoint = |e: &Endpoint| {
            format!(
                "tls {:?}, tls_verify {}, ca_file {:?}, timeout {:?}",
                e.tls, e.tls_verify, e.ca_file, e.timeout
            )
        };
        match self {
            MailboxConfig::Imap(i) => format!(
                "{}, watch {:?}, poll_interval {:?}, cleanup {:?}, forged {:?}",
                endpoint(&i.endpoint),
                i.watch,
                i.poll_interval,
                i.cleanup,
                i.forged
            ),
            MailboxConfig::Pop3(p) => format!(
                "{}, poll_interval {:?}, cleanup {:?}",
                endpoint(&p.endpoint),
                p.poll_interval,
                p.cleanup
            ),
            MailboxConfig::Maildir(m) => format!(
                "poll_interval {:?}, cleanup {:?}, forged {:?}",
                m.poll_interval, m.cleanup, m.forged
            ),
        }
    }

    /// Where the mailbox is, for messages: `host:port` or the Maildir path.
    pub fn location(&self) -> String {
        match self {
            MailboxConfig::Imap(imap) => imap.endpoint.to_string(),
            MailboxConfig::Pop3(pop3) => pop3.endpoint.to_string(),
            MailboxConfig::Maildir(m) => m.path.display().to_string(),
        }
    }
}

static INBOX: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| "INBOX".to_string());

/// How an IMAP mailbox learns of new mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// IMAP IDLE on the first folder (the others are polled); polling if the server lacks IDLE.
    Idle,
    /// Search every folder each `poll_interval`.
    Poll,
}

/// An IMAP mailbox.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// Where the server is; its `timeout` bounds every command, since IMAP servers can fall
    /// silent mid-session and async-imap itself has no timeouts.
    pub endpoint: Endpoint,
    /// IMAP always logs in: there is no anonymous mailbox to watch.
    pub credentials: Credentials,
    /// Folders searched; the first is where inbox placement is expected.
    pub folders: Vec<String>,
    /// `folders` was not set: INBOX is read, and so is the folder the server marks `\Junk`
    /// (RFC 6154), found after login.
    pub find_junk: bool,
    /// IDLE or poll.
    pub watch: Watch,
    /// How often the folders are searched (with IDLE: the folders IDLE does not cover).
    pub poll_interval: Duration,
    /// What happens to a delivered canary.
    pub cleanup: Cleanup,
    /// Where mail that claims to be this probe's canary but fails verification goes
    /// (`forged = "move:FOLDER"`); `None` leaves it in place (`forged = "keep"`, the default).
    pub forged: Option<String>,
}

/// A POP3 mailbox.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Where the server is; its `timeout` bounds every command and reply.
    pub endpoint: Endpoint,
    /// USER/PASS after STLS or on implicit TLS (plaintext only with `tls = "none"`).
    pub credentials: Credentials,
    /// How often the mailbox is listed.
    pub poll_interval: Duration,
    /// `Delete` or `Keep` (POP3 has no folders to move to).
    pub cleanup: Cleanup,
}

/// A Maildir on this host.
#[derive(Debug, Clone)]
pub struct MaildirConfig {
    /// The Maildir (holding new/, cur/ and `.Folder` subdirectories).
    pub path: PathBuf,
    /// Folders watched: `INBOX` is the Maildir itself, others its `.NAME` subfolders.
    pub folders: Vec<String>,
    /// Rescan interval, the safety net behind inotify.
    pub poll_interval: Duration,
    /// What happens to a delivered canary.
    pub cleanup: Cleanup,
    /// Where mail that claims to be this probe's canary but fails verification goes
    /// (`forged = "move:FOLDER"`); `None` leaves it in place (`forged = "keep"`, the default).
    pub forged: Option<String>,
}

/// What happens to a verified canary after it was counted. Never applies to other mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Delete (flag and expunge by UID).
    Delete,
    /// Move to the named folder.
    Move(String),
    /// Leave it in place.
    Keep,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(2 * 3600);
const DEFAULT_LATE_AFTER: Duration = Duration::from_secs(15 * 60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(10);
const DEFAULT_JITTER: Duration = Duration::from_secs(3);
const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::parse(path, &text)
    }

    /// Validates config text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Context { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
        cx.build(raw)
    }
}

impl AgentConfig {
    /// Reads a config file for a command that only needs `[agent]` (`status`, run by an
    /// operator who holds none of the daemon's secrets). The whole file must still be valid TOML
    /// with known keys, so a typo gets the usual `file:line:column` error; the probes are not
    /// validated and no password is resolved.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = read(path)?;
        AgentConfig::parse(path, &text)
    }

    /// [`AgentConfig::load`] on config text.
    pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
        let cx = Context { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
        cx.agent(raw.agent.unwrap_or_default())
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        position: None,
        key: None,
        message: format!("cannot read config: {e}"),
    })
}

#[cfg(test)]
mod tests;
