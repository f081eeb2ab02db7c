use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A connection that counts its QUITs.
struct Conn(u32, Arc<AtomicUsize>);

impl Quit for Conn {
    async fn quit(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

const WITHIN: Duration = Duration::from_secs(1);

fn session(id: u32, quits: &Arc<AtomicUsize>) -> Session<Conn> {
    Session {
        conn: Conn(id, Arc::clone(quits)),
        opened: Instant::now(),
        sent: 1,
        reused: false,
        tls: None,
        pipelining: false,
    }
}

/// Lets spawned QUITs run (paused time: only tasks ready now).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_connection_given_back_is_taken_first_while_fresh() {
    let quits = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(Pool::default());
    assert!(pool.take(WITHIN).is_none());
    pool.give_back(session(1, &quits), WITHIN);
    pool.give_back(session(2, &quits), WITHIN);
    assert_eq!(
        pool.take(WITHIN).map(|s| (s.conn.0, s.reused)),
        Some((2, true))
    );
    assert_eq!(
        pool.take(WITHIN).map(|s| (s.conn.0, s.reused)),
        Some((1, true))
    );
    assert!(pool.take(WITHIN).is_none());
    settle().await;
    assert_eq!(quits.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_with_quit_and_not_handed_out() {
    let quits = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(Pool::default());
    pool.give_back(session(1, &quits), WITHIN);
    tokio::time::sleep(MAX_IDLE + Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(pool.kept(), 0, "the reaper closed it");
    assert_eq!(quits.load(Ordering::SeqCst), 1);
    assert!(pool.take(WITHIN).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_connection_past_its_age_or_its_messages_is_not_kept() {
    let quits = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(Pool::default());
    let mut old = session(1, &quits);
    tokio::time::advance(MAX_AGE).await;
    old.sent = 2;
    pool.give_back(old, WITHIN);
    let mut busy = session(2, &quits);
    busy.sent = MAX_MESSAGES;
    pool.give_back(busy, WITHIN);
    settle().await;
    assert_eq!(pool.kept(), 0);
    assert_eq!(quits.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_connection_kept_in_use_is_retired_at_its_age() {
    let quits = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(Pool::default());
    pool.give_back(session(1, &quits), WITHIN);
    // Used every second: never idle for long, yet not kept beyond MAX_AGE.
    let mut used = 0;
    while let Some(mut s) = pool.take(WITHIN) {
        used += 1;
        s.sent += 1;
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.give_back(s, WITHIN);
        assert!(used <= MAX_AGE.as_secs(), "still kept after {used} s");
    }
    assert_eq!(used, MAX_AGE.as_secs());
    settle().await;
    assert_eq!(quits.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_kept_connections_are_kept() {
    let quits = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(Pool::default());
    for id in 0..(MAX_KEPT as u32 + 3) {
        pool.give_back(session(id, &quits), WITHIN);
    }
    settle().await;
    assert_eq!(pool.kept(), MAX_KEPT);
    assert_eq!(quits.load(Ordering::SeqCst), 3);
    pool.close_all(WITHIN).await;
    assert_eq!(pool.kept(), 0);
    assert_eq!(quits.load(Ordering::SeqCst), MAX_KEPT + 3);
}
