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
}

impl Watcher {
    /// Watches `mailbox` for `probe`.
    pub fn new(probe: Arc<Probe>, mailbox: Box<dyn Mailbox>) -> Watcher {
        Watcher {
            probe,
            mailbox,
            judged: HashSet::new(),
        }
    }

    /// One look: find canaries, account for them, clean up, then count overdue canaries as
    /// lost. Loss is accounted even when the mailbox cannot be read: an unreadable mailbox is
    /// no reason to stop saying that mail is late.
    pub async fn look(&mut self) -> Result<(), MailboxError> {
        let result = self.try_look().await;
        self.probe.mailbox_checked(&result).await;
        self.probe.expire().await;
        result
    }

    async fn try_look(&mut self) -> Result<(), MailboxError> {
        let arrivals = self.mailbox.canaries().await?;
        // Mails judged before and still present (forged ones left in place, canaries kept by
        // config or whose removal failed) are not judged again on every look.
        let present: HashSet<&MailId> = arrivals.iter().map(|a| &a.id).collect();
        self.judged.retain(|id| present.contains(id));
        let fresh: Vec<_> = arrivals
            .into_iter()
            .filter(|a| !self.judged.contains(&a.id))
            .collect();
        let clean = self.probe.settle(&fresh).await;
        self.judged.extend(fresh.into_iter().map(|a| a.id));
        self.mailbox.clean_up(&clean).await
    }

    /// Time between looks.
    pub fn poll_interval(&self) -> Duration {
        self.mailbox.poll_interval()
    }

    /// Waits up to `max` for the mailbox to announce news (IDLE, inotify), else until `max`.
    /// A failure to wait is a mailbox failure like any other, and is followed by a plain pause
    /// so a dead server is not hammered.
    pub async fn wait_for_news(&mut self, max: Duration) {
        let result = self.mailbox.wait_for_news(max).await;
        if result.is_err() {
            self.probe.mailbox_checked(&result).await;
            tokio::time::sleep(max.min(self.poll_interval())).await;
        }
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
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = probe.send_round() => {}
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
                _ = watcher.wait_for_news(max) => {}
            }
        }
        watcher.close().await;
    };
    tokio::join!(sender, watcher);
}
