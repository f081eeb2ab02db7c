//! The submission slots with many probes, paused time and a server in memory.

use std::time::Duration;

use futures::future::join_all;

use super::*;
use crate::state::Store;
use crate::testing::{self, FakeServer};

const ALL_CLASSES: &str = r#""interpersonal", "transactional", "bulk""#;

/// One probe of `classes` whose round waits for the only slot, which the test holds.
struct WaitingRound {
    server: FakeServer,
    probe: Arc<crate::probe::Probe>,
    submissions: Submissions,
    held: Slot,
    stop: CancellationToken,
    round: tokio::task::JoinHandle<Vec<String>>,
}

async fn waiting_round(classes: &str) -> WaitingRound {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    let submissions = Submissions::new(1);
    let probe = testing::probe_in("p", &server, &store, classes, "60s", submissions.clone());
    let held = submissions.slot(&CancellationToken::new()).await.unwrap();
    let stop = CancellationToken::new();
    let round = tokio::spawn({
        let (probe, stop) = (Arc::clone(&probe), stop.clone());
        async move { probe.send_round(&stop).await }
    });
    WaitingRound {
        server,
        probe,
        submissions,
        held,
        stop,
        round,
    }
}

/// 50 probes, 3 classes each, all sending at once into one server that takes 100 ms per
/// submission: never more than the slots at once, and every canary goes out.
#[tokio::test(start_paused = true)]
async fn no_more_submissions_run_at_once_than_there_are_slots() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    server.set_send_time(Duration::from_millis(100));
    let submissions = Submissions::new(4);
    let probes: Vec<_> = (0..50)
        .map(|i| {
            let name = format!("p{i}");
            testing::probe_in(
                &name,
                &server,
                &store,
                ALL_CLASSES,
                "60s",
                submissions.clone(),
            )
        })
        .collect();
    let stop = CancellationToken::new();
    let rounds = join_all(probes.iter().map(|p| p.send_round(&stop))).await;
    assert!(rounds.iter().all(|ids| ids.len() == 3), "every class sent");
    assert_eq!(server.accepted(), 150);
    assert_eq!(
        server.most_sending(),
        4,
        "at most (and up to) the slots at once"
    );
    assert_eq!(submissions.free(), 4, "every slot given back");
}

/// The probe's one slot is taken elsewhere: its canary waits off the books (nothing booked,
/// nothing in flight, no `sent` time), and a stop during the wait begins nothing.
#[tokio::test(start_paused = true)]
async fn a_canary_waiting_for_a_slot_is_not_on_the_books_and_a_stop_begins_nothing() {
    let WaitingRound {
        server,
        probe,
        submissions,
        held,
        stop,
        round,
    } = waiting_round(ALL_CLASSES).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!round.is_finished(), "still waiting for the slot");
    let books = probe.read_ledger(|l| {
        (
            l.in_flight().len(),
            l.classes.values().map(|c| c.sent).sum::<u64>(),
        )
    });
    assert_eq!(books, (0, 0), "nothing booked while waiting");
    stop.cancel();
    let ids = tokio::time::timeout(Duration::from_secs(1), round)
        .await
        .expect("the stop ends the wait at once")
        .unwrap();
    assert!(ids.is_empty());
    assert_eq!(server.accepted(), 0, "no class begun after the stop");
    assert_eq!(probe.read_ledger(|l| l.in_flight().len()), 0);
    drop(held);
    assert_eq!(submissions.free(), 1);
}

/// Once the slot comes free the canary is booked and sent, its `sent` time taken then: the
/// wait for the slot is not counted as delay.
#[tokio::test(start_paused = true)]
async fn a_canary_is_booked_and_its_delay_starts_when_its_slot_comes() {
    let WaitingRound {
        probe, held, round, ..
    } = waiting_round(r#""bulk""#).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(probe.read_ledger(|l| l.in_flight().len()), 0);
    // Wall-clock ms (the canary's clock), real time: paused time does not move it.
    std::thread::sleep(Duration::from_millis(20));
    let freed_ms = crate::clock::now_ms();
    drop(held);
    let ids = round.await.unwrap();
    assert_eq!(ids.len(), 1);
    let in_flight = probe.read_ledger(|l| l.in_flight().values().cloned().collect::<Vec<_>>());
    assert_eq!(in_flight.len(), 1, "booked once the slot came");
    assert!(
        in_flight[0].sent_ms >= freed_ms,
        "booked at {} before the slot came at {freed_ms}",
        in_flight[0].sent_ms
    );
}
