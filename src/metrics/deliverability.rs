//! The series of what the receiving side wrote about deliveries (authentication results, spam
//! verdicts) and of the submissions' TLS.
//!
//! Unlike the delivery counters, these exist only where there is something to say: a probe
//! without `trusted_authserv_ids` (or whose receiver writes no such headers) and a probe that
//! submits without TLS have none, so they cost nothing at 1,000 probes. Where a method or filter
//! has been seen for a class, the series an alert compares (`pass` and `fail`; `spam` and `ham`)
//! exist from that first delivery on, at 0, so `increase()` sees the first failure.

use crate::verdict::{AuthMethod, AuthResult, SpamFilter};

use super::families::At;
use super::text::Text;

/// `mailcanary_auth_results_total{probe, class, method, result}`.
pub(super) fn auth_results(t: &mut Text, at: &At<'_>) {
    // Most probes have none: no key is spelled for them on a scrape.
    let seen = at
        .ledger
        .classes
        .iter()
        .filter(|(_, c)| !c.auth_results.is_empty());
    for (class, c) in seen {
        for method in AuthMethod::ALL.map(AuthMethod::as_str) {
            let count = |result: &str| c.auth_results.get(&format!("{method}/{result}")).copied();
            if !AuthResult::ALL.iter().any(|r| count(r.as_str()).is_some()) {
                continue;
            }
            for result in AuthResult::ALL {
                let n = count(result.as_str());
                if n.is_some() || matches!(result, AuthResult::Pass | AuthResult::Fail) {
                    let labels = [
                        ("probe", at.name),
                        ("class", class.as_str()),
                        ("method", method),
                        ("result", result.as_str()),
                    ];
                    t.counter(&labels, n.unwrap_or(0));
                }
            }
        }
    }
}

/// `mailcanary_spam_verdicts_total{probe, class, filter, verdict}`.
pub(super) fn spam_verdicts(t: &mut Text, at: &At<'_>) {
    let seen = at
        .ledger
        .classes
        .iter()
        .filter(|(_, c)| !c.spam_verdicts.is_empty());
    for (class, c) in seen {
        for filter in SpamFilter::ALL.map(SpamFilter::as_str) {
            let count =
                |verdict: &str| c.spam_verdicts.get(&format!("{filter}/{verdict}")).copied();
            if count("spam").is_none() && count("ham").is_none() {
                continue;
            }
            for verdict in ["spam", "ham"] {
                let labels = [
                    ("probe", at.name),
                    ("class", class.as_str()),
                    ("filter", filter),
                    ("verdict", verdict),
                ];
                t.counter(&labels, count(verdict).unwrap_or(0));
            }
        }
    }
}

/// `mailcanary_spam_score{probe, class, filter}`: the latest delivery's score.
pub(super) fn spam_scores(t: &mut Text, at: &At<'_>) {
    let seen = at
        .ledger
        .classes
        .iter()
        .filter(|(_, c)| !c.spam_scores.is_empty());
    for (class, c) in seen {
        for filter in SpamFilter::ALL.map(SpamFilter::as_str) {
            if let Some(score) = c.spam_scores.get(filter) {
                let labels = [
                    ("probe", at.name),
                    ("class", class.as_str()),
                    ("filter", filter),
                ];
                t.gauge(&labels, *score);
            }
        }
    }
}

/// `mailcanary_smtp_tls_info{probe, version, cipher}`: 1 for the latest accepted submission's
/// session.
pub(super) fn smtp_tls(t: &mut Text, at: &At<'_>) {
    if let Some(tls) = &at.ledger.probe.smtp_tls {
        let labels = [
            ("probe", at.name),
            ("version", tls.version.as_str()),
            ("cipher", tls.cipher.as_str()),
        ];
        t.gauge(&labels, 1.0);
    }
}

/// `mailcanary_smtp_certificate_expiry_timestamp_seconds{probe}`.
pub(super) fn certificate_expiry(t: &mut Text, at: &At<'_>) {
    let expires = at.ledger.probe.smtp_tls.as_ref();
    if let Some(s) = expires.and_then(|tls| tls.certificate_expires_s) {
        t.gauge(&[("probe", at.name)], s as f64);
    }
}
