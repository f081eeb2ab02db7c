//! The last failed attempts of a probe, each with its protocol transcript, for the status page
//! and `/api/status`: what the server said when sending or reading failed.
//!
//! Written only when an attempt fails, never on the success path, one record per failure (so
//! a failure costs one insert and at most one removal, not a rewrite of the list). Bounded by
//! count ([`FAILURES_KEPT`] per probe, newest kept) and by age ([`FAILURES_FOR`]), so a probe
//! that fails on every round keeps at most `FAILURES_KEPT` transcripts of at most
//! 8 KiB each (the transcript's own bound).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Ledger, Write};

/// Failures kept per probe.
pub const FAILURES_KEPT: usize = 5;
/// How long a failure is kept: long enough to look at after a weekend.
pub const FAILURES_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest message kept, in bytes: a server's error text is anyone's to make long.
const MESSAGE_MAX: usize = 2048;

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Unique within the probe; the store's key (after `probe/`). Sorts by time.
    pub id: String,
    /// When it failed, Unix ms.
    pub at_ms: u64,
    /// `smtp`, `imap`, `pop3` or `maildir`.
    pub side: String,
    /// The stage label (`auth`, `rejected`, `search`, …).
    pub stage: String,
    /// What went wrong, in our words with the server's.
    pub message: String,
    /// The dialogue of the attempt, redacted and bounded ([`crate::transcript`]).
    pub transcript: Vec<String>,
}

impl Failure {
    /// A failure at `at_ms`; the message is cut to a bounded length. The id is set when the
    /// books take it ([`Ledger::failed`]).
    pub fn new(
        at_ms: u64,
        side: &str,
        stage: &str,
        message: &str,
        transcript: Vec<String>,
    ) -> Failure {
        Failure {
            id: String::new(),
            at_ms,
            side: side.to_string(),
            stage: stage.to_string(),
            message: crate::text::printable(message, MESSAGE_MAX),
            transcript,
        }
    }
}

impl Ledger {
    /// Keeps `failure` among the probe's last failures (the oldest beyond [`FAILURES_KEPT`]
    /// forgotten); returns the writes.
    pub fn failed(&mut self, mut failure: Failure) -> Vec<Write> {
        // Time first, then a counter for failures of the same millisecond (classes sent at once).
        let same_ms = self
            .failures
            .iter()
            .filter(|f| f.at_ms == failure.at_ms)
            .count();
        failure.id = format!("{:013}.{same_ms:03}", failure.at_ms);
        let mut writes = vec![Write::Failed(Box::new(failure.clone()))];
        self.failures.push(failure);
        self.failures.sort_by(|a, b| b.id.cmp(&a.id));
        for gone in self
            .failures
            .drain(FAILURES_KEPT.min(self.failures.len())..)
        {
            writes.push(Write::FailureForgotten(gone.id));
        }
        writes
    }

    /// Forgets failures older than [`FAILURES_FOR`] at `now_ms`; returns the writes.
    pub(super) fn expire_failures(&mut self, now_ms: u64) -> Vec<Write> {
        let keep_ms = FAILURES_FOR.as_millis() as u64;
        let mut writes = Vec::new();
        self.failures.retain(|f| {
            let keep = now_ms.saturating_sub(f.at_ms) < keep_ms;
            if !keep {
                writes.push(Write::FailureForgotten(f.id.clone()));
            }
            keep
        });
        writes
    }

    /// A stored failure, at load: kept in order and within the bounds.
    pub(super) fn replay_failure(&mut self, failure: Failure) {
        self.failures.retain(|f| f.id != failure.id);
        self.failures.push(failure);
        self.failures.sort_by(|a, b| b.id.cmp(&a.id));
        self.failures.truncate(FAILURES_KEPT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(at_ms: u64) -> Failure {
        Failure::new(at_ms, "smtp", "auth", "535 no", vec!["S: 535 no".into()])
    }

    #[test]
    fn the_newest_failures_are_kept_within_count_and_age() {
        let mut books = Ledger::default();
        for at in 1..=7 {
            books.failed(failure(at * 1000));
        }
        let writes = books.failed(failure(7000));
        assert_eq!(writes.len(), 2, "one in, one out: {writes:?}");
        let ids: Vec<_> = books.failures.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "0000000007000.001",
                "0000000007000.000",
                "0000000006000.000",
                "0000000005000.000",
                "0000000004000.000"
            ]
        );
        let week = FAILURES_FOR.as_millis() as u64;
        let writes = books.expire_failures(5000 + week);
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(books.failures.len(), 3);
    }

    #[test]
    fn stored_failures_load_newest_first_and_within_the_bound() {
        let mut books = Ledger::default();
        for at in [3, 1, 9, 5, 7, 2] {
            let mut f = failure(at);
            f.id = format!("{at:013}.000");
            books.replay(Write::Failed(Box::new(f)));
        }
        let ats: Vec<u64> = books.failures.iter().map(|f| f.at_ms).collect();
        assert_eq!(ats, [9, 7, 5, 3, 2]);
        let full = books.full_writes();
        assert_eq!(
            full.iter()
                .filter(|w| matches!(w, Write::Failed(_)))
                .count(),
            5
        );
    }

    #[test]
    fn a_long_message_is_kept_cut() {
        let f = Failure::new(1, "imap", "auth", &"m".repeat(1 << 20), Vec::new());
        assert!(f.message.len() < MESSAGE_MAX + 8);
    }
}
