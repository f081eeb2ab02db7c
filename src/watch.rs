//! The receiving side of the probes on one mailbox: look at the mailbox, hand each canary to
//! the probe it names, clean up, and wait for the next look. Shared by the daemon's loop
//! (`cmd::run`) and `once`.
//!
//! Probes whose `[probe.mailbox]` names the same mailbox with the same login
//! ([`MailboxConfig::share_key`]) share one watcher: one connection, one IDLE, one look for all of them. Each probe still keeps its
//! own books and its own `mailbox_up`: the outcome of every look (and every failed wait) is
//! reported to every probe on the mailbox. What belongs to the mailbox rather than to a probe
//! is kept on the first of its probes in config order: the adapter's scan memory and the count
//! of mails skipped as unreadable (counted once, not once per probe).
//!
//! [`MailboxConfig::share_key`]: crate::config::MailboxConfig::share_key
//!
//! The mailbox adapters parse whatever a server or a stranger's mail hands them, so a bug there
//! must not silence a probe: a look or a wait that panics is caught here, logged, counted as a
//! failed look, and the connection is dropped so the next look starts clean.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::join_all;

use crate::canary::parse_header;
use crate::mailbox::{Arrival, MailId, Mailbox, MailboxError};
use crate::probe::Probe;

/// A mailbox, the probes it serves and what this process has already looked at in it.
pub struct Watcher {
    /// Never empty; the first keeps what belongs to the mailbox (scan memory, skipped mails).
    /// The first [`Watcher::receivers`] receive their canaries here; the rest only have their
    /// bounces come back here.
    probes: Vec<Arc<Probe>>,
    /// How many of `probes` receive here: only their `mailbox_up` and error counts follow this
    /// mailbox, and only they are checked for overdue canaries by this watcher.
    receivers: usize,
    mailbox: Box<dyn Mailbox>,
    judged: HashSet<MailId>,
    /// Verified canaries not removed yet: waiting for the mailbox's next clean-up (see
    /// [`Mailbox::cleanup_batch`]), or whose removal failed and is retried.
    unremoved: Vec<MailId>,
    /// When the mailbox was last cleaned up.
    cleaned_at: Option<tokio::time::Instant>,
    /// Looks or waits that failed in a row; drives the reconnect backoff.
    failures: u32,
    /// When the probes last counted overdue canaries (see [`EXPIRE_EVERY`]).
    expired_at: Option<tokio::time::Instant>,
    /// The adapter's memory after the last look, not yet on the books (see [`MEMORY_EVERY`]).
    unsaved_memory: Option<String>,
    /// When the memory was last put on the books.
    memory_saved_at: Option<tokio::time::Instant>,
}

/// How often the adapter's scan memory is put on the books. After every look would be a store
/// commit per look (50 a second at 1,000 probes on 10 mailboxes, a third of the agent's
/// commits); a memory a few seconds old costs a crashed agent a few mails read again, which the
/// books recognise, and it is saved when the watcher closes.
const MEMORY_EVERY: Duration = Duration::from_secs(5);

/// How often the probes on a mailbox count overdue canaries as lost. Every look would do: at
/// 100 probes on a mailbox that hears of a delivery five times a second, it walked every
/// probe's books 500 times a second (2 % of a busy agent's CPU) for a one-second answer.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// First pause after a mailbox failure; doubled per further failure up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest pause between two attempts on a failing mailbox.
const BACKOFF_CAP: Duration = Duration::from_secs(60);

impl Watcher {
    /// Watches `mailbox` for `probes` (at least one; all configured with this mailbox).
    #[cfg(test)]
    pub fn new(probes: Vec<Arc<Probe>>, mailbox: Box<dyn Mailbox>) -> Watcher {
        let receivers = probes.len();
        Watcher::serving(probes, receivers, mailbox)
    }

    /// Watches `mailbox` for `probes`: the first `receivers` receive their canaries here, the
    /// rest have it as their bounce mailbox only.
    pub fn serving(
        probes: Vec<Arc<Probe>>,
        receivers: usize,
        mut mailbox: Box<dyn Mailbox>,
    ) -> Watcher {
        assert!(!probes.is_empty(), "a watcher serves at least one probe");
        assert!(receivers <= probes.len());
        let keeper = Keeper::of(&probes[0], receivers > 0);
        let tag = keeper.tag();
        if let Some(memory) = keeper.memory() {
            match memory.strip_prefix(&tag) {
                Some(memory) => mailbox.restore_scan_memory(memory),
                // Another mailbox's (the first probe was moved, or the probes reordered): this
                // mailbox is read from the start once; the books know what they counted.
                None if memory.starts_with(MEMORY_TAG) => tracing::info!(
                    probe = %names(&probes),
                    "the remembered scan position is of another mailbox; reading this one again"
                ),
                // Written before memories were tagged: the probe's own mailbox then.
                None => mailbox.restore_scan_memory(&memory),
            }
        }
        Watcher {
            probes,
            receivers,
            mailbox,
            judged: HashSet::new(),
            unremoved: Vec::new(),
            cleaned_at: None,
            failures: 0,
            expired_at: None,
            unsaved_memory: None,
            memory_saved_at: None,
        }
    }

    /// The probes that receive here.
    fn receivers(&self) -> &[Arc<Probe>] {
        &self.probes[..self.receivers]
    }

    /// Who keeps this mailbox's memory: the first probe, in the slot of its role here.
    fn keeper(&self) -> Keeper<'_> {
        Keeper::of(&self.probes[0], self.receivers > 0)
    }

    /// One look: find canaries, account for them, clean up, then count overdue canaries as
    /// lost; true when the mailbox was read. Loss is accounted even when the mailbox cannot be
    /// read: an unreadable mailbox is no reason to stop saying that mail is late.
    pub async fn look(&mut self) -> bool {
        self.mailbox.restart_transcript();
        match AssertUnwindSafe(self.try_look()).catch_unwind().await {
            Ok(result) => {
                self.failures = if result.is_ok() { 0 } else { self.failures + 1 };
                self.checked(&result).await;
            }
            Err(panic) => self.recover("look", panic).await,
        }
        let steps = self.mailbox.steps();
        for probe in self.receivers() {
            probe.looked(steps);
        }
        // All probes at once: their writes reach the store as one group commit, not one
        // commit per probe.
        let now = tokio::time::Instant::now();
        if self.expired_at.is_none_or(|at| now - at >= EXPIRE_EVERY) {
            self.expired_at = Some(now);
            join_all(self.receivers().iter().map(|p| p.expire())).await;
        }
        self.failures == 0
    }

    /// After a panic in the adapter: log it, mark the mailbox down, and drop the connection
    /// (whatever state it was left in) so the next attempt reconnects from scratch.
    async fn recover(&mut self, during: &str, panic: Box<dyn Any + Send>) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        tracing::error!(
            probe = %self.names(), during, panic = %what,
            "the mailbox adapter panicked (a bug); reconnecting and watching on"
        );
        self.failures += 1;
        for probe in self.receivers() {
            probe.mailbox_faulted();
        }
        if AssertUnwindSafe(self.mailbox.close())
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(probe = %self.names(), "closing the mailbox panicked too");
        }
    }

    /// The names of the probes served, for the log.
    fn names(&self) -> String {
        names(&self.probes)
    }

    /// Reports a check's outcome to every probe receiving on this mailbox; a failure is logged
    /// once, naming them all (a bounce mailbox's failure is logged only).
    async fn checked(&mut self, result: &Result<(), MailboxError>) {
        let mut transcript = Vec::new();
        if let Err(e) = result {
            transcript = self.mailbox.take_transcript();
            let role = if self.receivers > 0 {
                "mailbox"
            } else {
                "bounce mailbox"
            };
            tracing::warn!(
                probe = %self.names(), protocol = self.mailbox.protocol(), role,
                stage = e.stage.as_str(), error = %e.message, "mailbox check failed"
            );
        }
        let receivers = self.receivers().to_vec();
        let side = self.mailbox.protocol();
        join_all(
            receivers
                .iter()
                .map(|p| p.mailbox_checked(result, side, &transcript)),
        )
        .await;
    }

    async fn try_look(&mut self) -> Result<(), MailboxError> {
        let look = self.mailbox.canaries().await?;
        if look.skipped > 0 {
            // A property of the mailbox, counted once: on its first probe.
            self.probes[0].mails_skipped(look.skipped).await;
        }
        // Adapters that re-list what is present (Maildir) report mails judged before (forged
        // ones left in place, canaries kept by config): those are not judged again.
        let present: HashSet<&MailId> = look.arrivals.iter().map(|a| &a.id).collect();
        self.judged.retain(|id| present.contains(id));
        let fresh: Vec<_> = look
            .arrivals
            .into_iter()
            .filter(|a| !self.judged.contains(&a.id))
            .collect();
        let fresh_ids: Vec<MailId> = fresh.iter().map(|a| a.id.clone()).collect();
        let routed = route(fresh, &self.probes);
        let accounting = self
            .probes
            .iter()
            .zip(&routed)
            .filter(|(_, arrivals)| !arrivals.is_empty())
            .map(|(probe, arrivals)| probe.account_for(arrivals));
        let mut clean = Vec::new();
        let mut forged = Vec::new();
        for settled in join_all(accounting).await {
            clean.extend(settled.clean);
            forged.extend(settled.forged);
        }
        if !forged.is_empty()
            && let Err(e) = self.mailbox.quarantine(&forged).await
        {
            // Not retried: a forged mail left in place is counted once and costs nothing.
            tracing::warn!(probe = %self.names(), error = %e, "forged mail not moved");
        }
        self.judged.extend(fresh_ids);
        // With the removals that failed on an earlier look or wait for this clean-up: an
        // adapter that remembers what it read will not report those mails again.
        for id in clean {
            if !self.unremoved.contains(&id) {
                self.unremoved.push(id);
            }
        }
        let now = tokio::time::Instant::now();
        let batch = self.mailbox.cleanup_batch();
        if self.cleaned_at.is_some_and(|at| now - at < batch) {
            return Ok(());
        }
        self.clean_up().await
    }

    /// Removes the verified canaries waiting for it; once none is left, the adapter's memory
    /// may move on durably.
    async fn clean_up(&mut self) -> Result<(), MailboxError> {
        let clean = std::mem::take(&mut self.unremoved);
        let cleaned = self.mailbox.clean_up(&clean).await;
        self.cleaned_at = Some(tokio::time::Instant::now());
        match &cleaned {
            // Only once what the looks found is on the books and cleaned up may the adapter's
            // memory move on durably: after a crash before this point, the next run reads the
            // same mail again, and the books recognise what they already counted.
            Ok(()) => {
                if let Some(memory) = self.mailbox.scan_memory() {
                    self.unsaved_memory = Some(self.keeper().tag() + &memory);
                    let now = tokio::time::Instant::now();
                    if self
                        .memory_saved_at
                        .is_none_or(|at| now - at >= MEMORY_EVERY)
                    {
                        self.save_memory().await;
                    }
                }
            }
            Err(_) => self.unremoved = clean,
        }
        cleaned
    }

    /// Time between looks.
    pub fn poll_interval(&self) -> Duration {
        self.mailbox.poll_interval()
    }

    /// Waits until the next look is due: up to `max` for the mailbox to announce news (IDLE,
    /// inotify) while it is healthy; after failures, an exponential backoff with jitter (1 s
    /// doubling to 60 s, ±20 %, never beyond `max`) so a dead server is not hammered yet a
    /// recovered one is seen soon. A failure to wait is a mailbox failure like any other.
    pub async fn wait_for_next(&mut self, max: Duration) {
        // Canaries waiting to be removed together are not kept waiting past their batch
        // (after a failure, the backoff decides when the removal is tried again).
        let max = match (self.unremoved.is_empty(), self.cleaned_at) {
            (false, Some(at)) if self.failures == 0 => {
                let due = at + self.mailbox.cleanup_batch();
                max.min(due.saturating_duration_since(tokio::time::Instant::now()))
            }
            _ => max,
        };
        if self.failures == 0 {
            self.mailbox.restart_transcript();
            match AssertUnwindSafe(self.mailbox.wait_for_news(max))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => return,
                Ok(result) => {
                    self.failures = 1;
                    self.checked(&result).await;
                }
                Err(panic) => self.recover("wait", panic).await,
            }
        }
        let doublings = self.failures.saturating_sub(1).min(16);
        let backoff = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP);
        // ±20 % jitter, so mailboxes that failed together do not all knock again together.
        let jittered = backoff.mul_f64(rand::random_range(0.8..1.2));
        tokio::time::sleep(jittered.min(max)).await;
    }

    /// Puts the adapter's latest memory on the books, if it changed since.
    async fn save_memory(&mut self) {
        if let Some(memory) = self.unsaved_memory.take() {
            self.memory_saved_at = Some(tokio::time::Instant::now());
            let keeper = self.keeper();
            if keeper.memory().as_deref() != Some(memory.as_str()) {
                keeper.remember(memory).await;
            }
        }
    }

    /// Removes the canaries still waiting for it, saves the adapter's memory and logs out.
    pub async fn close(&mut self) {
        if !self.unremoved.is_empty() {
            let cleaned = AssertUnwindSafe(self.clean_up()).catch_unwind().await;
            if !matches!(cleaned, Ok(Ok(()))) {
                tracing::warn!(
                    probe = %self.names(),
                    "canaries not removed before closing; the next run removes them"
                );
            }
        }
        self.save_memory().await;
        self.mailbox.close().await;
    }
}

/// How a scan memory kept in a probe's books starts: the mailbox it is of, so that a memory
/// is never handed to another mailbox's adapter (after probes were reordered or a probe was
/// pointed elsewhere; IMAP UIDVALIDITY alone may match by chance).
const MEMORY_TAG: &str = "mailbox ";

/// The probe that keeps a mailbox's memory, and in which slot of its books: its receiving
/// mailbox's, or its bounce mailbox's (a mailbox only watched for bounces).
struct Keeper<'a> {
    probe: &'a Probe,
    receives: bool,
}

impl<'a> Keeper<'a> {
    fn of(probe: &'a Probe, receives: bool) -> Keeper<'a> {
        Keeper { probe, receives }
    }

    fn memory(&self) -> Option<String> {
        match self.receives {
            true => self.probe.scan_memory(),
            false => self.probe.bounce_scan_memory(),
        }
    }

    async fn remember(&self, memory: String) {
        match self.receives {
            true => self.probe.remember_scan(memory).await,
            false => self.probe.remember_bounce_scan(memory).await,
        }
    }

    /// [`MEMORY_TAG`], a hash of the mailbox's identity (FNV-1a, stable across builds), a
    /// newline.
    fn tag(&self) -> String {
        let config = self.probe.config();
        let mailbox = match (self.receives, &config.bounces) {
            (false, Some(bounces)) => bounces,
            _ => &config.mailbox,
        };
        memory_tag(&mailbox.identity())
    }
}

/// The tag of the mailbox with `identity`.
fn memory_tag(identity: &str) -> String {
    let hash = identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{MEMORY_TAG}{hash:016x}\n")
}

/// The names of `probes`, comma-separated, for the log.
fn names(probes: &[Arc<Probe>]) -> String {
    let names: Vec<&str> = probes.iter().map(|p| p.config().name.as_str()).collect();
    names.join(",")
}

/// Splits a look's arrivals by the probe their canary names (agent and probe name, as claimed:
/// each probe then verifies its own). A mail naming another agent, a probe not on this
/// mailbox, or with a mark that does not parse is no probe's: it is left alone.
fn route(arrivals: Vec<Arrival>, probes: &[Arc<Probe>]) -> Vec<Vec<Arrival>> {
    let index: HashMap<(&str, &str), usize> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.agent(), p.config().name.as_str()), i))
        .collect();
    let mut routed: Vec<Vec<Arrival>> = (0..probes.len()).map(|_| Vec::new()).collect();
    for arrival in arrivals {
        let Ok(claimed) = parse_header(arrival.mark.value()) else {
            continue;
        };
        let named = index.get(&(claimed.canary.agent.as_str(), claimed.canary.probe.as_str()));
        if let Some(&i) = named {
            routed[i].push(arrival);
        }
    }
    routed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;
    use crate::testing::{self, FakeServer};

    /// A mail carrying a canary of `agent`'s probe `probe`, signed with `key`.
    fn canary_mail(agent: &str, probe: &str, key: &[u8]) -> Vec<u8> {
        let key = crate::canary::SigningKey::new(key.to_vec()).unwrap();
        let header = testing::canary_header(agent, probe, &key);
        format!("X-Mailcanary: {header}\r\nSubject: x\r\n\r\nbody\r\n").into_bytes()
    }

    fn forged(probe: &Probe) -> u64 {
        probe.read_ledger(|l| {
            l.classes.values().map(|c| c.forged).sum::<u64>() + l.probe.forged_unknown_class
        })
    }

    #[tokio::test]
    async fn a_shared_mailbox_hands_a_forgery_to_the_probe_it_names_and_leaves_strangers_alone() {
        let (server, store) = (FakeServer::default(), Store::acknowledging());
        let p = testing::probe_named("p", &server, &store, r#""bulk""#, "1h");
        let q = testing::probe_named("q", &server, &store, r#""bulk""#, "1h");
        let ours = b"test key of sixteen bytes";
        server.deliver(&canary_mail("a", "z", ours)); // a probe not on this mailbox
        server.deliver(&canary_mail("b", "p", ours)); // another agent's probe p
        server.deliver(&canary_mail("a", "q", b"not our key at all")); // forged, naming q
        let mut watcher = Watcher::new(vec![Arc::clone(&p), Arc::clone(&q)], server.mailbox());
        assert!(watcher.look().await);
        assert!(watcher.look().await, "a second look judges nothing again");
        assert_eq!((forged(&p), forged(&q)), (0, 1));
        assert_eq!(server.mail_count(), 3, "nothing removed");
        assert!(server.cleaned().is_empty());
    }

    #[tokio::test]
    async fn a_shared_mailbox_keeps_its_scan_memory_on_its_first_probe_tagged_with_the_mailbox() {
        let (server, store) = (FakeServer::default(), Store::acknowledging());
        server.remember_scans();
        let p = testing::probe_named("p", &server, &store, r#""bulk""#, "1h");
        let q = testing::probe_named("q", &server, &store, r#""bulk""#, "1h");
        server.deliver(b"Subject: not a canary\r\n\r\nhello\r\n");
        let mut watcher = Watcher::new(vec![Arc::clone(&p), Arc::clone(&q)], server.mailbox());
        assert!(watcher.look().await);
        let memory = p.scan_memory().expect("the first probe keeps the memory");
        assert!(
            memory.starts_with(&memory_tag(&p.config().mailbox.identity()))
                && memory.ends_with("upto 1")
        );
        assert_eq!(q.scan_memory(), None);
        // A restart (or `once`) hands the memory back, untagged.
        Watcher::new(vec![Arc::clone(&p), Arc::clone(&q)], server.mailbox());
        assert_eq!(server.restored(), ["upto 1"]);
        // Another mailbox's memory is not handed over; one written before tags were is.
        p.remember_scan("mailbox 0123456789abcdef\nupto 9".into())
            .await;
        Watcher::new(vec![Arc::clone(&p)], server.mailbox());
        assert_eq!(server.restored(), ["upto 1"]);
        p.remember_scan("upto 7".into()).await;
        Watcher::new(vec![Arc::clone(&p)], server.mailbox());
        assert_eq!(server.restored(), ["upto 1", "upto 7"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_scan_memory_reaches_the_books_every_few_seconds_and_when_the_watcher_closes() {
        let (server, store) = (FakeServer::default(), Store::acknowledging());
        server.remember_scans();
        let p = testing::probe_named("p", &server, &store, r#""bulk""#, "1h");
        let mut watcher = Watcher::new(vec![Arc::clone(&p)], server.mailbox());
        let saved = || {
            p.scan_memory()
                .map(|m| m.rsplit(' ').next().unwrap().to_string())
        };
        server.deliver(b"Subject: one\r\n\r\nhello\r\n");
        assert!(watcher.look().await);
        assert_eq!(
            saved().as_deref(),
            Some("1"),
            "the first look's memory is saved"
        );
        server.deliver(b"Subject: two\r\n\r\nhello\r\n");
        assert!(watcher.look().await);
        assert_eq!(
            saved().as_deref(),
            Some("1"),
            "not again within MEMORY_EVERY"
        );
        tokio::time::advance(MEMORY_EVERY).await;
        server.deliver(b"Subject: three\r\n\r\nhello\r\n");
        assert!(watcher.look().await);
        assert_eq!(saved().as_deref(), Some("3"));
        server.deliver(b"Subject: four\r\n\r\nhello\r\n");
        assert!(watcher.look().await);
        assert_eq!(saved().as_deref(), Some("3"));
        watcher.close().await;
        assert_eq!(
            saved().as_deref(),
            Some("4"),
            "saved when the watcher closes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_mailbox_removes_its_canaries_together_and_none_is_left_behind() {
        let (server, store) = (FakeServer::default(), Store::acknowledging());
        server.remember_scans();
        server.batch_cleanups(Duration::from_secs(1));
        let p = testing::probe_named("p", &server, &store, r#""bulk""#, "1h");
        let mut watcher = Watcher::new(vec![Arc::clone(&p)], server.mailbox());
        let stop = tokio_util::sync::CancellationToken::new();
        let delivered = || {
            p.read_ledger(|l| {
                l.classes
                    .values()
                    .flat_map(|c| c.delivered.values())
                    .sum::<u64>()
            })
        };
        let saved = || {
            p.scan_memory()
                .map(|m| m.rsplit(' ').next().unwrap().to_string())
        };
        // A quiet mailbox: the first canary is removed by the look that found it.
        p.send_round(&stop).await;
        assert!(watcher.look().await);
        assert_eq!(
            (delivered(), server.mail_count(), server.cleanups()),
            (1, 0, 1)
        );
        // Busy: canaries found within the batch wait, on the books at once, memory unmoved.
        for round in 1..=3 {
            tokio::time::advance(Duration::from_millis(200)).await;
            p.send_round(&stop).await;
            assert!(watcher.look().await);
            assert_eq!(delivered(), 1 + round);
        }
        assert_eq!((server.mail_count(), server.cleanups()), (3, 1));
        assert_eq!(
            saved().as_deref(),
            Some("1"),
            "memory only after a clean-up"
        );
        // The wait ends when the batch is due, even without news; that look removes all three.
        let waited = tokio::time::Instant::now();
        watcher.wait_for_next(Duration::from_secs(60)).await;
        assert_eq!(waited.elapsed(), Duration::from_millis(400));
        assert!(watcher.look().await);
        assert_eq!((server.mail_count(), server.cleanups()), (0, 2));
        assert_eq!(server.cleaned(), ["1", "2", "3", "4"]);
        // Closing removes what still waits.
        tokio::time::advance(Duration::from_millis(100)).await;
        p.send_round(&stop).await;
        assert!(watcher.look().await);
        assert_eq!(server.mail_count(), 1);
        watcher.close().await;
        assert_eq!((server.mail_count(), server.cleanups()), (0, 3));
        assert_eq!(saved().as_deref(), Some("5"));
    }
}
