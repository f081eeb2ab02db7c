use super::*;

const HOUR_MS: u64 = 3_600_000;
/// A time well past the epoch, at the start of a slot: 2026-11-30 00:00 UTC.
const T0: u64 = 1_795_996_800_000;

/// Delays spread evenly on a log scale between `low` and `high`, `n` of them.
fn log_spread(low: f64, high: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| low * (high / low).powf(i as f64 / (n - 1) as f64))
        .collect()
}

/// The exact `q` quantile (rank `ceil(q n)`) of `values`.
fn exact(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn codes_keep_delays_to_a_few_hundredths_of_a_per_cent() {
    for d in [0.002, 0.4, 1.0, 3.7, 59.9, 3600.0, 172_800.0, 3e6] {
        let back = decode(encode(d));
        assert!((back / d - 1.0).abs() < 0.00035, "{d} came back as {back}");
    }
    assert_eq!(decode(encode(-2.0)), FLOOR_S, "clock skew is the floor");
    assert_eq!(decode(encode(f64::NAN)), FLOOR_S);
}

#[test]
fn a_slot_keeps_count_extremes_and_an_exact_geometric_mean() {
    let mut h = DelayHistory::default();
    for d in [1.0, 4.0, 16.0] {
        h.record(T0 + 1_000, d);
    }
    let points = h.points(T0 + 2_000);
    assert_eq!(points.len(), 1);
    let p = points[0];
    assert_eq!((p.start, p.count), (T0 / 1000, 3));
    assert!((p.min_seconds - 1.0).abs() < 1e-3 && (p.max_seconds - 16.0).abs() < 1e-2);
    assert!(
        (p.mean_seconds - 4.0).abs() < 4.0 * 0.00035,
        "{}",
        p.mean_seconds
    );
    // Thousands of deliveries do not drift the mean.
    let mut h = DelayHistory::default();
    for i in 0..10_000 {
        h.record(T0, if i % 2 == 0 { 2.0 } else { 8.0 });
    }
    let mean = h.points(T0)[0].mean_seconds;
    assert!((mean - 4.0).abs() < 4.0 * 0.00035, "{mean}");
}

#[test]
fn data_older_than_48_hours_is_dropped_and_the_slots_never_exceed_96() {
    let mut h = DelayHistory::default();
    // One delivery every 10 minutes for 5 days.
    let mut t = T0;
    while t < T0 + 120 * HOUR_MS {
        h.record(t, 2.0);
        t += 600_000;
    }
    let now = t - 1;
    let points = h.points(now);
    assert_eq!(points.len(), SLOTS, "a full window, no more");
    assert!(points.iter().all(|p| p.count == 3));
    let oldest = points[0].start * 1000;
    assert!(
        now - oldest <= 48 * HOUR_MS,
        "{} h old",
        (now - oldest) / HOUR_MS
    );
    // As time passes without deliveries, the window empties.
    assert_eq!(h.points(now + 24 * HOUR_MS).len(), SLOTS / 2);
    assert!(h.points(now + 48 * HOUR_MS).is_empty());
    assert_eq!(
        h.quantile(now + 24 * HOUR_MS, 0.5),
        None,
        "nothing in the last 24 h"
    );
    // A delivery 3 days late for the ring changes nothing.
    let before = h.clone();
    assert!(!h.record(now - 72 * HOUR_MS, 999.0));
    assert_eq!(h, before);
    // The size is fixed whatever was recorded.
    assert_eq!(std::mem::size_of::<DelayHistory>(), 1544);
    assert_eq!(h.to_bytes().len(), 1541);
}

#[test]
fn a_slot_coming_round_again_starts_empty() {
    let mut h = DelayHistory::default();
    h.record(T0, 600.0);
    // 48 h later the same ring position is reused for a new half hour.
    h.record(T0 + 48 * HOUR_MS, 2.0);
    let points = h.points(T0 + 48 * HOUR_MS);
    assert_eq!(points.len(), 1);
    assert!((points[0].max_seconds - 2.0).abs() < 0.01);
    let median = h.quantile(T0 + 48 * HOUR_MS, 0.5).unwrap();
    assert!((median.estimate - 2.0).abs() < 0.01, "{median:?}");
}

#[test]
fn quantiles_of_steady_traffic_are_within_a_few_per_cent() {
    let mut h = DelayHistory::default();
    let mut all = Vec::new();
    // A day of canaries every minute, 2–4 s each, in a pattern repeating every 30 minutes.
    let delays = log_spread(2.0, 4.0, 30);
    for minute in 0..24 * 60 {
        let d = delays[(minute * 7) % 30];
        h.record(T0 + minute as u64 * 60_000, d);
        all.push(d);
    }
    let now = T0 + 24 * HOUR_MS - 1;
    for q in [0.5, 0.95] {
        let got = h.quantile(now, q).unwrap();
        let want = exact(&all, q);
        assert!(
            got.low <= want * 1.0004 && want <= got.high * 1.0004,
            "{q}: {got:?} {want}"
        );
        assert!(
            (got.estimate / want - 1.0).abs() < 0.05,
            "{q}: {got:?} vs {want}"
        );
    }
}

#[test]
fn the_bracket_always_holds_the_true_quantile() {
    // Mixed traffic: seconds mostly, with held mail of minutes to hours in some hours.
    let mut seed = 12345u64;
    let mut random = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut h = DelayHistory::default();
    let mut all = Vec::new();
    for minute in 0..24 * 60 {
        let d = match random() {
            r if r < 0.8 => 1.0 + 4.0 * random(),
            r if r < 0.95 => 60.0 * (1.0 + 20.0 * random()),
            _ => 3600.0 * (1.0 + 3.0 * random()),
        };
        h.record(T0 + minute as u64 * 60_000, d);
        all.push(d);
    }
    let now = T0 + 24 * HOUR_MS - 1;
    for q in [0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0] {
        let got = h.quantile(now, q).unwrap();
        let want = exact(&all, q);
        assert!(got.low <= want * 1.0004, "{q}: {got:?} above {want}");
        assert!(want <= got.high * 1.0004, "{q}: {got:?} below {want}");
        assert!(
            got.low <= got.estimate && got.estimate <= got.high,
            "{got:?}"
        );
    }
}

#[test]
fn bimodal_delays_are_placed_by_the_buckets_not_averaged() {
    // Every other canary greylisted for 10 minutes: every slot spans 2 s to 600 s.
    let mut h = DelayHistory::default();
    for minute in 0..600 {
        let d = if minute % 5 == 0 { 600.0 } else { 2.0 };
        h.record(T0 + minute * 60_000, d);
    }
    let now = T0 + 10 * HOUR_MS;
    let median = h.quantile(now, 0.5).unwrap();
    assert!(median.low >= 1.999 && median.high <= 2.001, "{median:?}");
    let p95 = h.quantile(now, 0.95).unwrap();
    assert!(p95.low >= 300.0 && p95.high <= 600.3, "{p95:?}");
}

#[test]
fn only_the_last_24_hours_count_for_the_quantiles() {
    let mut h = DelayHistory::default();
    for minute in 0..60 {
        h.record(T0 + minute * 60_000, 1000.0);
    }
    for minute in 0..60 {
        h.record(T0 + 25 * HOUR_MS + minute * 60_000, 3.0);
    }
    let now = T0 + 26 * HOUR_MS;
    let median = h.quantile(now, 1.0).unwrap();
    assert!(
        median.high < 3.01,
        "the 1000 s of a day ago are out: {median:?}"
    );
    assert_eq!(h.points(now).len(), 4, "but still on the chart");
}

#[test]
fn a_history_is_written_once_per_half_hour_and_when_unsaved_at_the_end() {
    let mut l = Ledger::default();
    assert!(l.record_delay("bulk", T0, 1.0).is_some(), "the first");
    assert!(l.record_delay("bulk", T0 + 60_000, 1.0).is_none());
    assert!(l.record_delay("bulk", T0 + 1_700_000, 1.0).is_none());
    assert!(
        l.record_delay("bulk", T0 + SLOT_MS, 1.0).is_some(),
        "a new half hour"
    );
    assert!(l.unsaved_history().is_empty(), "all written");
    assert!(l.record_delay("bulk", T0 + SLOT_MS + 1, 1.0).is_none());
    let writes = l.unsaved_history();
    assert_eq!(writes.len(), 1);
    assert!(l.unsaved_history().is_empty(), "once");
    let mut replayed = Ledger::default();
    for w in writes {
        replayed.replay(w);
    }
    assert_eq!(replayed.history, l.history);
    assert_eq!(replayed.history["bulk"].points(T0 + SLOT_MS)[1].count, 2);
}

#[test]
fn the_stored_form_round_trips_and_anything_else_loads_empty() {
    let mut h = DelayHistory::default();
    for (i, d) in log_spread(0.5, 7200.0, 500).into_iter().enumerate() {
        h.record(T0 + i as u64 * 300_000, d);
    }
    let bytes = h.to_bytes();
    assert_eq!(DelayHistory::from_bytes(&bytes), Some(h.clone()));
    assert_eq!(DelayHistory::from_stored(&bytes), h);
    assert_eq!(DelayHistory::from_bytes(&bytes[..100]), None);
    let mut other_version = bytes.clone();
    other_version[0] = 2;
    assert_eq!(
        DelayHistory::from_stored(&other_version),
        DelayHistory::default()
    );
    assert_eq!(DelayHistory::from_stored(b"{}"), DelayHistory::default());
}

#[test]
fn books_without_history_load_and_gain_one_with_the_next_delivery() {
    // Books of a version before the history: every record but this one.
    let mut old = Ledger::default();
    old.open_class("bulk");
    let mut loaded = Ledger::default();
    for w in old.full_writes() {
        loaded.replay(w);
    }
    assert!(loaded.history.is_empty());
    assert!(loaded.compact_loaded().is_empty(), "no rewrite needed");
    let (_, w) = loaded.begin_send("A", "bulk", T0);
    drop(w);
    let canary = crate::canary::Canary {
        id: "A".into(),
        probe: "p".into(),
        class: "bulk".into(),
        seq: 1,
        sent_ms: T0,
        agent: "a".into(),
    };
    let (_, writes) = loaded.arrived_at(&canary, "INBOX", "INBOX/1", T0 + 2_500);
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::History(class, _) if class == "bulk"))
    );
    let median = loaded.history["bulk"].quantile(T0 + 3_000, 0.5).unwrap();
    assert!((median.estimate - 2.5).abs() < 0.01, "{median:?}");
}
