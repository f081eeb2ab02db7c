//! Delay arithmetic. Pure: `now` is always a parameter, so loss and age are testable without
//! sleeping.
//!
//! Times are Unix milliseconds. Differences are signed on purpose: a negative delivery delay
//! means the sender's and the receiver's clocks disagree, and that must be visible as skew, not
//! hidden by clamping to zero.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_signed() {
        assert_eq!(delivery_delay(1_000, 3_500), 2.5);
        assert_eq!(delivery_delay(3_500, 1_000), -2.5);
        assert_eq!(delivery_delay(u64::MAX, 0), -(u64::MAX as f64) / 1000.0);
    }

    #[test]
    fn oldest_age_uses_the_oldest_canary() {
        assert_eq!(oldest_age([], 10_000), 0.0);
        assert_eq!(oldest_age([9_000, 4_000, 8_000], 10_000), 6.0);
        assert_eq!(oldest_age([12_000], 10_000), 0.0);
    }
}
