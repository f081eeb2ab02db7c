//! Where a probe's step failed: the `stage` label values of `send_failures_total` and
//! `mailbox_errors_total`, each set named once.
//!
//! Pure, so the books ([`crate::ledger`]), the metrics and the adapters that classify a failure
//! all share the one list: a stage added here exists everywhere (as a zero series from start-up)
//! without parallel arrays kept in step by tests.

use std::fmt;

/// Where a submission failed, as in `send_failures_total{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SendStage {
    /// TCP connect, greeting, EHLO.
    Connect,
    /// TLS handshake, certificate verification, or STARTTLS missing.
    Tls,
    /// AUTH refused or no common mechanism.
    Auth,
    /// The server refused the envelope or the message (4xx/5xx).
    Rejected,
    /// The server did not answer within the configured timeout.
    Timeout,
}

impl SendStage {
    /// Every stage, in the order the metrics list them.
    pub const ALL: [SendStage; 5] = [
        SendStage::Connect,
        SendStage::Tls,
        SendStage::Auth,
        SendStage::Rejected,
        SendStage::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendStage::Connect => "connect",
            SendStage::Tls => "tls",
            SendStage::Auth => "auth",
            SendStage::Rejected => "rejected",
            SendStage::Timeout => "timeout",
        }
    }
}

impl fmt::Display for SendStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a mailbox check failed, as in `mailbox_errors_total{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MailboxStage {
    /// TCP connect.
    Connect,
    /// TLS handshake or STARTTLS.
    Tls,
    /// Server greeting missing or not OK.
    Greeting,
    /// Login refused.
    Auth,
    /// Opening a folder.
    Select,
    /// Searching or fetching headers.
    Search,
    /// Deleting or moving canaries.
    Cleanup,
    /// Waiting for news (IMAP IDLE, inotify).
    Idle,
    /// The server did not answer in time.
    Timeout,
}

impl MailboxStage {
    /// Every stage, in the order the metrics list them.
    pub const ALL: [MailboxStage; 9] = [
        MailboxStage::Connect,
        MailboxStage::Tls,
        MailboxStage::Greeting,
        MailboxStage::Auth,
        MailboxStage::Select,
        MailboxStage::Search,
        MailboxStage::Cleanup,
        MailboxStage::Idle,
        MailboxStage::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MailboxStage::Connect => "connect",
            MailboxStage::Tls => "tls",
            MailboxStage::Greeting => "greeting",
            MailboxStage::Auth => "auth",
            MailboxStage::Select => "select",
            MailboxStage::Search => "search",
            MailboxStage::Cleanup => "cleanup",
            MailboxStage::Idle => "idle",
            MailboxStage::Timeout => "timeout",
        }
    }
}

impl fmt::Display for MailboxStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_distinct_within_each_set() {
        let send: std::collections::BTreeSet<_> = SendStage::ALL.map(SendStage::as_str).into();
        assert_eq!(send.len(), SendStage::ALL.len());
        let mailbox: std::collections::BTreeSet<_> =
            MailboxStage::ALL.map(MailboxStage::as_str).into();
        assert_eq!(mailbox.len(), MailboxStage::ALL.len());
    }

    #[test]
    fn send_stages_are_the_ones_design_names() {
        assert_eq!(
            SendStage::ALL.map(SendStage::as_str),
            ["connect", "tls", "auth", "rejected", "timeout"]
        );
    }
}
