//! The receiving side of a probe: look at the mailbox, hand what it holds to the probe, clean
//! up, and wait for the next look. Shared by the daemon's loop (`cmd::run`) and `once`.
//!
//! The mailbox adapters parse whatever a server or a stranger's mail hands them, so a bug there
//! must not silence a probe: a look or a wait that panics is caught here, logged, counted as a
//! failed look, and the connection is dropped so the next look starts clean.

use std::any::Any;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;

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
    /// lost; true when the mailbox was read. Loss is accounted even when the mailbox cannot be
    /// read: an unreadable mailbox is no reason to stop saying that mail is late.
    pub async fn look(&mut self) -> bool {
        match AssertUnwindSafe(self.try_look()).catch_unwind().await {
            Ok(result) => {
                self.failures = if result.is_ok() { 0 } else { self.failures + 1 };
                self.probe.mailbox_checked(&result).await;
            }
            Err(panic) => self.recover("look", panic).await,
        }
        self.probe.expire().await;
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
            probe = %self.probe.config().name, during, panic = %what,
            "the mailbox adapter panicked (a bug); reconnecting and watching on"
        );
        self.failures += 1;
        self.probe.mailbox_faulted();
        if AssertUnwindSafe(self.mailbox.close())
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(probe = %self.probe.config().name, "closing the mailbox panicked too");
        }
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
        let clean = self.probe.account_for(&fresh).await;
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
            match AssertUnwindSafe(self.mailbox.wait_for_news(max))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => return,
                Ok(result) => {
                    self.failures = 1;
                    self.probe.mailbox_checked(&result).await;
                }
                Err(panic) => self.recover("wait", panic).await,
            }
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
