//! A probe's share of a look's bounces: each one that carries a genuine canary of this probe
//! goes on the books (see [`crate::ledger::bounce`]) and is cleaned up like a canary. One
//! that does not verify changes nothing and is left alone: anyone can send a mail that looks
//! like a bounce, and a forged one must not end a canary or be counted as a forged canary.

use super::{Probe, Verdict, judge};
use crate::bounce::Report;
use crate::canary::Canary;
use crate::clock;
use crate::ledger::Bounced;
use crate::mailbox::{Arrival, MailId};

/// How a bounce mail is named among the mails the books counted. A mail's id (`folder/key`)
/// is unique within one mailbox only, and a probe with `[probe.bounces]` reads two: without the
/// prefix, the delay notice `INBOX/3` in the bounce mailbox made the canary `INBOX/3` in the
/// receiving mailbox look counted already (seen in a fresh stack, where both boxes number their
/// mail from 1).
const BOUNCE_MAIL: &str = "bounce:";

impl Probe {
    /// Accounts for `bounces` (arrivals whose mark is a bounce); returns the verified ones,
    /// to clean up.
    pub(super) async fn account_for_bounces(&self, bounces: &[&Arrival]) -> Vec<MailId> {
        let verified: Vec<(&Arrival, Canary, &Report)> = bounces
            .iter()
            .filter_map(|a| {
                let report = a.mark.bounce()?;
                match judge(a.mark.value(), &self.key, &self.agent, &self.config.name) {
                    Verdict::Ours(canary) => Some((*a, canary, report)),
                    _ => None,
                }
            })
            .collect();
        if verified.is_empty() {
            return Vec::new();
        }
        let outcomes = self
            .record(|l| {
                let mut writes = Vec::new();
                let outcomes: Vec<Bounced> = verified
                    .iter()
                    .map(|(a, canary, report)| {
                        let mail = format!("{BOUNCE_MAIL}{}", a.id);
                        let (outcome, w) = l.bounced(canary, report, &mail, clock::now_ms());
                        writes.extend(w);
                        outcome
                    })
                    .collect();
                (outcomes, writes)
            })
            .await;
        for ((a, canary, report), outcome) in verified.iter().zip(outcomes) {
            self.log_bounce(a, canary, report, outcome);
        }
        verified.into_iter().map(|(a, ..)| a.id.clone()).collect()
    }

    fn log_bounce(&self, arrival: &Arrival, canary: &Canary, report: &Report, outcome: Bounced) {
        let (probe, class, id, seq) = (&self.config.name, &canary.class, &canary.id, canary.seq);
        let diagnostic = report.diagnostic.as_deref().unwrap_or("-");
        let mail = &arrival.id;
        match outcome {
            Bounced::Ended { status, queue_id } => tracing::warn!(
                %probe, %class, %id, seq, %status, queue_id = queue_id.as_deref().unwrap_or("-"),
                %diagnostic, %mail, "canary bounced: the receiving side rejected it"
            ),
            Bounced::Delayed => tracing::info!(
                %probe, %class, %id, seq, status = report.status.as_deref().unwrap_or("-"),
                %diagnostic, %mail, "delay notice for a canary in flight"
            ),
            Bounced::AfterLoss => tracing::info!(
                %probe, %class, %id, seq, status = report.status.as_deref().unwrap_or("-"),
                %diagnostic, %mail, "bounce for a canary already counted lost"
            ),
            Bounced::Nothing => tracing::debug!(
                %probe, %class, %id, %mail, "bounce already counted or for a settled canary"
            ),
        }
    }
}
