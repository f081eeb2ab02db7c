//! Receiving side: one adapter per protocol behind one small trait.
//!
//! Adapters translate, they do not decide. A mailbox reports every mail that carries a canary
//! header, with the raw header value, and removes exactly the mails the probe hands back; whether
//! a mail is a valid canary of ours is decided by the probe, with the signing key, in one place.

pub mod imap;
pub mod maildir;
pub mod pop3;
pub(crate) mod tls;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::MailboxConfig;
use crate::setup::SetupError;

/// Identifies one mail in a mailbox across calls: the folder plus an adapter-defined key
/// (IMAP: `UIDVALIDITY.UID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailId {
    /// Folder the mail is in.
    pub folder: String,
    /// Adapter-defined, stable key within the folder.
    pub key: String,
}

impl fmt::Display for MailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.folder, self.key)
    }
}

/// How much of a body the adapters read: the window of a stripped canary's body token
/// ([`crate::canary::BODY_TOKEN_WINDOW`]) and, for a bounce, its report and the returned
/// message's headers, which follow the bounce's own explanation.
pub const BODY_WINDOW: usize = 16 * 1024;

/// A step of a look at a mailbox, as `mailcanary_mailbox_step_duration_seconds` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// TCP connection.
    Connect,
    /// TLS handshake (implicit, or after STARTTLS/STLS).
    Tls,
    /// The server's greeting.
    Greeting,
    /// Logging in (a token's fetch is not in it).
    Login,
    /// Finding and reading what is new.
    Scan,
    /// Removing or moving what was counted.
    Cleanup,
}

impl Step {
    /// Every step, in the order a look takes them.
    pub const ALL: [Step; 6] = [
        Step::Connect,
        Step::Tls,
        Step::Greeting,
        Step::Login,
        Step::Scan,
        Step::Cleanup,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Greeting => "greeting",
            Step::Login => "login",
            Step::Scan => "scan",
            Step::Cleanup => "cleanup",
        }
    }
}

/// The last measured duration of each [`Step`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Steps([Option<std::time::Duration>; 6]);

impl Steps {
    /// Notes that `step` took `took`.
    pub fn record(&mut self, step: Step, took: std::time::Duration) {
        self.0[step as usize] = Some(took);
    }

    /// Times `work` as `step`.
    pub async fn time<T>(&mut self, step: Step, work: impl std::future::Future<Output = T>) -> T {
        let start = tokio::time::Instant::now();
        let out = work.await;
        self.record(step, start.elapsed());
        out
    }

    /// The last duration of `step`, if it was measured.
    pub fn get(&self, step: Step) -> Option<std::time::Duration> {
        self.0[step as usize]
    }

    /// Takes over what `newer` measured.
    pub fn update(&mut self, newer: &Steps) {
        for (mine, theirs) in self.0.iter_mut().zip(newer.0) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }
}

/// How a mail says it is a canary: what the probe will parse and verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// The unfolded value of its `X-Mailcanary` header.
    Header(String),
    /// No canary header (a gateway stripped it): the signed token line from the start of the
    /// body, which carries the same fields and signature.
    BodyToken(String),
    /// A bounce (delivery status notification) about the canary whose mark it returns.
    Bounce(Box<crate::bounce::Report>),
}

impl Mark {
    /// The signed value, not yet verified.
    pub fn value(&self) -> &str {
        match self {
            Mark::Header(v) | Mark::BodyToken(v) => v,
            Mark::Bounce(report) => &report.canary,
        }
    }

    /// Whether the header was missing, so the mail was recognised by its body only.
    pub fn header_stripped(&self) -> bool {
        matches!(self, Mark::BodyToken(_))
    }

    /// The report, for a bounce.
    pub fn bounce(&self) -> Option<&crate::bounce::Report> {
        match self {
            Mark::Bounce(report) => Some(report),
            _ => None,
        }
    }

    /// The mark of a mail from its head (`X-Mailcanary`) or, failing that, the start of its
    /// body; `None` for mail that carries neither (not a canary). A bounce is recognised first:
    /// it quotes the canary it is about, which must not read as that canary's delivery.
    pub fn find(head: &[u8], body_start: &[u8]) -> Option<Mark> {
        if let Some(report) = crate::bounce::read(head, body_start) {
            return Some(Mark::Bounce(Box::new(report)));
        }
        crate::canary::find_header(head)
            .map(Mark::Header)
            .or_else(|| crate::canary::find_body_token(body_start).map(Mark::BodyToken))
    }
}

/// A mail that carries a canary mark, as found.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Where it is.
    pub id: MailId,
    /// The canary header, or the body token where the header was stripped.
    pub mark: Mark,
    /// Raw header fields holding at least every `Received:` line (or the whole head), for the
    /// per-hop breakdown.
    pub head: Vec<u8>,
    /// Unix ms at which the agent saw it.
    pub seen_ms: u64,
    /// The receiving server's own timestamp (IMAP INTERNALDATE), Unix ms; `None` where the
    /// protocol has none and the newest `Received:` date stands in.
    pub server_ms: Option<u64>,
}

/// What one look found.
#[derive(Debug, Default)]
pub struct Look {
    /// Mails carrying a canary mark that the adapter had not reported before.
    pub arrivals: Vec<Arrival>,
    /// Mails this look could not read or parse (too large, cut off, refused by the server):
    /// each is skipped for good, left untouched and counted once, never a reason to fail the
    /// look.
    pub skipped: u64,
}

pub use crate::stage::MailboxStage;

/// A failed mailbox operation. The adapter has dropped its connection; the next call reconnects.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {message}", stage = .stage.as_str())]
pub struct MailboxError {
    /// The step that failed.
    pub stage: MailboxStage,
    /// What went wrong.
    pub message: String,
}

impl MailboxError {
    /// An error at `stage`.
    pub fn new(stage: MailboxStage, message: impl Into<String>) -> MailboxError {
        MailboxError {
            stage,
            message: message.into(),
        }
    }
}

/// A receiving mailbox.
#[async_trait]
pub trait Mailbox: Send {
    /// Protocol name, the `protocol` label.
    fn protocol(&self) -> &'static str;

    /// How long the steps of the last look took (`mailcanary_mailbox_step_duration_seconds`);
    /// a step the look did not take (no new connection) keeps its last value.
    fn steps(&self) -> Steps {
        Steps::default()
    }

    /// Connects if needed and returns the mails in the watched folders that carry a canary
    /// mark. Reads heads and at most [`crate::canary::BODY_TOKEN_WINDOW`] bytes of a body,
    /// bounded per mail and per look, so a hostile mail costs what its bound allows.
    async fn canaries(&mut self) -> Result<Look, MailboxError>;

    /// What the adapter remembers between looks so that mail it has looked at is not read
    /// again (IMAP: UIDVALIDITY and the highest UID per folder; POP3: the UIDLs judged).
    /// Opaque to the caller, which persists it after the look's arrivals are on the books and
    /// hands it back with [`Mailbox::restore_scan_memory`] after a restart. `None` when the
    /// adapter keeps nothing.
    fn scan_memory(&self) -> Option<String> {
        None
    }

    /// Continues from a memory [`Mailbox::scan_memory`] returned earlier (ignored if it does
    /// not parse: the adapter then starts over, which re-reads but never loses mail).
    fn restore_scan_memory(&mut self, _memory: &str) {}

    /// Applies the configured cleanup to these mails, and to nothing else.
    async fn clean_up(&mut self, mails: &[MailId]) -> Result<(), MailboxError>;

    /// How long verified canaries may wait to be removed together: a clean-up is a few round
    /// trips, worth sharing between the looks of a busy mailbox. Zero (the default): after
    /// every look.
    fn cleanup_batch(&self) -> Duration {
        Duration::ZERO
    }

    /// Moves these forged mails to the configured `forged = "move:FOLDER"`, if any; by
    /// default (and for adapters without folders) they stay where they are.
    async fn quarantine(&mut self, _mails: &[MailId]) -> Result<(), MailboxError> {
        Ok(())
    }

    /// Connects and logs in (and out), for `mailcanary check`.
    async fn check_login(&mut self) -> Result<(), MailboxError>;

    /// How long to wait between two looks when nothing announces news.
    fn poll_interval(&self) -> Duration;

    /// Waits until the mailbox may hold news, or `max` has passed. Adapters that can be told
    /// (IMAP IDLE, inotify) return as soon as they are; the default just waits.
    async fn wait_for_news(&mut self, max: Duration) -> Result<(), MailboxError> {
        tokio::time::sleep(max).await;
        Ok(())
    }

    /// Closes the connection politely, if one is open.
    async fn close(&mut self);

    /// Starts a new attempt's transcript: what was said before is forgotten unread (the
    /// success path keeps nothing).
    fn restart_transcript(&mut self) {}

    /// What was said since [`Mailbox::restart_transcript`], redacted and bounded
    /// ([`crate::transcript`]), for the record of a failure; a new attempt starts. Empty for
    /// an adapter without a protocol dialogue (Maildir).
    fn take_transcript(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Opens the adapter the config asks for. Connecting happens on first use.
pub fn open(config: &MailboxConfig) -> Result<Box<dyn Mailbox>, SetupError> {
    Ok(match config {
        MailboxConfig::Imap(c) => Box::new(imap::ImapMailbox::new(c.clone())?),
        MailboxConfig::Pop3(c) => Box::new(pop3::Pop3Mailbox::new(c.clone())?),
        MailboxConfig::Maildir(c) => Box::new(maildir::MaildirMailbox::new(c.clone())?),
    })
}
