//! What the receiving side wrote about this probe's deliveries and what its submissions' TLS
//! settled: counted into the books like every other total, so it survives restarts.

use super::{Ledger, Write};
use crate::send::SessionTls;
use crate::verdict::Verdicts;

impl Ledger {
    /// A delivery of `class` carried these results of the receiving side's checks.
    pub fn judged_by_receiver(&mut self, class: &str, verdicts: &Verdicts) -> Vec<Write> {
        if verdicts.auth.is_empty() && verdicts.spam.is_empty() {
            return Vec::new();
        }
        let tally = self.tally(class);
        for (method, result) in &verdicts.auth {
            let key = format!("{}/{}", method.as_str(), result.as_str());
            *tally.auth_results.entry(key).or_default() += 1;
        }
        for v in &verdicts.spam {
            let verdict = if v.spam { "spam" } else { "ham" };
            let key = format!("{}/{verdict}", v.filter.as_str());
            *tally.spam_verdicts.entry(key).or_default() += 1;
            if let Some(score) = v.score {
                tally
                    .spam_scores
                    .insert(v.filter.as_str().to_string(), score);
            }
        }
        vec![self.class_write(class)]
    }

    /// The latest accepted submission ran over this TLS session. Written with the
    /// acceptance's own write of the probe's books, so it costs no extra commit.
    pub fn submitted_over(&mut self, tls: Option<SessionTls>) {
        if tls.is_some() {
            self.probe.smtp_tls = tls;
        }
    }
}
