//! Books written by older versions load into today's shape, and are counted once.

use super::*;

/// A class record as books kept it while SMTP durations were per class: `n` transactions of
/// 0.2 s.
fn class_with_smtp(n: u64) -> Write {
    let stored = format!(
        r#"{{"last_seq_sent":{n},"highest_seq_seen":0,"sent":{n},"send_failures":{{}},
        "delivered":{{}},"lost":0,"late":0,"duplicates":0,"sequence_gaps":0,"forged":0,
        "smtp_duration":{{"counts":[0,0,{n},0,0,0,0,0,0,0,0,0],"sum":{sum}}},
        "delivery_delay":{{"counts":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"sum":0.0}},
        "last_delay_s":null,"last_delivery_ms":null}}"#,
        sum = n as f64 * 0.2
    );
    let tally: ClassTally = serde_json::from_str(&stored).expect("old class record loads");
    Write::Class(format!("class{n}"), Box::new(tally))
}

#[test]
fn per_class_smtp_histograms_fold_into_the_probe_once() {
    let mut loaded = Ledger::default();
    loaded.replay(class_with_smtp(2));
    loaded.replay(class_with_smtp(3));
    // The probe's record comes after the classes' (the store's table order) and replaces its
    // totals; what the classes held must survive it.
    loaded.replay(Write::Probe(ProbeTally {
        mails_skipped: 1,
        ..ProbeTally::default()
    }));
    let writes = loaded.compact_loaded();
    assert_eq!(
        writes.first(),
        Some(&Write::Reset),
        "the store is rewritten"
    );
    let smtp = &loaded.probe.smtp_duration;
    assert_eq!((smtp.counts[2], smtp.count()), (5, 5));
    assert!((smtp.sum - 1.0).abs() < 1e-9);
    assert_eq!(loaded.probe.mails_skipped, 1);

    let mut next_start = Ledger::default();
    for w in writes {
        next_start.replay(w);
    }
    assert!(next_start.compact_loaded().is_empty(), "folded once");
    assert_eq!(next_start.probe.smtp_duration.count(), 5, "not twice");
    let rewritten = serde_json::to_string(&next_start.classes["class2"]).expect("json");
    assert!(
        rewritten.contains(r#""smtp_duration":{"counts":[0,0,0,0,0,0,0,0,0,0,0,0],"sum":0.0}"#),
        "written empty, for an agent rolled back to the version that requires it: {rewritten}"
    );
}

#[test]
fn hop_histograms_stored_over_the_delay_buckets_are_rebucketed_on_load() {
    let mut old = Histogram::new(&DELAY_BUCKETS);
    for v in [0.5, 2.0, 45.0, 100_000.0] {
        old.observe(&DELAY_BUCKETS, v);
    }
    let mut loaded = Ledger::default();
    loaded.replay(Write::Probe(ProbeTally {
        hop_delay: vec![old],
        ..ProbeTally::default()
    }));
    let hop = &loaded.probe.hop_delay[0];
    assert_eq!(hop.counts, [1, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
    assert!(
        loaded.compact_loaded().is_empty(),
        "re-bucketing is idempotent: no rewrite needed"
    );
}
