//! Bounces on the books: a failed delivery status notification ends a canary in flight (it is
//! counted bounced, never also lost); a delay notice is counted and the canary stays in flight.
//!
//! A bounce mail is counted once, like a duplicate: it is remembered among the probe's
//! `repeated` mails, so reading it again (left in place, or after a restart) changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Ledger, Write};
use crate::bounce::{Action, Report};
use crate::canary::Canary;

/// Most distinct status codes counted per probe×class; later new codes count as `other`.
pub const STATUSES_PER_CLASS: usize = 16;

/// The `status` label of a bounce without a well-formed enhanced status code.
pub const UNKNOWN_STATUS: &str = "unknown";

/// The `status` label of a new code beyond [`STATUSES_PER_CLASS`].
pub const OTHER_STATUS: &str = "other";

/// The most recent bounce or delay notice of a probe×class, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBounce {
    /// The canary it was about.
    pub id: String,
    /// `failed` or `delayed`.
    pub action: String,
    /// The status label it was counted under.
    pub status: String,
    /// The remote MTA's words, bounded.
    pub diagnostic: Option<String>,
    /// When it was read, Unix ms.
    pub at_ms: u64,
}

/// What a bounce did to the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounced {
    /// A canary in flight was bounced: it ended, counted under this status.
    Ended {
        /// The status label.
        status: String,
        /// The queue id the submission server named for it.
        queue_id: Option<String>,
    },
    /// A delay notice for a canary in flight: counted; the canary stays in flight.
    Delayed,
    /// The canary was already counted lost: the bounce explains it, nothing more is counted.
    AfterLoss,
    /// The canary is not in flight (delivered, forgotten) or the mail was counted before.
    Nothing,
}

/// The status label for `status` in a class that counts `counted` codes so far: the code, or
/// [`UNKNOWN_STATUS`], or [`OTHER_STATUS`] once the class has [`STATUSES_PER_CLASS`] others.
pub fn status_label(status: Option<&str>, counted: &BTreeMap<String, u64>) -> String {
    match status {
        None => UNKNOWN_STATUS.to_string(),
        Some(s) if counted.contains_key(s) => s.to_string(),
        Some(_) if counted.len() >= STATUSES_PER_CLASS => OTHER_STATUS.to_string(),
        Some(s) => s.to_string(),
    }
}

impl Ledger {
    /// A verified bounce `report` about `canary` was read as `mail` at `now_ms`.
    pub fn bounced(
        &mut self,
        canary: &Canary,
        report: &Report,
        mail: &str,
        now_ms: u64,
    ) -> (Bounced, Vec<Write>) {
        if self.repeated.contains_key(mail) {
            return (Bounced::Nothing, Vec::new());
        }
        let mut writes = self.remember_counted(mail, now_ms);
        let in_flight = self.in_flight.contains_key(&canary.id);
        let outcome = match report.action {
            Action::Failed if in_flight => {
                let ended = self.take_in_flight(&canary.id).expect("checked above");
                writes.push(Write::Landed(canary.id.clone()));
                let tally = self.tally(&canary.class);
                let status = status_label(report.status.as_deref(), &tally.bounced);
                *tally.bounced.entry(status.clone()).or_default() += 1;
                tally.last_bounce = Some(last(canary, report, &status, now_ms));
                Bounced::Ended {
                    status,
                    queue_id: ended.queue_id,
                }
            }
            Action::Delayed if in_flight => {
                let tally = self.tally(&canary.class);
                tally.delay_notices += 1;
                let status = report.status.clone().unwrap_or(UNKNOWN_STATUS.into());
                tally.last_bounce = Some(last(canary, report, &status, now_ms));
                Bounced::Delayed
            }
            Action::Failed if self.lost.contains_key(&canary.id) => Bounced::AfterLoss,
            _ => Bounced::Nothing,
        };
        if matches!(outcome, Bounced::Ended { .. } | Bounced::Delayed) {
            writes.push(self.class_write(&canary.class));
        }
        (outcome, writes)
    }
}

fn last(canary: &Canary, report: &Report, status: &str, now_ms: u64) -> LastBounce {
    LastBounce {
        id: canary.id.clone(),
        action: match report.action {
            Action::Failed => "failed".into(),
            Action::Delayed => "delayed".into(),
        },
        status: status.to_string(),
        diagnostic: report.diagnostic.clone(),
        at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(id: &str) -> Canary {
        Canary {
            id: id.into(),
            probe: "p".into(),
            class: "bulk".into(),
            seq: 1,
            sent_ms: 1_000,
            agent: "a".into(),
        }
    }

    fn report(action: Action, status: Option<&str>) -> Report {
        Report {
            action,
            status: status.map(str::to_string),
            diagnostic: Some("550 5.1.1 no such user".into()),
            canary: String::new(),
        }
    }

    #[test]
    fn a_failed_bounce_ends_the_canary_once_and_it_is_never_lost() {
        let mut l = Ledger::default();
        l.begin_send("c1", "bulk", 1_000);
        let failed = report(Action::Failed, Some("5.1.1"));
        let (outcome, writes) = l.bounced(&canary("c1"), &failed, "INBOX/7", 2_000);
        assert!(matches!(outcome, Bounced::Ended { ref status, .. } if status == "5.1.1"));
        assert!(writes.contains(&Write::Landed("c1".into())));
        assert!(l.in_flight().is_empty());
        assert_eq!(l.classes["bulk"].bounced["5.1.1"], 1);
        assert_eq!(l.classes["bulk"].last_bounce.as_ref().unwrap().id, "c1");
        // The same mail read again, and a second bounce for the same canary: nothing more.
        assert_eq!(
            l.bounced(&canary("c1"), &failed, "INBOX/7", 3_000).0,
            Bounced::Nothing
        );
        assert_eq!(
            l.bounced(&canary("c1"), &failed, "INBOX/8", 3_000).0,
            Bounced::Nothing
        );
        assert_eq!(l.classes["bulk"].bounced["5.1.1"], 1);
        let week = std::time::Duration::from_secs(7 * 24 * 3600);
        let (lost, _) = l.expire(10_000_000, |_| std::time::Duration::ZERO, week);
        assert!(lost.is_empty(), "a bounced canary is never also lost");
    }

    #[test]
    fn a_delay_notice_is_counted_and_the_canary_stays_in_flight() {
        let mut l = Ledger::default();
        l.begin_send("c2", "bulk", 1_000);
        let notice = report(Action::Delayed, Some("4.4.1"));
        assert_eq!(
            l.bounced(&canary("c2"), &notice, "INBOX/9", 2_000).0,
            Bounced::Delayed
        );
        assert_eq!(l.classes["bulk"].delay_notices, 1);
        assert!(l.in_flight().contains_key("c2"));
        assert!(l.classes["bulk"].bounced.is_empty());
    }

    #[test]
    fn status_labels_are_bounded() {
        let mut l = Ledger::default();
        for n in 0..(STATUSES_PER_CLASS + 3) {
            let id = format!("c{n}");
            l.begin_send(&id, "bulk", 1_000);
            let status = format!("5.7.{n}");
            let r = report(Action::Failed, Some(&status));
            l.bounced(&canary(&id), &r, &format!("INBOX/{n}"), 2_000);
        }
        l.begin_send("x", "bulk", 1_000);
        l.bounced(
            &canary("x"),
            &report(Action::Failed, None),
            "INBOX/x",
            2_000,
        );
        let bounced = &l.classes["bulk"].bounced;
        assert_eq!(bounced[OTHER_STATUS], 3);
        assert_eq!(
            bounced[UNKNOWN_STATUS], 1,
            "unknown is counted even past the bound"
        );
        assert_eq!(bounced.len(), STATUSES_PER_CLASS + 2);
    }
}
