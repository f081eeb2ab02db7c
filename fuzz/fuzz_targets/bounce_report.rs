//! The bounce reader fed arbitrary mail (anyone can send one): no panic, a diagnostic that is
//! one bounded line of printable text, and a status that is a well-formed RFC 3463 code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcanary::bounce::{DIAGNOSTIC_MAX, enhanced_status, read};

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into a head and the start of a body.
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len().saturating_sub(1));
    let data = data.get(1..).unwrap_or_default();
    let (head, body) = data.split_at(split.min(data.len()));
    if let Some(report) = read(head, body) {
        if let Some(d) = &report.diagnostic {
            assert!(d.chars().count() <= DIAGNOSTIC_MAX + 1);
            assert!(!d.chars().any(char::is_control));
        }
        if let Some(s) = &report.status {
            assert_eq!(enhanced_status(s).as_deref(), Some(s.as_str()));
        }
    }
});
