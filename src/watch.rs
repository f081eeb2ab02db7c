//! The receiving side of a probe, and the daemon's loop around both sides.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::mailbox::{MailId, Mailbox, MailboxError};
use crate::probe::Probe;

/// A probe's mailbox and what this process has already looked at in it.
pub struct Watcher {
    probe: Arc<Probe>,
    mailbox: Box<dyn Mailbox>,
    judged: HashSet<MailId>,
    /// Looks or waits that failed in a row; drives the reconnect backoff.
    failures: u32,
}

/// First pause after a mailbox failure; doubled per further failure up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest pause between two attempts on a failing mailbox.
const BACKOFF_CAP: Duration = Duration::from_secs(60);

impl Watcher {
    /// Watches `mailbox` for `probe`.
    pub fn new(probe: Arc<Probe>, mailbox: Box<dyn Mailbox>) -> Watcher {
        Watcher {
            probe,
            mailbox,
            judged: HashSet::new(),
            failures: 0,
        }
    }

    /// One look: find canaries, account for them, clean up, then count overdue canaries as
    /// lost. Loss is accounted even when the mailbox cannot be read: an unreadable mailbox is
    /// no reason to stop saying that mail is late.
    pub async fn look(&mut self) -> Result<(), MailboxError> {
        let result = self.try_look().await;
        self.failures = if result.is_ok() { 0 } else { self.failures + 1 };
        self.probe.mailbox_checked(&result).await;
        self.probe.expire().await;
        result
    }

    async fn try_look(&mut self) -> Result<(), MailboxError> {
        let arrivals = self.mailbox.canaries().await?;
        // Mails judged before and still present (forged ones left in place, canaries kept by
        // config) are not judged again on every look.
        let present: HashSet<&MailId> = arrivals.iter().map(|a| &a.id).collect();
        self.judged.retain(|id| present.contains(id));
        let fresh: Vec<_> = arrivals
            .into_iter()
            .filter(|a| !self.judged.contains(&a.id))
            .collect();
        let clean = self.probe.settle(&fresh).await;
        let cleaned = self.mailbox.clean_up(&clean).await;
        // A canary whose removal failed is judged again next look: the books know it
        // (`AlreadyCounted`, not a second delivery) and hand it back for another removal.
        let retry: HashSet<&MailId> = match &cleaned {
            Ok(()) => HashSet::new(),
            Err(_) => clean.iter().collect(),
        };
        let judged: Vec<MailId> = fresh
            .into_iter()
            .map(|a| a.id)
            .filter(|id| !retry.contains(id))
            .collect();
        self.judged.extend(judged);
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
        if self.failures == 0 {
            let result = self.mailbox.wait_for_news(max).await;
            if result.is_ok() {
                return;
            }
            self.failures = 1;
            self.probe.mailbox_checked(&result).await;
        }
        let doublings = self.failures.saturating_sub(1).min(16);
        let backoff = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP);
        // ±20 % jitter, so probes that failed together do not all knock again together.
        let jittered = backoff.mul_f64(rand::random_range(0.8..1.2));
        tokio::time::sleep(jittered.min(max)).await;
    }

    /// Logs out.
    pub async fn close(&mut self) {
        self.mailbox.close().await;
    }
}

/// Runs a probe until `shutdown`: a canary of every class each `interval`, a look at the
/// mailbox whenever it announces news and at least each poll interval.
pub async fn run(probe: Arc<Probe>, mailbox: Box<dyn Mailbox>, shutdown: CancellationToken) {
    let sender = async {
        let mut ticks = tokio::time::interval(probe.config().interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            // Each round is a task of its own: a bug that panics in one round is logged and
            // the next round still runs, instead of the probe falling silent.
            let round = tokio::spawn({
                let probe = Arc::clone(&probe);
                async move { probe.send_round().await }
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                done = round => if let Err(e) = done {
                    tracing::error!(probe = %probe.config().name, error = %e, "a send round failed; continuing");
                }
            }
        }
    };
    let watcher = async {
        let mut watcher = Watcher::new(Arc::clone(&probe), mailbox);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = watcher.look() => {}
            }
            let max = watcher.poll_interval();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = watcher.wait_for_next(max) => {}
            }
        }
        watcher.close().await;
    };
    tokio::join!(sender, watcher);
}
