//! The agent-wide bound on SMTP submissions in progress.
//!
//! Every submission is a connection, STARTTLS and AUTH: a server process and a few
//! milliseconds of its CPU for each. 1,000 probes that all send at once would open 3,000
//! sessions together against a Postfix whose default `smtpd` process limit is 100: most wait
//! in the listen queue, and the ones still waiting when their own timeout expires are counted as
//! failed submissions although the server is healthy. One semaphore shared by every probe keeps
//! the agent's own load on its servers bounded, whatever the number of probes.
//!
//! A canary waiting for a slot is not on the books yet: the probe takes the slot *before* it
//! books the canary and takes its `sent` time, so the wait is neither mail delay nor SMTP
//! duration, and a stop that comes during the wait leaves nothing half begun.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// SMTP submissions the whole agent runs at a time.
///
/// Why 16: a submission over loopback or a LAN takes tens of milliseconds (STARTTLS and AUTH
/// included), so 16 at a time carry a few hundred per second, well above what the agent needs
/// at its design size (1,000 probes × 3 classes per minute = 50 per second); against a remote
/// server at 200 ms each they still carry 80 per second. And 16 is a small share of the 100
/// `smtpd` processes a default Postfix allows for every client together, so the agent never
/// crowds out the mail it is there to watch. Only a submission that hangs until its timeout
/// holds a slot long; the others keep going with the remaining slots.
pub const SUBMISSIONS_AT_ONCE: usize = 16;

/// The slots for submissions, shared by every probe of an agent (cheap to clone: every clone is
/// the same set of slots).
#[derive(Clone, Debug)]
pub struct Submissions(Arc<Semaphore>);

/// The right to run one submission; the slot is free again when this is dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Submissions {
    /// `at_once` slots (at least one).
    pub fn new(at_once: usize) -> Submissions {
        Submissions(Arc::new(Semaphore::new(at_once.max(1))))
    }

    /// The agent's slots: [`SUBMISSIONS_AT_ONCE`].
    pub fn agent_wide() -> Submissions {
        Submissions::new(SUBMISSIONS_AT_ONCE)
    }

    /// Waits for a free slot; `None` if `stop` is cancelled first (or was already), so a
    /// stopping agent never waits on the others' submissions to begin one of its own.
    pub async fn slot(&self, stop: &CancellationToken) -> Option<Slot> {
        if stop.is_cancelled() {
            return None;
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            permit = Arc::clone(&self.0).acquire_owned() => permit.ok().map(|p| Slot { _permit: p }),
        }
    }

    /// Slots free now.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.0.available_permits()
    }
}

#[cfg(test)]
mod tests;
