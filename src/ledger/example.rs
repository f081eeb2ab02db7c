//! Books of a typical probe, built through the same operations the probe uses: what the
//! `/metrics` tests pin their series counts on and what the render benchmark renders 1,000 of.

use std::time::Duration;

use super::{Found, Ledger};
use crate::canary::Canary;
use crate::delay::Breakdown;

/// Books of `classes` classes (`class0`, …) sending, one delivery each through `hops` hops
/// (server timestamp and clock skew known) and `in_flight` canaries of each class in flight.
pub fn example_books(classes: usize, hops: usize, in_flight: usize) -> Ledger {
    let mut l = Ledger::default();
    for c in 0..classes {
        let class = format!("class{c}");
        l.open_class(&class);
        let id = format!("{class}-delivered");
        l.begin_send(&id, &class, 0);
        l.accepted(&id, 100, None, 0.1);
        let canary = Canary {
            id: id.clone(),
            probe: "p".into(),
            class: class.clone(),
            seq: 1,
            sent_ms: 0,
            agent: "a".into(),
        };
        let found = Found {
            folder: "INBOX",
            mail: &id,
            seen_ms: 5_000,
            server_ms: Some(4_000),
            forget_after: Duration::from_secs(3600),
            now_ms: 5_000,
        };
        let servers = Breakdown {
            server_delay_s: Some(4.0),
            hops: vec![0.5; hops],
            clock_skew_s: Some(0.1),
        };
        l.arrived(&canary, found, &servers);
        for i in 0..in_flight {
            l.begin_send(&format!("{class}-{i}"), &class, 1_000 + i as u64);
        }
    }
    l
}
