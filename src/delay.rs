//! Delay arithmetic and the `Received:` chain. Pure: `now` and every timestamp are parameters,
//! so loss, age and hop delays are testable without sleeping or a mail server.
//!
//! Times are Unix milliseconds. Differences are signed on purpose: a negative delay means two
//! clocks disagree, and that must be visible as skew, not hidden by clamping to zero.

use mail_parser::MessageParser;

/// Signed difference `later − earlier` in seconds.
pub fn seconds_between(earlier_ms: u64, later_ms: u64) -> f64 {
    (later_ms as i128 - earlier_ms as i128) as f64 / 1000.0
}

/// Delivery delay of a canary: when the agent saw it minus when it was sent.
pub fn delivery_delay(sent_ms: u64, seen_ms: u64) -> f64 {
    seconds_between(sent_ms, seen_ms)
}

/// Age of the oldest canary still in flight, 0 when none is.
///
/// This is the number that grows *during* an incident, long before the late mail lands. A
/// canary "sent" in the future (clock stepped back) counts as age 0 rather than negative, since
/// an age below zero has no meaning for "how late is mail now".
pub fn oldest_age(sent_ms: impl IntoIterator<Item = u64>, now_ms: u64) -> f64 {
    sent_ms
        .into_iter()
        .min()
        .map_or(0.0, |oldest| seconds_between(oldest, now_ms).max(0.0))
}

/// One `Received:` line: who stamped it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The host that added the line (`by`), when named.
    pub by: Option<String>,
    /// When it says it received the mail, Unix ms (whole seconds on the wire).
    pub date_ms: Option<u64>,
}

/// The `Received:` chain of a header block, oldest hop first (the reverse of header order: each
/// relay prepends its line). A line whose date cannot be read stays in the chain with no date.
pub fn received_chain(head: &[u8]) -> Vec<Hop> {
    let Some(message) = MessageParser::new().parse_headers(head) else {
        return Vec::new();
    };
    let mut hops: Vec<Hop> = message
        .received_all()
        .map(|r| Hop {
            by: r.by().map(|h| h.to_string()),
            date_ms: r
                .date()
                .and_then(|d| u64::try_from(d.to_timestamp()).ok())
                .map(|s| s * 1000),
        })
        .collect();
    hops.reverse();
    hops
}

/// Where a canary's time went, from the servers' own clocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breakdown {
    /// Receiving server's timestamp (IMAP INTERNALDATE, else the newest `Received:` date)
    /// minus `sent`. Independent of how often the mailbox is polled.
    pub server_delay_s: Option<f64>,
    /// Per hop, oldest first: hop 0 is sender → first server, hop n is the step into the
    /// mailbox when the server's own timestamp is known. Negative values are kept: they are
    /// clock skew, not time travel.
    pub hops: Vec<f64>,
    /// The first server's clock minus the sender's, estimated from the first hop's date.
    pub clock_skew_s: Option<f64>,
}

/// Most `hop` label values a class can have: hops "0" to "6" as they are, and "7" for the rest
/// of the chain. Every `Received:` line would otherwise become a series of its own, and the
/// lines are written by whoever relays the mail, an attacker included.
pub const HOP_LABELS: usize = 8;

/// Folds a chain of hop delays into at most `labels` values: the first `labels - 1` as they
/// are, the last one the sum of all the deeper hops (from the stamp of hop `labels - 1` to the
/// last stamp). Summing, not picking one, keeps the folded hops adding up to the same total, so
/// the last label still answers "how long after that point did the mail take".
pub fn fold_hops(hops: &[f64], labels: usize) -> Vec<f64> {
    if hops.len() <= labels || labels == 0 {
        return hops[..hops.len().min(labels)].to_vec();
    }
    let (kept, deeper) = hops.split_at(labels - 1);
    let mut folded = kept.to_vec();
    folded.push(deeper.iter().sum());
    folded
}

/// Half a second: `Received:` dates and INTERNALDATE are truncated to the second, so the middle
/// of that second is the unbiased estimate of when the hop really happened. Without it every
/// healthy first hop would read about half a second negative, indistinguishable from skew.
const HALF_SECOND_MS: u64 = 500;

/// Breaks a canary's delay down by hop. `server_ms` is the mailbox's own timestamp (whole
/// seconds, like the `Received:` dates) if the protocol has one.
pub fn breakdown(sent_ms: u64, chain: &[Hop], server_ms: Option<u64>) -> Breakdown {
    let mut stamps: Vec<u64> = chain.iter().filter_map(|h| h.date_ms).collect();
    let newest_received = stamps.last().copied();
    stamps.extend(server_ms);
    let mut hops = Vec::with_capacity(stamps.len());
    let mut previous = sent_ms;
    for stamp in stamps.iter().map(|s| s + HALF_SECOND_MS) {
        hops.push(seconds_between(previous, stamp));
        previous = stamp;
    }
    let server = server_ms.or(newest_received);
    Breakdown {
        server_delay_s: server.map(|s| seconds_between(sent_ms, s + HALF_SECOND_MS)),
        hops,
        // On a healthy path the first hop takes milliseconds, so what it shows beyond the
        // stamps' half-second resolution is the difference between the two clocks.
        clock_skew_s: chain
            .iter()
            .find_map(|h| h.date_ms)
            .map(|first| seconds_between(sent_ms, first + HALF_SECOND_MS)),
    }
}

#[cfg(test)]
mod tests;
