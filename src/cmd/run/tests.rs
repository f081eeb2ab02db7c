//! The probe's loops against a mail server in memory, with paused time: what happens when the
//! mailbox fails, panics or hangs, and when the agent stops in the middle of a send round.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::mailbox::MailboxStage;
use crate::state::Store;
use crate::testing::{self, FakeServer, Fault};

const ALL_CLASSES: &str = r#""interpersonal", "transactional", "bulk""#;

/// Waits (in paused time) until `cond` holds, at most `limit`; true if it did.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

fn delivered(probe: &Probe) -> u64 {
    probe.read_ledger(|l| l.classes.values().flat_map(|c| c.delivered.values()).sum())
}

fn sent(probe: &Probe) -> u64 {
    probe.read_ledger(|l| l.classes.values().map(|c| c.sent).sum())
}

fn forged(probe: &Probe) -> u64 {
    probe.read_ledger(|l| {
        l.classes.values().map(|c| c.forged).sum::<u64>() + l.probe.forged_unknown_class
    })
}

fn duplicates(probe: &Probe) -> u64 {
    probe.read_ledger(|l| l.classes.values().map(|c| c.duplicates).sum())
}

fn mailbox_errors(probe: &Probe, stage: MailboxStage) -> u64 {
    probe.read_ledger(|l| {
        l.probe
            .mailbox_errors
            .get(stage.as_str())
            .copied()
            .unwrap_or(0)
    })
}

/// One probe's loops on `server`, a round every minute, until the returned token is cancelled.
fn start(server: &FakeServer, store: &Store, classes: &str) -> (Arc<Probe>, Running) {
    start_every(server, store, classes, "60s")
}

/// One probe's loops on `server`, a round each `interval`.
fn start_every(
    server: &FakeServer,
    store: &Store,
    classes: &str,
    interval: &str,
) -> (Arc<Probe>, Running) {
    let probe = testing::probe(server, store, classes, interval);
    let running = Running::default();
    spawn_probe(
        &running.tasks,
        Arc::clone(&probe),
        server.mailbox(),
        &running.shutdown,
    );
    (probe, running)
}

#[derive(Default)]
struct Running {
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Running {
    /// Cancels and waits for every task; false if they did not end within a minute.
    async fn stop(self) -> bool {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(60), self.tasks.wait())
            .await
            .is_ok()
    }
}

#[tokio::test(start_paused = true)]
async fn a_mailbox_that_panics_once_does_not_stop_sending_or_watching() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    server.fail_mailbox(&[Fault::Panic]);
    let (probe, running) = start(&server, &store, r#""bulk""#);
    assert!(
        until(Duration::from_secs(200), || delivered(&probe) >= 3).await,
        "rounds delivered after the panic: {}",
        delivered(&probe)
    );
    assert!(server.accepted() >= 3);
    assert!(probe.mailbox_up());
    // A panic is our bug, not a server's error at some stage.
    for stage in MailboxStage::ALL {
        assert_eq!(mailbox_errors(&probe, stage), 0, "{stage:?}");
    }
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn a_send_round_that_panics_does_not_stop_the_next_round() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    server.fail_send(&[Fault::Panic]);
    let (probe, running) = start(&server, &store, r#""bulk""#);
    assert!(until(Duration::from_secs(150), || delivered(&probe) >= 2).await);
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn mailbox_failures_back_off_doubling_to_the_cap_then_recover() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    // A poll interval above the cap, so only the cap limits the backoff.
    server.set_poll_interval(Duration::from_secs(300));
    server.fail_mailbox(&[Fault::Mailbox(MailboxStage::Connect); 9]);
    let probe = testing::probe(&server, &store, r#""bulk""#, "1h");
    let running = Running::default();
    let inbox = crate::agent::Inbox {
        probes: vec![Arc::clone(&probe)],
        receivers: 1,
        mailbox: server.mailbox(),
    };
    running
        .tasks
        .spawn(watch_loop(inbox, running.shutdown.clone()));
    assert!(until(Duration::from_secs(600), || server.looks().len() >= 11).await);
    let looks = server.looks();
    let gaps: Vec<f64> = looks
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let expected = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0];
    for (i, (gap, want)) in gaps.iter().zip(expected).enumerate() {
        assert!(
            (want * 0.8..=want * 1.2).contains(gap),
            "pause {i} after a failure: {gap} s, expected {want} s ±20 % (all: {gaps:?})"
        );
    }
    // Healthy again: the next look waits for news up to the poll interval, not the backoff.
    assert!(
        (299.0..=301.0).contains(&gaps[9]),
        "pause after recovery: {gaps:?}"
    );
    assert_eq!(mailbox_errors(&probe, MailboxStage::Connect), 9);
    assert!(probe.mailbox_up());
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn a_canary_sent_while_the_mailbox_fails_is_delivered_once_it_recovers() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    server.fail_mailbox(&[
        Fault::Mailbox(MailboxStage::Connect),
        Fault::Mailbox(MailboxStage::Auth),
        Fault::Mailbox(MailboxStage::Timeout),
    ]);
    let (probe, running) = start(&server, &store, r#""bulk""#);
    assert!(until(Duration::from_secs(30), || delivered(&probe) == 1).await);
    for stage in [
        MailboxStage::Connect,
        MailboxStage::Auth,
        MailboxStage::Timeout,
    ] {
        assert_eq!(mailbox_errors(&probe, stage), 1, "{stage:?}");
    }
    assert_eq!(server.mail_count(), 0, "the canary was cleaned up");
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn a_second_copy_of_a_canary_is_one_duplicate_and_is_removed() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    let (probe, running) = start_every(&server, &store, r#""bulk""#, "1h");
    assert!(until(Duration::from_secs(30), || delivered(&probe) == 1).await);
    server.deliver(&server.message(0));
    assert!(until(Duration::from_secs(30), || duplicates(&probe) == 1).await);
    // Further looks neither count it again nor count it as a delivery.
    let looks = server.looks().len();
    assert!(
        until(Duration::from_secs(60), || server.looks().len()
            >= looks + 3)
        .await
    );
    assert_eq!(duplicates(&probe), 1);
    assert_eq!(delivered(&probe), 1);
    assert_eq!(server.mail_count(), 0);
    assert_eq!(server.cleaned().len(), 2);
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn stopping_during_a_round_finishes_the_canary_being_sent_and_books_it() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    // The server takes the first canary, then holds its answer for 5 s.
    server.fail_send(&[Fault::Slow(Duration::from_secs(5))]);
    let probe = testing::probe(&server, &store, ALL_CLASSES, "60s");
    let running = Running::default();
    // The mailbox is never read: only the sending side's books are under test.
    server.fail_mailbox(&[Fault::Hang]);
    spawn_probe(
        &running.tasks,
        Arc::clone(&probe),
        server.mailbox(),
        &running.shutdown,
    );
    assert!(until(Duration::from_secs(5), || server.accepted() == 1).await);
    assert!(running.stop().await, "shutdown waits at most for the send");
    // Whatever a dropped round would still do happens now, after the store stopped.
    store.stop_acknowledging();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(server.accepted(), 1, "no class begun after the signal");
    assert_eq!(sent(&probe), 1, "the accepted canary is on the books");
    let in_flight = probe.read_ledger(|l| l.in_flight().values().cloned().collect::<Vec<_>>());
    assert_eq!(in_flight.len(), 1);
    assert_eq!(in_flight[0].queue_id.as_deref(), Some("Q1"));
    assert_eq!(
        store.errors(),
        0,
        "nothing was written after the store closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_mailbox_does_not_stall_another_probe_or_shutdown() {
    let store = Store::acknowledging();
    let (stuck, healthy) = (FakeServer::default(), FakeServer::default());
    stuck.fail_mailbox(&[Fault::Hang]);
    let (stuck_probe, stuck_running) = start(&stuck, &store, r#""bulk""#);
    let (healthy_probe, healthy_running) = start(&healthy, &store, r#""bulk""#);
    assert!(until(Duration::from_secs(200), || delivered(&healthy_probe) >= 3).await);
    // The stuck probe still sends; only its mailbox hangs.
    assert!(stuck.accepted() >= 3);
    assert_eq!(delivered(&stuck_probe), 0);
    assert!(stuck_running.stop().await);
    assert!(healthy_running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn a_refused_send_is_counted_by_stage_and_the_next_round_goes_out() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    server.fail_send(&[Fault::Send(crate::send::SendStage::Auth)]);
    let (probe, running) = start(&server, &store, r#""bulk""#);
    assert!(until(Duration::from_secs(90), || delivered(&probe) == 1).await);
    let auth_failures = probe.read_ledger(|l| l.classes["bulk"].send_failures.get("auth").copied());
    assert_eq!(auth_failures, Some(1));
    assert_eq!(sent(&probe), 1);
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn a_canary_whose_header_was_stripped_is_delivered_by_its_body_token() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    server.strip_canary_header();
    let (probe, running) = start(&server, &store, ALL_CLASSES);
    assert!(until(Duration::from_secs(30), || delivered(&probe) == 3).await);
    let stripped: u64 = probe.read_ledger(|l| l.classes.values().map(|c| c.header_stripped).sum());
    assert_eq!(stripped, 3);
    assert_eq!(
        server.mail_count(),
        0,
        "verified by the body token, then removed"
    );
    // A copy found by its body alone (say a reply quoting the canary) is counted, not removed.
    server.deliver(&testing::without_canary_header(&server.message(0)));
    assert!(until(Duration::from_secs(30), || duplicates(&probe) == 1).await);
    assert_eq!(server.mail_count(), 1);
    assert_eq!(delivered(&probe), 3);
    assert!(running.stop().await);
}

/// Two probes `p` and `q` sending into `server`, a round every minute, sharing one watcher.
fn start_shared(server: &FakeServer, store: &Store) -> (Arc<Probe>, Arc<Probe>, Running) {
    let p = testing::probe_named("p", server, store, r#""bulk""#, "60s");
    let q = testing::probe_named("q", server, store, r#""bulk""#, "60s");
    let running = Running::default();
    let probes = vec![Arc::clone(&p), Arc::clone(&q)];
    spawn_shared(&running.tasks, probes, server.mailbox(), &running.shutdown);
    (p, q, running)
}

#[tokio::test(start_paused = true)]
async fn probes_sharing_a_mailbox_each_count_their_own_canaries_from_one_watcher() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    // Only news (a delivery) or the start prompts a look: one watcher looks at most three
    // times for two deliveries; a watcher per probe would look twice as often.
    server.set_poll_interval(Duration::from_secs(3600));
    let (p, q, running) = start_shared(&server, &store);
    assert!(
        until(Duration::from_secs(30), || delivered(&p) == 1
            && delivered(&q) == 1)
        .await,
        "delivered p {} q {}",
        delivered(&p),
        delivered(&q)
    );
    assert_eq!((forged(&p), forged(&q)), (0, 0));
    assert_eq!(server.mail_count(), 0, "both probes' canaries cleaned up");
    let looks = server.looks().len();
    assert!(looks <= 3, "{looks} looks for two probes on one mailbox");
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn a_failing_look_on_a_shared_mailbox_marks_every_probe_down_then_up() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    server.fail_mailbox(&[Fault::Mailbox(MailboxStage::Auth); 3]);
    let (p, q, running) = start_shared(&server, &store);
    assert!(until(Duration::from_secs(2), || !server.looks().is_empty()).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!p.mailbox_up() && !q.mailbox_up());
    for probe in [&p, &q] {
        assert!(mailbox_errors(probe, MailboxStage::Auth) >= 1);
    }
    assert!(
        until(Duration::from_secs(60), || p.mailbox_up() && q.mailbox_up()).await,
        "both up again after the faults"
    );
    assert_eq!(mailbox_errors(&p, MailboxStage::Auth), 3);
    assert_eq!(mailbox_errors(&q, MailboxStage::Auth), 3);
    assert!(running.stop().await);
}

/// `count` probes, each sending into a server of its own every `interval`, started as `run`
/// starts them; the servers, in config order.
fn start_many(count: usize, interval: &str, store: &Store) -> (Vec<FakeServer>, Running) {
    let servers: Vec<FakeServer> = (0..count).map(|_| FakeServer::default()).collect();
    let probes: Vec<Arc<Probe>> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| testing::probe_named(&format!("p{i}"), s, store, r#""bulk""#, interval))
        .collect();
    let running = Running::default();
    spawn_send_loops(&running.tasks, &probes, &running.shutdown);
    (servers, running)
}

/// When each server's submissions started, relative to `start`, in ms.
fn send_times(servers: &[FakeServer], start: Instant) -> Vec<Vec<u128>> {
    servers
        .iter()
        .map(|s| s.sends().iter().map(|t| (*t - start).as_millis()).collect())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn many_probes_first_rounds_are_spread_evenly_over_the_interval_and_keep_their_phase() {
    let store = Store::acknowledging();
    let start = Instant::now();
    // 20 probes every 5 s: one every 250 ms, the last 4.75 s after the first.
    let (servers, running) = start_many(20, "5s", &store);
    assert!(
        until(Duration::from_secs(12), || servers
            .iter()
            .all(|s| s.sends().len() >= 2))
        .await,
        "{:?}",
        send_times(&servers, start)
    );
    let times = send_times(&servers, start);
    for (i, sends) in times.iter().enumerate() {
        let phase = 250 * i as u128;
        assert_eq!(sends[0], phase, "probe {i}'s first round: {times:?}");
        assert_eq!(
            sends[1],
            phase + 5000,
            "probe {i}'s second round: {times:?}"
        );
    }
    assert!(running.stop().await);
}

#[tokio::test(start_paused = true)]
async fn a_few_probes_with_a_long_interval_start_within_seconds_not_over_the_hour() {
    let store = Store::acknowledging();
    let start = Instant::now();
    let (servers, running) = start_many(3, "1h", &store);
    assert!(
        until(Duration::from_secs(5), || servers
            .iter()
            .all(|s| s.accepted() == 1))
        .await
    );
    let firsts: Vec<u128> = send_times(&servers, start).iter().map(|s| s[0]).collect();
    assert_eq!(
        firsts,
        [0, 500, 1000],
        "spaced by the cap, the first at once"
    );
    assert!(running.stop().await);
}

#[test]
fn first_rounds_are_spaced_by_the_interval_over_the_count_at_most_the_cap() {
    let minute = Duration::from_secs(60);
    assert_eq!(first_round_after(0, 1, minute), Duration::ZERO);
    assert_eq!(
        first_round_after(999, 1000, minute),
        Duration::from_millis(59_940)
    );
    assert_eq!(
        first_round_after(500, 1000, minute),
        Duration::from_secs(30)
    );
    assert_eq!(first_round_after(2, 3, minute), MAX_SPACING * 2);
    for i in 0..5000 {
        assert!(first_round_after(i, 5000, minute) < minute, "{i}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_delay_history_a_round_left_unsaved_is_queued_when_the_agent_stops() {
    let (server, store) = (FakeServer::default(), Store::acknowledging());
    let (probe, running) = start(&server, &store, r#""bulk""#);
    // Two rounds within one half hour of the wall clock: the first delivery opened the half
    // hour and was written with it, the second waits for the next half hour or the stop.
    assert!(until(Duration::from_secs(150), || delivered(&probe) >= 2).await);
    assert!(running.stop().await);
    let unsaved = |p: &Probe| p.read_ledger(|l| l.clone().unsaved_history().len());
    let points = probe.read_ledger(|l| l.history["bulk"].points(crate::clock::now_ms()));
    let counted: u32 = points.iter().map(|p| p.count).sum();
    assert_eq!(u64::from(counted), delivered(&probe));
    if points.len() == 1 {
        assert_eq!(unsaved(&probe), 1, "the second delivery is not written yet");
    }
    probe.save_history();
    assert_eq!(unsaved(&probe), 0, "queued for the store");
}
