//! Test doubles for the probe's loops: a mail server in memory that a scripted sender delivers
//! into and a scripted mailbox reads from, so the loops can be tested with paused time and no
//! network. Faults are queued per call (fail at a stage, panic, hang), as the real adapters'
//! fault tests do with a scripted TCP peer.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::canary::SigningKey;
use crate::clock;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::mailbox::{Arrival, Look, MailId, Mailbox, MailboxError, MailboxStage, Mark};
use crate::probe::Probe;
use crate::send::{Accepted, SendError, SendStage, Submit};
use crate::state::Store;
use crate::submissions::Submissions;

/// What one call to the fake mailbox or sender does instead of its normal work.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Fail at this mailbox stage.
    Mailbox(MailboxStage),
    /// Fail at this submission stage.
    Send(SendStage),
    /// Panic.
    Panic,
    /// Never answer.
    Hang,
    /// Answer after this long (sender: the mail is accepted by the server before the wait).
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    /// Mails in the box by key.
    mails: BTreeMap<u64, Vec<u8>>,
    next_key: u64,
    /// Faults for the next `canaries` / `wait_for_news` calls, in order.
    mailbox_faults: VecDeque<Fault>,
    /// Faults for the next `send` calls, in order.
    send_faults: VecDeque<Fault>,
    /// When each `canaries` call started (paused-time instants).
    looks: Vec<Instant>,
    /// Mails the server accepted.
    accepted: u64,
    /// Keys handed to `clean_up`.
    cleaned: Vec<String>,
    /// Calls of `clean_up` with something to remove.
    cleanups: usize,
    /// What the mailbox answers to `cleanup_batch` (default zero).
    cleanup_batch: Duration,
    /// Every message the server accepted, in order.
    messages: Vec<Vec<u8>>,
    /// The mailbox's poll interval (default 10 s).
    poll_interval: Option<Duration>,
    /// Deliver without the `X-Mailcanary` header, as a gateway that strips it would.
    strip_header: bool,
    /// Whether the mailbox has a scan memory (`upto KEY`, the last key looked at).
    remembers: bool,
    /// Memories handed to `restore_scan_memory`, in order.
    restored: Vec<String>,
    /// How long every submission takes (after the mail is taken), unless a fault says otherwise.
    send_takes: Duration,
    /// Submissions under way now, and the most there ever were at once.
    sending: usize,
    most_sending: usize,
    /// When each submission started (paused-time instants).
    sends: Vec<Instant>,
}

/// One mail server and mailbox in memory; cheap to clone, every clone is the same server.
#[derive(Clone, Default)]
pub struct FakeServer {
    inner: Arc<Mutex<Inner>>,
    news: Arc<Notify>,
}

impl FakeServer {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a mail in the box (as a delivery would) and wakes a waiting watcher.
    pub fn deliver(&self, message: &[u8]) {
        {
            let mut inner = self.lock();
            inner.next_key += 1;
            let key = inner.next_key;
            inner.mails.insert(key, message.to_vec());
        }
        self.news.notify_waiters();
    }

    /// Queues faults for the next mailbox calls.
    pub fn fail_mailbox(&self, faults: &[Fault]) {
        self.lock().mailbox_faults.extend(faults.iter().cloned());
    }

    /// Queues faults for the next submissions.
    pub fn fail_send(&self, faults: &[Fault]) {
        self.lock().send_faults.extend(faults.iter().cloned());
    }

    /// From now on, every submission takes `d` (after the server took the mail).
    pub fn set_send_time(&self, d: Duration) {
        self.lock().send_takes = d;
    }

    /// The most submissions that were ever under way at once.
    pub fn most_sending(&self) -> usize {
        self.lock().most_sending
    }

    /// When each submission started.
    pub fn sends(&self) -> Vec<Instant> {
        self.lock().sends.clone()
    }

    /// When each look started.
    pub fn looks(&self) -> Vec<Instant> {
        self.lock().looks.clone()
    }

    /// How many mails the server accepted.
    pub fn accepted(&self) -> u64 {
        self.lock().accepted
    }

    /// How many mails are in the box now.
    pub fn mail_count(&self) -> usize {
        self.lock().mails.len()
    }

    /// The `n`th message the server accepted (e.g. to deliver it again as a duplicate).
    pub fn message(&self, n: usize) -> Vec<u8> {
        self.lock().messages[n].clone()
    }

    /// From now on, delivers mail without its `X-Mailcanary` header.
    pub fn strip_canary_header(&self) {
        self.lock().strip_header = true;
    }

    /// Sets the mailbox's poll interval (the longest wait between looks).
    pub fn set_poll_interval(&self, every: Duration) {
        self.lock().poll_interval = Some(every);
    }

    /// From now on, mailboxes of this server have a scan memory, as the IMAP and POP3
    /// adapters do: `upto KEY`, the highest key the last look saw.
    pub fn remember_scans(&self) {
        self.lock().remembers = true;
    }

    /// Scan memories handed back to mailboxes of this server, in order.
    pub fn restored(&self) -> Vec<String> {
        self.lock().restored.clone()
    }

    /// Keys of the mails the watcher asked to clean up, in order.
    pub fn cleaned(&self) -> Vec<String> {
        self.lock().cleaned.clone()
    }

    /// How many clean-ups removed something.
    pub fn cleanups(&self) -> usize {
        self.lock().cleanups
    }

    /// Lets verified canaries wait up to `batch` to be removed together.
    pub fn batch_cleanups(&self, batch: Duration) {
        self.lock().cleanup_batch = batch;
    }

    /// A mailbox adapter reading this server.
    pub fn mailbox(&self) -> Box<dyn Mailbox> {
        Box::new(FakeMailbox {
            server: self.clone(),
        })
    }

    /// A sender delivering into this server.
    pub fn sender(&self) -> Box<dyn Submit> {
        Box::new(FakeSender {
            server: self.clone(),
        })
    }
}

async fn act(fault: Option<Fault>) -> Option<Fault> {
    match fault {
        Some(Fault::Panic) => panic!("scripted panic"),
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        other => other,
    }
}

struct FakeMailbox {
    server: FakeServer,
}

#[async_trait]
impl Mailbox for FakeMailbox {
    fn protocol(&self) -> &'static str {
        "imap"
    }

    async fn canaries(&mut self) -> Result<Look, MailboxError> {
        let fault = {
            let mut inner = self.server.lock();
            inner.looks.push(Instant::now());
            inner.mailbox_faults.pop_front()
        };
        if let Some(Fault::Mailbox(stage)) = act(fault).await {
            return Err(MailboxError::new(stage, "scripted failure"));
        }
        let inner = self.server.lock();
        let arrivals = inner
            .mails
            .iter()
            .filter_map(|(key, raw)| {
                let (head, body) = split_head(raw);
                Some(Arrival {
                    id: MailId {
                        folder: "INBOX".into(),
                        key: key.to_string(),
                    },
                    mark: Mark::find(head, body)?,
                    head: head.to_vec(),
                    seen_ms: clock::now_ms(),
                    server_ms: None,
                })
            })
            .collect();
        Ok(Look {
            arrivals,
            skipped: 0,
        })
    }

    fn scan_memory(&self) -> Option<String> {
        let inner = self.server.lock();
        inner.remembers.then(|| format!("upto {}", inner.next_key))
    }

    fn restore_scan_memory(&mut self, memory: &str) {
        self.server.lock().restored.push(memory.to_string());
    }

    fn cleanup_batch(&self) -> Duration {
        self.server.lock().cleanup_batch
    }

    async fn clean_up(&mut self, mails: &[MailId]) -> Result<(), MailboxError> {
        let mut inner = self.server.lock();
        inner.cleanups += usize::from(!mails.is_empty());
        for mail in mails {
            if let Ok(key) = mail.key.parse::<u64>() {
                inner.mails.remove(&key);
            }
            inner.cleaned.push(mail.key.clone());
        }
        Ok(())
    }

    async fn check_login(&mut self) -> Result<(), MailboxError> {
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        self.server
            .lock()
            .poll_interval
            .unwrap_or(Duration::from_secs(10))
    }

    async fn wait_for_news(&mut self, max: Duration) -> Result<(), MailboxError> {
        let _ = tokio::time::timeout(max, self.server.news.notified()).await;
        Ok(())
    }

    async fn close(&mut self) {}
}

/// A raw message's head (before the first empty line) and body.
fn split_head(raw: &[u8]) -> (&[u8], &[u8]) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n");
    match at {
        Some(i) => (&raw[..i + 2], &raw[i + 4..]),
        None => (raw, &[]),
    }
}

/// A message with its `X-Mailcanary` header line removed.
pub fn without_canary_header(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let kept: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("x-mailcanary:"))
        .collect();
    format!("{}\r\n\r\n{body}", kept.join("\r\n")).into_bytes()
}

struct FakeSender {
    server: FakeServer,
}

#[async_trait]
impl Submit for FakeSender {
    async fn send(&self, _from: &str, _to: &str, message: &[u8]) -> Result<Accepted, SendError> {
        let (fault, takes) = {
            let mut inner = self.server.lock();
            inner.sends.push(Instant::now());
            inner.sending += 1;
            inner.most_sending = inner.most_sending.max(inner.sending);
            (inner.send_faults.pop_front(), inner.send_takes)
        };
        let result = self.submit(fault, takes, message).await;
        self.server.lock().sending -= 1;
        result
    }
}

impl FakeSender {
    /// One submission: `fault` if any, else the mail is taken and answered after `takes`.
    async fn submit(
        &self,
        fault: Option<Fault>,
        takes: Duration,
        message: &[u8],
    ) -> Result<Accepted, SendError> {
        if let Some(Fault::Send(stage)) = fault {
            return Err(SendError {
                stage,
                message: "scripted failure".into(),
                transcript: Vec::new(),
            });
        }
        // The server takes the mail first; a slow or hanging answer comes after that, as
        // when the final reply to DATA is held up.
        let (queue_id, strip) = {
            let mut inner = self.server.lock();
            inner.accepted += 1;
            inner.messages.push(message.to_vec());
            (format!("Q{}", inner.accepted), inner.strip_header)
        };
        if strip {
            self.server.deliver(&without_canary_header(message));
        } else {
            self.server.deliver(message);
        }
        act(fault).await;
        if !takes.is_zero() {
            tokio::time::sleep(takes).await;
        }
        Ok(Accepted {
            queue_id: Some(queue_id),
            duration: Duration::from_millis(1),
            tls: None,
        })
    }
}

/// Config text of one probe `name` of agent `a` with `classes`, sending every `interval`.
fn config_text(name: &str, classes: &str, interval: &str) -> String {
    format!(
        r#"
[agent]
id = "a"
state_dir = "/nonexistent"
secret_env = "UNUSED"

[[probe]]
name = "{name}"
from = "a@example.test"
to = "b@example.test"
interval = "{interval}"
jitter = "0s"
classes = [{classes}]
  [probe.smtp]
  host = "127.0.0.1"
  tls = "none"
  [probe.mailbox]
  protocol = "imap"
  host = "127.0.0.1"
  username = "b@example.test"
  password = "unused"
"#
    )
}

/// A probe named `p` whose sender delivers into `server`, keeping its books in `store`.
/// `classes` is TOML list content, e.g. `"\"bulk\""`.
pub fn probe(server: &FakeServer, store: &Store, classes: &str, interval: &str) -> Arc<Probe> {
    probe_named("p", server, store, classes, interval)
}

/// A probe named `name` (of agent `a`, on the same mailbox account as every other probe made
/// here) whose sender delivers into `server`, keeping its books in `store`, with slots of its
/// own for its submissions.
pub fn probe_named(
    name: &str,
    server: &FakeServer,
    store: &Store,
    classes: &str,
    interval: &str,
) -> Arc<Probe> {
    probe_in(
        name,
        server,
        store,
        classes,
        interval,
        Submissions::agent_wide(),
    )
}

/// [`probe_named`], submitting in `submissions` (shared with the other probes given them).
pub fn probe_in(
    name: &str,
    server: &FakeServer,
    store: &Store,
    classes: &str,
    interval: &str,
    submissions: Submissions,
) -> Arc<Probe> {
    let text = config_text(name, classes, interval);
    let config = Config::parse(Path::new("/t/probes.toml"), &text).expect("test config");
    let key = SigningKey::new(b"test key of sixteen bytes".to_vec()).expect("key");
    let probe = Probe::new(
        config.probes[0].clone(),
        &config.agent.id,
        key,
        Duration::from_secs(3600),
        Ledger::default(),
        store.clone(),
        submissions,
    )
    .expect("probe")
    .with_submitter(server.sender());
    Arc::new(probe)
}

/// The signed header value of a fixed bulk canary (seq 1) of `agent`'s probe `probe`.
pub fn canary_header(agent: &str, probe: &str, key: &SigningKey) -> String {
    crate::canary::Canary {
        id: "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C".into(),
        probe: probe.into(),
        class: "bulk".into(),
        seq: 1,
        sent_ms: 1,
        agent: agent.into(),
    }
    .header_value(key)
}
