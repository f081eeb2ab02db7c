use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn canary(id: &str, class: &str, seq: u64, sent_ms: u64) -> Canary {
    Canary {
        id: id.into(),
        probe: "p".into(),
        class: class.into(),
        seq,
        sent_ms,
        agent: "a".into(),
    }
}

/// Sends a canary through the books as the probe would; returns its seq.
fn send(l: &mut Ledger, id: &str, class: &str, sent_ms: u64) -> u64 {
    let (seq, _) = l.begin_send(id, class, sent_ms);
    l.accepted(id, sent_ms + 50, Some("Q1".into()), 0.05);
    seq
}

/// A ledger rebuilt from every write the operations produced.
struct Replayed {
    live: Ledger,
    replayed: Ledger,
}

impl Replayed {
    fn new() -> Replayed {
        Replayed {
            live: Ledger::default(),
            replayed: Ledger::default(),
        }
    }

    fn apply(&mut self, writes: Vec<Write>) {
        for w in writes {
            self.replayed.replay(w);
        }
    }
}

#[test]
fn sent_canary_is_in_flight_then_delivered_on_time() {
    let mut l = Ledger::default();
    assert_eq!(send(&mut l, "A", "bulk", 1_000), 1);
    assert_eq!(send(&mut l, "B", "bulk", 2_000), 2);
    assert_eq!(l.oldest_age("bulk", 11_000), 10.0);
    let (arrival, _) = l.arrived_at(&canary("A", "bulk", 1, 1_000), "INBOX", "INBOX/1.1", 4_500);
    assert_eq!(arrival, Delivery::OnTime { delay_s: 3.5 });
    let t = &l.classes["bulk"];
    assert_eq!(
        (t.sent, t.delivered["INBOX"], t.delivery_delay.count()),
        (2, 1, 1)
    );
    assert_eq!(t.last_delay_s, Some(3.5));
    assert_eq!(t.smtp_duration.count(), 2);
    assert_eq!(l.oldest_age("bulk", 11_000), 9.0);
}

#[test]
fn every_change_replays_to_the_same_books() {
    let mut r = Replayed::new();
    let w = r.live.open_class("interpersonal").into_iter().collect();
    r.apply(w);
    for (i, id) in ["A", "B", "C", "D"].iter().enumerate() {
        let (_, w) = r.live.begin_send(id, "interpersonal", 1_000 * i as u64);
        r.apply(w);
        let w = r.live.accepted(id, 1_000 * i as u64 + 10, None, 0.2);
        r.apply(w);
    }
    let (_, w) = r.live.begin_send("E", "interpersonal", 9_000);
    r.apply(w);
    let w = r.live.send_failed("E", SendStage::Auth);
    r.apply(w);
    let (_, w) = r
        .live
        .arrived_at(&canary("A", "interpersonal", 1, 0), "INBOX", "m1", 500);
    r.apply(w);
    let (_, w) = r.live.expire(
        5_000 + HOUR.as_millis() as u64 / 2,
        |_| Duration::from_secs(1800),
        HOUR,
    );
    r.apply(w);
    let (_, w) = r.live.arrived_at(
        &canary("B", "interpersonal", 2, 1_000),
        "Junk",
        "m2",
        3_000_000,
    );
    r.apply(w);
    let w = r.live.forged("interpersonal", "INBOX/9.1", 700);
    r.apply(w);
    let w = r.live.forged("made-up", "INBOX/9.2", 700);
    r.apply(w);
    let w = r.live.mailbox_error(MailboxStage::Auth);
    r.apply(w);
    let (_, w) = r.live.expire(100 * HOUR.as_millis() as u64, |_| HOUR, HOUR);
    r.apply(w);
    assert_eq!(r.replayed, r.live);
}

#[test]
fn overdue_canary_is_lost_then_late() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    let lost_after = |_: &str| Duration::from_secs(3);
    let (declared, _) = l.expire(2_999, lost_after, HOUR);
    assert!(declared.is_empty());
    let (declared, _) = l.expire(3_000, lost_after, HOUR);
    assert_eq!(declared.len(), 1);
    assert!(l.in_flight.is_empty());
    assert_eq!(l.classes["bulk"].lost, 1);
    let (arrival, _) = l.arrived_at(&canary("A", "bulk", 1, 0), "INBOX", "m", 7_000);
    assert_eq!(arrival, Delivery::Late { delay_s: 7.0 });
    let t = &l.classes["bulk"];
    assert_eq!((t.lost, t.late, t.delivery_delay.count()), (1, 1, 1));
    assert!(l.lost.is_empty());
}

#[test]
fn lost_after_is_per_class() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    send(&mut l, "B", "interpersonal", 0);
    let lost_after = |class: &str| Duration::from_secs(if class == "bulk" { 60 } else { 5 });
    let (declared, _) = l.expire(10_000, lost_after, HOUR);
    assert_eq!(
        declared.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["B"]
    );
}

#[test]
fn lost_and_seen_canaries_are_forgotten_after_forget_after() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    send(&mut l, "B", "bulk", 0);
    l.arrived_at(&canary("B", "bulk", 2, 0), "INBOX", "m", 1_000);
    l.expire(10_000, |_| Duration::from_secs(5), HOUR);
    assert_eq!((l.lost.len(), l.seen.len()), (1, 1));
    let (_, writes) = l.expire(
        10_000 + HOUR.as_millis() as u64,
        |_| Duration::from_secs(5),
        HOUR,
    );
    assert_eq!((l.lost.len(), l.seen.len()), (0, 0));
    assert!(
        writes.contains(&Write::Unlost("A".into())) && writes.contains(&Write::Unseen("B".into()))
    );
    let (arrival, _) = l.arrived_at(&canary("A", "bulk", 1, 0), "INBOX", "m2", 20_000_000);
    assert!(
        matches!(arrival, Delivery::Unexpected { .. }),
        "a forgotten canary still counts"
    );
}

#[test]
fn duplicates_and_rereads_are_told_apart() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    let c = canary("A", "bulk", 1, 0);
    l.arrived_at(&c, "INBOX", "INBOX/7.1", 1_000);
    assert_eq!(
        l.arrived_at(&c, "INBOX", "INBOX/7.1", 2_000).0,
        Delivery::AlreadyCounted
    );
    assert_eq!(
        l.arrived_at(&c, "INBOX", "INBOX/7.2", 2_000).0,
        Delivery::Duplicate
    );
    let t = &l.classes["bulk"];
    assert_eq!(
        (t.duplicates, t.delivered["INBOX"], t.delivery_delay.count()),
        (1, 1, 1)
    );
}

#[test]
fn receiver_counts_skipped_sequence_numbers() {
    let mut l = Ledger::default();
    for (id, seq) in [("A", 1), ("B", 2), ("C", 3), ("D", 4), ("E", 5)] {
        assert_eq!(send(&mut l, id, "bulk", seq * 10), seq);
    }
    l.arrived_at(&canary("A", "bulk", 1, 10), "INBOX", "1", 100);
    assert_eq!(l.classes["bulk"].sequence_gaps, 0);
    l.arrived_at(&canary("C", "bulk", 3, 30), "INBOX", "3", 100);
    assert_eq!(l.classes["bulk"].sequence_gaps, 1);
    l.arrived_at(&canary("B", "bulk", 2, 20), "INBOX", "2", 100);
    l.arrived_at(&canary("E", "bulk", 5, 50), "INBOX", "5", 100);
    assert_eq!(l.classes["bulk"].sequence_gaps, 2);
    assert_eq!(l.classes["bulk"].highest_seq_seen, 5);
}

#[test]
fn a_refused_send_gives_its_sequence_number_back_but_a_timeout_does_not() {
    let mut l = Ledger::default();
    let (seq, _) = l.begin_send("A", "bulk", 0);
    l.send_failed("A", SendStage::Auth);
    assert_eq!(l.begin_send("B", "bulk", 0).0, seq, "refused: reused");
    l.send_failed("B", SendStage::Timeout);
    assert_eq!(
        l.begin_send("C", "bulk", 0).0,
        seq + 1,
        "timeout: maybe accepted, not reused"
    );
    assert_eq!(l.classes["bulk"].send_failures["auth"], 1);
    assert_eq!(l.classes["bulk"].send_failures["timeout"], 1);
    assert_eq!(l.classes["bulk"].sent, 0);
    assert_eq!(l.in_flight.len(), 1);
}

#[test]
fn forged_canaries_count_under_a_known_class_only() {
    let mut l = Ledger::default();
    l.open_class("bulk");
    l.forged("bulk", "INBOX/1.1", 10);
    l.forged("<script>", "INBOX/1.2", 10);
    assert!(
        l.forged("bulk", "INBOX/1.1", 20).is_empty(),
        "one forged mail counts once"
    );
    assert_eq!(l.classes["bulk"].forged, 1);
    assert_eq!(l.probe.forged_unknown_class, 1);
    assert!(!l.classes.contains_key("<script>"));
}

#[test]
fn histogram_buckets_are_upper_inclusive() {
    let bounds = [1.0, 5.0];
    let mut h = Histogram::new(&bounds);
    for v in [0.5, 1.0, 1.5, 5.0, 6.0] {
        h.observe(&bounds, v);
    }
    assert_eq!(h.counts, vec![2, 2, 1]);
    assert_eq!(h.sum, 14.0);
    let mut stale = Histogram {
        counts: vec![3],
        sum: 1.0,
    };
    stale.observe(&bounds, 2.0);
    assert_eq!(
        stale.counts,
        vec![0, 1, 0],
        "a histogram of other buckets restarts"
    );
}

#[test]
fn full_writes_rebuild_the_same_books() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    send(&mut l, "B", "interpersonal", 0);
    send(&mut l, "C", "bulk", 0);
    l.arrived_at(&canary("B", "interpersonal", 1, 0), "INBOX", "m", 1_000);
    l.expire(10_000_000, |_| HOUR, HOUR * 24);
    l.mailbox_error(MailboxStage::Tls);
    let mut rebuilt = Ledger::default();
    rebuilt.replay(Write::Seen(
        "stale".into(),
        l.seen.values().next().unwrap().clone(),
    ));
    for w in l.full_writes() {
        rebuilt.replay(w);
    }
    assert_eq!(rebuilt, l, "Reset drops what the books no longer have");
}
