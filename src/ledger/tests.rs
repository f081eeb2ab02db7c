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

    /// Replays `writes`, then the delay history not yet written: that is stored once per half
    /// hour, not with each change (see `history.rs`), and compared here as the agent leaves it
    /// when it stops.
    fn apply(&mut self, writes: Vec<Write>) {
        for w in writes.into_iter().chain(self.live.unsaved_history()) {
            self.replayed.replay(w);
        }
    }
}

#[test]
fn a_canary_delivered_before_its_acceptance_reply_still_counts_as_sent() {
    let mut r = Replayed::new();
    let (_, w) = r.live.begin_send("A", "bulk", 1_000);
    r.apply(w);
    let (arrival, w) =
        r.live
            .arrived_at(&canary("A", "bulk", 1, 1_000), "INBOX", "INBOX/1.1", 1_400);
    r.apply(w);
    assert_eq!(arrival, Delivery::OnTime { delay_s: 0.4 });
    let w = r.live.accepted("A", 1_600, Some("Q1".into()), 0.6);
    r.apply(w);
    for l in [&r.live, &r.replayed] {
        let t = &l.classes["bulk"];
        assert_eq!((t.sent, t.delivered["INBOX"]), (1, 1));
        assert_eq!(l.probe.smtp_duration.count(), 1);
        assert_eq!(l.in_flight_count("bulk"), 0, "not back in flight");
    }
    // An id the books never had is not counted.
    assert!(r.live.accepted("nobody", 1_700, None, 0.1).is_empty());
    assert_eq!(r.live.classes["bulk"].sent, 1);
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
    assert_eq!(
        l.probe.smtp_duration.count(),
        2,
        "per probe, whatever the class"
    );
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
    let (_, w) = r.live.arrived_at(
        &canary("B", "interpersonal", 2, 1_000),
        "INBOX",
        "m2-copy",
        3_000_100,
    );
    r.apply(w);
    let (_, w) = r.live.arrived_at(
        &canary("Z", "interpersonal", 1, 0),
        "INBOX",
        "m0",
        3_000_200,
    );
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
    assert_eq!(
        arrival,
        Delivery::Replayed,
        "a forgotten canary whose number was settled (as a gap) is no delivery"
    );
    assert_eq!(l.classes["bulk"].delivered["INBOX"], 1);
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

/// `lost_after` of the gap tests.
const GAP_WAIT: Duration = Duration::from_secs(60);

/// Runs `expire` at `now_ms` with [`GAP_WAIT`] and returns the class's counted gaps.
fn gaps_at(l: &mut Ledger, now_ms: u64) -> u64 {
    l.expire(now_ms, |_| GAP_WAIT, HOUR * 24);
    l.classes["bulk"].sequence_gaps
}

#[test]
fn a_skipped_sequence_number_counts_as_a_gap_once_overdue() {
    let mut l = Ledger::default();
    for (id, seq) in [("A", 1), ("B", 2), ("C", 3), ("D", 4), ("E", 5)] {
        assert_eq!(send(&mut l, id, "bulk", seq * 10), seq);
    }
    l.arrived_at(&canary("A", "bulk", 1, 10), "INBOX", "1", 100);
    l.arrived_at(&canary("C", "bulk", 3, 30), "INBOX", "3", 100);
    l.arrived_at(&canary("E", "bulk", 5, 50), "INBOX", "5", 100);
    assert_eq!(gaps_at(&mut l, 30 + 59_999), 0, "2 is not overdue yet");
    assert_eq!(
        gaps_at(&mut l, 30 + 60_000),
        1,
        "2 is overdue: lost_after past C"
    );
    assert_eq!(gaps_at(&mut l, 50 + 60_000), 2, "4 is overdue too");
    assert_eq!(gaps_at(&mut l, 10 * 60_000), 2, "each gap counts once");
    assert_eq!(l.classes["bulk"].highest_seq_seen, 5);
    assert!(l.classes["bulk"].open_gaps.is_empty());
}

#[test]
fn a_number_that_arrives_out_of_order_is_never_a_gap() {
    let mut l = Ledger::default();
    for (id, seq) in [("A", 1), ("B", 2), ("C", 3)] {
        send(&mut l, id, "bulk", seq * 10);
    }
    // Swapped: 1, 3, then 2.
    l.arrived_at(&canary("A", "bulk", 1, 10), "INBOX", "1", 100);
    l.arrived_at(&canary("C", "bulk", 3, 30), "INBOX", "3", 200);
    assert_eq!(gaps_at(&mut l, 1_000), 0);
    let (arrival, _) = l.arrived_at(&canary("B", "bulk", 2, 20), "INBOX", "2", 5_000);
    assert_eq!(arrival, Delivery::OnTime { delay_s: 4.98 });
    assert_eq!(gaps_at(&mut l, 10 * 60_000), 0, "no gap remains");
    // In order: nothing opens.
    let mut l = Ledger::default();
    for (id, seq) in [("A", 1), ("B", 2)] {
        send(&mut l, id, "bulk", seq * 10);
        l.arrived_at(&canary(id, "bulk", seq, seq * 10), "INBOX", id, 100);
    }
    assert!(l.classes["bulk"].open_gaps.is_empty());
    assert_eq!(gaps_at(&mut l, 10 * 60_000), 0);
}

#[test]
fn an_arrival_inside_a_run_of_missing_numbers_leaves_the_rest_open() {
    let mut l = Ledger::default();
    for seq in 1..=6 {
        send(&mut l, &format!("S{seq}"), "bulk", seq * 10);
    }
    l.arrived_at(&canary("S1", "bulk", 1, 10), "INBOX", "1", 100);
    l.arrived_at(&canary("S6", "bulk", 6, 60), "INBOX", "6", 100);
    l.arrived_at(&canary("S3", "bulk", 3, 30), "INBOX", "3", 100);
    let open: Vec<(u64, u64)> = l.classes["bulk"]
        .open_gaps
        .iter()
        .map(|g| (g.from, g.to))
        .collect();
    assert_eq!(open, [(2, 2), (4, 5)]);
    l.arrived_at(&canary("S5", "bulk", 5, 50), "INBOX", "5", 100);
    l.arrived_at(&canary("S2", "bulk", 2, 20), "INBOX", "2", 100);
    assert_eq!(gaps_at(&mut l, 60 + 60_000), 1, "only 4 stayed missing");
}

/// [`Ledger::arrived`] with `forget_after` and a server breakdown.
fn arrive(
    l: &mut Ledger,
    c: &Canary,
    mail: &str,
    seen_ms: u64,
    forget_after: Duration,
    servers: &Breakdown,
) -> Delivery {
    let found = Found {
        folder: "INBOX",
        mail,
        seen_ms,
        server_ms: None,
        forget_after,
        now_ms: seen_ms,
    };
    l.arrived(c, found, servers).0
}

fn journey() -> Breakdown {
    Breakdown {
        server_delay_s: Some(1.0),
        hops: vec![0.5, 0.5],
        clock_skew_s: Some(0.25),
    }
}

#[test]
fn a_canary_replayed_after_forget_after_is_not_a_delivery() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    let a = canary("A", "bulk", 1, 0);
    assert_eq!(
        arrive(&mut l, &a, "INBOX/1", 2_000, HOUR, &journey()),
        Delivery::OnTime { delay_s: 2.0 }
    );
    let before = l.classes["bulk"].clone();
    l.expire(2_000 + HOUR.as_millis() as u64, |_| HOUR, HOUR);
    assert!(l.seen.is_empty(), "forgotten");
    let later = 3 * HOUR.as_millis() as u64;
    let replayed = Breakdown {
        server_delay_s: Some(9_000.0),
        hops: vec![9_000.0, 1.0, 1.0],
        clock_skew_s: Some(-300.0),
    };
    assert_eq!(
        arrive(&mut l, &a, "INBOX/2", later, HOUR, &replayed),
        Delivery::Replayed
    );
    let t = &l.classes["bulk"];
    assert_eq!(t.replayed, 1);
    let unmoved = ClassTally {
        replayed: 0,
        ..t.clone()
    };
    assert_eq!(
        unmoved, before,
        "delivered, histograms, last delivery and skew do not move"
    );
    assert_eq!(
        arrive(&mut l, &a, "INBOX/2", later + 1_000, HOUR, &replayed),
        Delivery::AlreadyCounted,
        "the same replayed mail counts once"
    );
    assert_eq!(l.classes["bulk"].replayed, 1);
}

#[test]
fn a_young_canary_the_books_do_not_know_is_replayed_only_when_its_number_is_settled() {
    let mut l = Ledger::default();
    for (id, seq) in [("A", 1), ("B", 2), ("C", 3)] {
        send(&mut l, id, "bulk", seq * 10);
    }
    l.arrived_at(&canary("A", "bulk", 1, 10), "INBOX", "1", 100);
    l.arrived_at(&canary("C", "bulk", 3, 30), "INBOX", "3", 100);
    // Not on the books (e.g. sent by the same agent before its state was moved aside).
    let stranger = |id: &str, seq| canary(id, "bulk", seq, 50);
    assert_eq!(
        l.arrived_at(&stranger("X1", 1), "INBOX", "x1", 200).0,
        Delivery::Replayed,
        "1 was delivered already"
    );
    assert_eq!(
        l.arrived_at(&stranger("X2", 2), "INBOX", "x2", 200).0,
        Delivery::Unexpected { delay_s: 0.15 },
        "2 is still awaited in an open gap"
    );
    assert_eq!(
        l.arrived_at(&stranger("X2b", 2), "INBOX", "x2b", 200).0,
        Delivery::Replayed,
        "now 2 is settled"
    );
    assert_eq!(
        l.arrived_at(&stranger("X9", 9), "INBOX", "x9", 200).0,
        Delivery::Unexpected { delay_s: 0.15 },
        "above everything seen: a state reset, still a delivery"
    );
    let t = &l.classes["bulk"];
    assert_eq!((t.replayed, t.delivered["INBOX"]), (2, 4));
    assert!(l.in_flight.contains_key("B"), "B itself is still awaited");
}

#[test]
fn each_copy_of_a_delivered_canary_counts_once_also_after_a_restart() {
    let mut r = Replayed::new();
    let (_, w) = r.live.begin_send("A", "bulk", 0);
    r.apply(w);
    let a = canary("A", "bulk", 1, 0);
    let (_, w) = r.live.arrived_at(&a, "INBOX", "INBOX/1", 1_000);
    r.apply(w);
    for look in 0..3 {
        let (arrival, w) = r.live.arrived_at(&a, "INBOX", "INBOX/2", 2_000 + look);
        let want = if look == 0 {
            Delivery::Duplicate
        } else {
            Delivery::AlreadyCounted
        };
        assert_eq!(arrival, want, "look {look}");
        r.apply(w);
    }
    // A restart: the books as the store has them.
    let mut restarted = r.replayed.clone();
    assert_eq!(
        restarted.arrived_at(&a, "INBOX", "INBOX/2", 9_000).0,
        Delivery::AlreadyCounted
    );
    assert_eq!(
        restarted.arrived_at(&a, "INBOX", "INBOX/3", 9_000).0,
        Delivery::Duplicate,
        "a third copy is another mail"
    );
    assert_eq!(restarted.classes["bulk"].duplicates, 2);
    // Forgotten with forget_after, like the seen canaries.
    let (_, w) = r
        .live
        .expire(2_000 + 24 * HOUR.as_millis() as u64, |_| HOUR, HOUR);
    assert!(w.contains(&Write::Unrepeated("INBOX/2".into())));
    assert!(r.live.repeated.is_empty());
}

#[test]
fn a_kept_mail_is_remembered_while_it_can_be_read_again() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    let a = canary("A", "bulk", 1, 0);
    let none = Breakdown::default();
    let hour = HOUR.as_millis() as u64;
    // Adapters report a mail read again with the time it was first seen (1 s); only the
    // agent's clock moves.
    let read_at = |l: &mut Ledger, now_ms: u64| {
        let found = Found {
            folder: "INBOX",
            mail: "INBOX/1",
            seen_ms: 1_000,
            server_ms: None,
            forget_after: HOUR,
            now_ms,
        };
        l.arrived(&a, found, &none)
    };
    read_at(&mut l, 1_000);
    let (arrival, w) = read_at(&mut l, 1_000 + hour / 4);
    assert_eq!(arrival, Delivery::AlreadyCounted);
    assert!(w.is_empty(), "fresh memory: no write");
    let (_, w) = read_at(&mut l, 1_000 + hour * 3 / 4);
    assert_eq!(w.len(), 1, "half forgotten: refreshed");
    l.expire(1_000 + hour + 1, |_| HOUR, HOUR);
    assert_eq!(
        read_at(&mut l, 1_000 + hour + 2).0,
        Delivery::AlreadyCounted,
        "still there, still known: not replayed"
    );
    assert_eq!(l.classes["bulk"].replayed, 0);
}

#[test]
fn hop_labels_are_bounded() {
    let mut l = Ledger::default();
    send(&mut l, "A", "bulk", 0);
    let servers = Breakdown {
        server_delay_s: Some(200.0),
        hops: vec![1.0; 200],
        clock_skew_s: Some(0.5),
    };
    arrive(
        &mut l,
        &canary("A", "bulk", 1, 0),
        "INBOX/1",
        201_000,
        HOUR,
        &servers,
    );
    let hops = &l.probe.hop_delay;
    assert_eq!(hops.len(), delay::HOP_LABELS);
    assert_eq!(hops[7].count(), 1);
    assert_eq!(hops[7].sum, 193.0, "hop 7 and every deeper one, summed");
    let last = &l.classes["bulk"].last_hop_delay_s;
    assert_eq!(last.len(), delay::HOP_LABELS);
    assert_eq!(last[7], 193.0);
}

#[test]
fn hop_delays_are_per_probe_and_the_last_ones_per_class() {
    let mut r = Replayed::new();
    for (id, class, hops) in [
        ("A", "bulk", vec![1.0, 300.0]),
        ("B", "interpersonal", vec![1.0, 2.0, 3.0]),
        ("C", "bulk", vec![]),
    ] {
        let (_, w) = r.live.begin_send(id, class, 0);
        r.apply(w);
        let servers = Breakdown {
            server_delay_s: None,
            hops,
            clock_skew_s: None,
        };
        let found = Found {
            folder: "INBOX",
            mail: id,
            seen_ms: 400_000,
            server_ms: None,
            forget_after: HOUR,
            now_ms: 400_000,
        };
        let seq = r.live.in_flight()[id].seq;
        let (_, w) = r.live.arrived(&canary(id, class, seq, 0), found, &servers);
        r.apply(w);
    }
    let hops = &r.live.probe.hop_delay;
    assert_eq!(
        hops.iter().map(Histogram::count).collect::<Vec<_>>(),
        [2, 2, 1],
        "one histogram per hop, whatever the class"
    );
    assert_eq!(hops[1].sum, 302.0);
    assert_eq!(
        r.live.classes["bulk"].last_hop_delay_s,
        [1.0, 300.0],
        "a delivery without a chain keeps the last one known"
    );
    assert_eq!(
        r.live.classes["interpersonal"].last_hop_delay_s,
        [1.0, 2.0, 3.0]
    );
    assert_eq!(r.replayed, r.live, "the probe's histograms are written");
}

#[test]
fn books_with_hop_histograms_per_class_still_load() {
    let stored = r#"{"last_seq_sent":3,"highest_seq_seen":3,"sent":3,"send_failures":{},
        "delivered":{"INBOX":3},"lost":0,"late":0,"duplicates":0,"sequence_gaps":0,"forged":0,
        "smtp_duration":{"counts":[3,0,0,0,0,0,0,0,0,0,0,0],"sum":0.1},
        "delivery_delay":{"counts":[0,3,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"sum":4.5},
        "hop_delay":{"0":{"counts":[3,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"sum":1.5}},
        "last_delay_s":1.5,"last_delivery_ms":9000}"#;
    let tally: ClassTally = serde_json::from_str(stored).expect("old books load");
    assert_eq!(tally.sent, 3);
    assert!(tally.last_hop_delay_s.is_empty());
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
    l.arrived_at(
        &canary("B", "interpersonal", 1, 0),
        "INBOX",
        "m-copy",
        2_000,
    );
    l.forged("bulk", "INBOX/f", 3_000);
    l.expire(10_000_000, |_| HOUR, HOUR * 24);
    l.mailbox_error(MailboxStage::Tls);
    assert!(!l.forged.is_empty() && !l.repeated.is_empty());
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

/// The per-class in-flight counts and oldest times the books keep, against the list itself.
fn assert_counts_match_the_list(l: &Ledger, when: &str) {
    let mut classes: Vec<&str> = l.classes.keys().map(String::as_str).collect();
    classes.extend(l.in_flight().values().map(|c| c.class.as_str()));
    for class in classes {
        let mine: Vec<u64> = l
            .in_flight()
            .values()
            .filter(|c| c.class == class)
            .map(|c| c.sent_ms)
            .collect();
        assert_eq!(
            (l.in_flight_count(class), l.oldest_sent(class)),
            (mine.len(), mine.iter().min().copied()),
            "{class} {when}"
        );
    }
}

#[test]
fn in_flight_counts_per_class_follow_every_change_and_replay() {
    let mut r = Replayed::new();
    let check = |r: &Replayed, when: &str| {
        assert_counts_match_the_list(&r.live, when);
        assert_counts_match_the_list(&r.replayed, &format!("{when}, replayed"));
        assert_eq!(r.replayed, r.live, "{when}");
    };
    for (id, class, sent) in [
        ("A", "bulk", 1_000),
        ("B", "bulk", 1_000),
        ("C", "bulk", 3_000),
        ("D", "interpersonal", 2_000),
        ("E", "interpersonal", 4_000),
        ("F", "bulk", 500),
    ] {
        let (_, w) = r.live.begin_send(id, class, sent);
        r.apply(w);
        check(&r, &format!("after sending {id}"));
    }
    assert_eq!(r.live.in_flight_count("bulk"), 4);
    assert_eq!(r.live.oldest_sent("bulk"), Some(500));
    for id in ["A", "B", "C", "D", "E"] {
        let w = r.live.accepted(id, 5_000, Some("Q".into()), 0.1);
        r.apply(w);
        check(&r, &format!("after accepting {id}"));
    }
    let w = r.live.send_failed("F", SendStage::Rejected);
    r.apply(w);
    check(&r, "after a failed send");
    assert_eq!(r.live.oldest_sent("bulk"), Some(1_000));
    let (_, w) = r
        .live
        .arrived_at(&canary("A", "bulk", 1, 1_000), "INBOX", "m-a", 6_000);
    r.apply(w);
    check(&r, "after an arrival");
    assert_eq!(
        (r.live.in_flight_count("bulk"), r.live.oldest_sent("bulk")),
        (2, Some(1_000)),
        "B was sent at the same ms as A and is still in flight"
    );
    let (declared, w) = r
        .live
        .expire(1_000 + 60_000, |_| Duration::from_secs(60), HOUR);
    r.apply(w);
    check(&r, "after losses");
    assert_eq!(declared.len(), 1, "B lost");
    let (arrival, w) = r
        .live
        .arrived_at(&canary("B", "bulk", 2, 1_000), "INBOX", "m-b", 70_000);
    assert_eq!(arrival, Delivery::Late { delay_s: 69.0 });
    r.apply(w);
    check(&r, "after a late arrival");
    let (arrival, w) = r
        .live
        .arrived_at(&canary("A", "bulk", 1, 1_000), "INBOX", "m-a2", 71_000);
    assert_eq!(arrival, Delivery::Duplicate);
    r.apply(w);
    let (arrival, w) = r
        .live
        .arrived_at(&canary("X", "bulk", 1, 1_000), "INBOX", "m-x", 72_000);
    assert_eq!(arrival, Delivery::Replayed);
    r.apply(w);
    check(&r, "after a duplicate and a replay");
    assert_eq!(
        (r.live.in_flight_count("bulk"), r.live.oldest_sent("bulk")),
        (1, Some(3_000))
    );
    assert_eq!(
        (
            r.live.in_flight_count("interpersonal"),
            r.live.oldest_sent("interpersonal")
        ),
        (2, Some(2_000))
    );
    let mut loaded = Ledger::default();
    for w in r.live.full_writes() {
        loaded.replay(w);
    }
    assert_counts_match_the_list(&loaded, "loaded from full writes");
    assert_eq!(loaded, r.live);
    let (_, w) = r
        .live
        .expire(HOUR.as_millis() as u64, |_| Duration::from_secs(60), HOUR);
    r.apply(w);
    check(&r, "after everything was lost");
    assert_eq!(r.live.in_flight_count("bulk"), 0);
    assert_eq!(r.live.oldest_sent("interpersonal"), None);
    assert_eq!(
        r.live.oldest_age("interpersonal", HOUR.as_millis() as u64),
        0.0
    );
}

/// Records a store would hold after these writes, per table (keys only).
#[derive(Default)]
struct StoredKeys {
    seen: std::collections::BTreeSet<String>,
    repeated: std::collections::BTreeSet<String>,
    forged: std::collections::BTreeSet<String>,
}

impl StoredKeys {
    fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Seen(id, _) => drop(self.seen.insert(id.clone())),
                Write::Unseen(id) => drop(self.seen.remove(id)),
                Write::Repeated(m, _) => drop(self.repeated.insert(m.clone())),
                Write::Unrepeated(m) => drop(self.repeated.remove(m)),
                Write::Forged(m, _) => drop(self.forged.insert(m.clone())),
                Write::Unforged(m) => drop(self.forged.remove(m)),
                _ => {}
            }
        }
    }
}

#[test]
fn books_stay_bounded_after_100_000_deliveries() {
    let mut l = Ledger::default();
    let mut stored = StoredKeys::default();
    let classes = ["bulk", "interpersonal"];
    for i in 0..100_000u64 {
        let class = classes[(i % 2) as usize];
        let id = format!("C{i}");
        let sent_ms = i * 1_000;
        let (seq, w) = l.begin_send(&id, class, sent_ms);
        stored.apply(&w);
        stored.apply(&l.accepted(&id, sent_ms + 50, None, 0.05));
        let c = canary(&id, class, seq, sent_ms);
        let (arrival, w) = l.arrived_at(&c, "INBOX", &format!("INBOX/{i}"), sent_ms + 900);
        assert!(arrival.is_delivery(), "{i}: {arrival:?}");
        stored.apply(&w);
        if i % 10 == 0 {
            let (arrival, w) = l.arrived_at(&c, "INBOX", &format!("INBOX/{i}.copy"), sent_ms + 950);
            assert_eq!(arrival, Delivery::Duplicate, "{i}");
            stored.apply(&w);
            stored.apply(&l.forged(class, &format!("INBOX/{i}.forged"), sent_ms + 950));
        }
        if i % 100 == 0 {
            let (_, w) = l.expire(sent_ms + 990, |_| HOUR, 7 * 24 * HOUR);
            stored.apply(&w);
        }
    }
    for class in classes {
        let recent = l.seen.values().filter(|s| s.class == class).count();
        assert_eq!(recent, RECENT_PER_CLASS, "{class}");
        let t = &l.classes[class];
        assert_eq!(t.delivered["INBOX"], 50_000);
        assert!(t.open_gaps.is_empty());
    }
    let duplicates: u64 = l.classes.values().map(|t| t.duplicates).sum();
    assert_eq!(duplicates, 10_000);
    assert_eq!(l.repeated.len(), MAILS_REMEMBERED);
    assert_eq!(l.forged.len(), MAILS_REMEMBERED);
    assert!(l.in_flight().is_empty() && l.lost.is_empty());
    assert_eq!(
        (
            stored.seen.len(),
            stored.repeated.len(),
            stored.forged.len()
        ),
        (2 * RECENT_PER_CLASS, MAILS_REMEMBERED, MAILS_REMEMBERED),
        "the store holds no more than the books"
    );
}

#[test]
fn copies_late_arrivals_and_replays_are_still_told_apart_within_the_bounds() {
    let mut l = Ledger::default();
    let deliver = |l: &mut Ledger, i: u64| {
        let id = format!("C{i}");
        let seq = send(l, &id, "bulk", i * 1_000);
        let c = canary(&id, "bulk", seq, i * 1_000);
        l.arrived_at(&c, "INBOX", &format!("INBOX/{i}"), i * 1_000 + 500);
        c
    };
    let first = deliver(&mut l, 0);
    // One canary goes missing and is counted lost; many more arrive meanwhile.
    send(&mut l, "L", "bulk", 1_000);
    let lost = canary("L", "bulk", 2, 1_000);
    let mut last = first.clone();
    for i in 2..(2 + 3 * RECENT_PER_CLASS as u64) {
        last = deliver(&mut l, i);
    }
    l.expire(600_000, |_| Duration::from_secs(60), HOUR);
    assert_eq!(l.classes["bulk"].lost, 1);
    let now = 700_000;
    assert_eq!(
        l.arrived_at(
            &last,
            "INBOX",
            &format!("INBOX/{}", 2 + 3 * RECENT_PER_CLASS - 1),
            now
        )
        .0,
        Delivery::AlreadyCounted,
        "a recent mail read again"
    );
    assert_eq!(
        l.arrived_at(&last, "INBOX", "INBOX/last.copy", now).0,
        Delivery::Duplicate,
        "a second mail of a recent canary"
    );
    assert!(
        matches!(
            l.arrived_at(&lost, "INBOX", "INBOX/L", now).0,
            Delivery::Late { .. }
        ),
        "a lost canary still arrives late, whatever came since"
    );
    assert_eq!(
        l.arrived_at(&first, "INBOX", "INBOX/0.copy", now).0,
        Delivery::Replayed,
        "a copy of a canary older than the recent deliveries: its number is settled"
    );
    assert_eq!(
        l.arrived_at(&first, "INBOX", "INBOX/0.copy", now + 1).0,
        Delivery::AlreadyCounted,
        "and counts once"
    );
    let t = &l.classes["bulk"];
    assert_eq!((t.duplicates, t.late, t.replayed), (1, 1, 1));
}

#[test]
fn books_of_a_version_that_kept_every_delivery_are_folded_once() {
    let mut loaded = Ledger::default();
    for i in 0..1_000u64 {
        let seen = SeenCanary {
            class: "bulk".into(),
            sent_ms: i,
            seen_ms: i + 1,
            server_ms: None,
            mail: format!("INBOX/{i}"),
        };
        loaded.replay(Write::Seen(format!("C{i:04}"), seen));
        loaded.replay(Write::Repeated(format!("INBOX/{i}.copy"), i));
    }
    assert_eq!(loaded.seen.len(), RECENT_PER_CLASS);
    assert!(loaded.seen.contains_key("C0999") && !loaded.seen.contains_key("C0967"));
    assert_eq!(loaded.repeated.len(), MAILS_REMEMBERED.min(1_000));
    let writes = loaded.compact_loaded();
    assert_eq!(
        writes.first(),
        Some(&Write::Reset),
        "the store is rewritten"
    );
    let mut rebuilt = Ledger::default();
    for w in writes {
        rebuilt.replay(w);
    }
    assert_eq!(rebuilt, loaded);
    assert!(loaded.compact_loaded().is_empty(), "once");
    let mut fresh = Ledger::default();
    send(&mut fresh, "A", "bulk", 0);
    assert!(
        fresh.compact_loaded().is_empty(),
        "books within bounds are left alone"
    );
}
