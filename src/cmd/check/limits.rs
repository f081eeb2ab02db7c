//! Providers' daily sending limits, so `check` can warn before a probe's schedule gets its
//! account blocked: a provider that sees too many messages stops the account sending for up
//! to a day, which the monitor would then report as an outage it caused itself.
//!
//! The figures are the providers' documented limits for one account (each canary has one
//! recipient, so messages and recipients count alike), taken conservatively: where one host
//! serves plans with different limits, the lowest. They are only a guide; providers change
//! them without notice and lower them for new accounts.

use std::time::Duration;

/// A provider's documented daily sending limit for one account on its submission host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendingLimit {
    /// The provider, as the warning names it.
    pub provider: &'static str,
    /// Messages a day the warning compares against.
    pub per_day: u32,
    /// Whether the provider does not publish one exact figure (the warning says "about").
    pub approximate: bool,
    /// Other plans served by the same host, appended to the warning.
    pub note: Option<&'static str>,
}

const fn limit(provider: &'static str, per_day: u32) -> SendingLimit {
    SendingLimit {
        provider,
        per_day,
        approximate: false,
        note: None,
    }
}

/// Submission hosts and their providers' limits. `smtp.gmail.com` serves consumer Gmail and
/// Google Workspace alike, so it warns with the consumer figure.
const LIMITS: [(&str, SendingLimit); 6] = [
    (
        "smtp.gmail.com",
        SendingLimit {
            note: Some("Google Workspace accounts: 2,000 a day"),
            ..limit("Gmail", 500)
        },
    ),
    (
        "smtp.office365.com",
        SendingLimit {
            note: Some("also 30 messages a minute"),
            ..limit("Exchange Online", 10_000)
        },
    ),
    (
        "smtp-mail.outlook.com",
        SendingLimit {
            note: Some("Microsoft 365 subscribers: 5,000 a day; Exchange Online: 10,000"),
            ..limit("Outlook.com", 300)
        },
    ),
    ("smtp.mail.yahoo.com", limit("Yahoo Mail", 500)),
    ("smtp.mail.me.com", limit("iCloud Mail", 1_000)),
    (
        "smtp.fastmail.com",
        SendingLimit {
            approximate: true,
            ..limit("Fastmail", 4_000)
        },
    ),
];

/// The limit of the provider whose submission host is `host`, if it is one we know. The
/// match is exact (ignoring case and a trailing root dot): a host that merely contains a
/// provider's name is somebody else's server.
pub fn limit_for(host: &str) -> Option<SendingLimit> {
    let host = host.strip_suffix('.').unwrap_or(host);
    LIMITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(host))
        .map(|&(_, limit)| limit)
}

/// Canaries a probe sends a day: one per class every `interval`.
pub fn per_day(classes: usize, interval: Duration) -> f64 {
    classes as f64 * 86_400.0 / interval.as_secs_f64()
}

/// The warning for a probe whose schedule would exceed the daily limit of the provider of
/// its SMTP `host`; `None` when it stays within it or the host is not a known provider's.
pub fn warning(probe: &str, host: &str, classes: usize, interval: Duration) -> Option<String> {
    let limit = limit_for(host)?;
    let rate = per_day(classes, interval);
    if classes == 0 || rate <= f64::from(limit.per_day) {
        return None;
    }
    let about = if limit.approximate { "about " } else { "" };
    let note = limit.note.map(|n| format!(" ({n})")).unwrap_or_default();
    let safe = suggested_interval(classes, limit.per_day);
    let plural = if classes == 1 { "" } else { "es" };
    Some(format!(
        "probe {probe} sends {} canaries a day through {host} ({classes} class{plural} every {}), \
         over the {} limit of {about}{} a day{note}; the provider may stop the account sending \
         for a day. interval = \"{}\" ({} a day) stays under half the limit",
        thousands(rate.round() as u64),
        humantime::format_duration(interval),
        limit.provider,
        thousands(u64::from(limit.per_day)),
        humantime::format_duration(safe),
        thousands(per_day(classes, safe).round() as u64),
    ))
}

/// The shortest interval at which `classes` canaries a round stay at or under half of
/// `per_day` (room for the account's other mail and for limits lowered without notice),
/// rounded up to a value a person would write: whole seconds, minutes, or five minutes.
fn suggested_interval(classes: usize, per_day: u32) -> Duration {
    let per_day = u64::from(per_day.max(2));
    let classes = classes as u64;
    let secs = (2 * classes * 86_400).div_ceil(per_day);
    let step = match secs {
        0..60 => 1,
        60..300 => 60,
        _ => 300,
    };
    Duration::from_secs(secs.div_ceil(step) * step)
}

/// `4320` as `4,320`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_default_schedule_is_over_gmails_limit() {
        // 60 s × 3 classes = 4,320 a day.
        assert_eq!(per_day(3, MINUTE), 4_320.0);
        let text = warning("p", "smtp.gmail.com", 3, MINUTE).expect("a warning");
        for part in [
            "probe p ",
            "smtp.gmail.com",
            "4,320 canaries a day",
            "3 classes every 1m",
            "limit of 500 a day",
            "Google Workspace accounts: 2,000",
            // 3 × 86,400 / 250 = 1,036.8 s, rounded up to 20 minutes: 216 a day.
            "interval = \"20m\" (216 a day)",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }

    #[test]
    fn half_hourly_rounds_stay_under_every_limit() {
        // 30 min × 3 classes = 144 a day.
        for (host, _) in LIMITS {
            assert_eq!(warning("p", host, 3, 30 * MINUTE), None, "{host}");
        }
    }

    #[test]
    fn unknown_hosts_never_warn() {
        for host in ["smtp.example.org", "127.0.0.1", "localhost", ""] {
            assert_eq!(
                warning("p", host, 3, Duration::from_secs(1)),
                None,
                "{host}"
            );
        }
    }

    #[test]
    fn hosts_match_exactly_ignoring_case() {
        assert!(limit_for("SMTP.Gmail.COM").is_some());
        assert!(limit_for("smtp.gmail.com.").is_some());
        for host in [
            "evil-smtp.gmail.com.example",
            "smtp.gmail.com.example",
            "xsmtp.gmail.com",
            "gmail.com",
            "smtp.gmail.com..",
        ] {
            assert_eq!(limit_for(host), None, "{host}");
        }
    }

    #[test]
    fn each_provider_has_its_figure() {
        let day = |host| limit_for(host).map(|l| l.per_day);
        assert_eq!(day("smtp.gmail.com"), Some(500));
        assert_eq!(day("smtp.office365.com"), Some(10_000));
        assert_eq!(day("smtp-mail.outlook.com"), Some(300));
        assert_eq!(day("smtp.mail.yahoo.com"), Some(500));
        assert_eq!(day("smtp.mail.me.com"), Some(1_000));
        assert_eq!(day("smtp.fastmail.com"), Some(4_000));
        let fastmail = warning("p", "smtp.fastmail.com", 3, MINUTE).expect("4,320 > 4,000");
        assert!(
            fastmail.contains("limit of about 4,000 a day"),
            "{fastmail}"
        );
    }

    #[test]
    fn the_limit_itself_is_allowed() {
        // 500 a day exactly: one canary every 172.8 s.
        assert_eq!(
            warning("p", "smtp.gmail.com", 1, Duration::from_millis(172_800)),
            None
        );
        let over = warning("p", "smtp.gmail.com", 1, Duration::from_millis(172_799));
        assert!(over.is_some_and(|w| w.contains("(1 class every 2m 52s 799ms)")));
    }

    #[test]
    fn the_suggested_interval_stays_under_half_the_limit() {
        for (host, limit) in LIMITS {
            for classes in 1..=12 {
                let rate = per_day(classes, suggested_interval(classes, limit.per_day));
                assert!(
                    rate <= f64::from(limit.per_day) / 2.0,
                    "{host} {classes}: {rate}"
                );
            }
        }
        // Rounded up to whole seconds, minutes, or five minutes, and no further.
        assert_eq!(suggested_interval(3, 10_000), Duration::from_secs(52));
        assert_eq!(suggested_interval(3, 4_000), 3 * MINUTE);
        assert_eq!(suggested_interval(3, 1_000), 10 * MINUTE);
        assert_eq!(suggested_interval(3, 300), 30 * MINUTE);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(4_320), "4,320");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
