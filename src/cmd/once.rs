//! `mailcanary once`: one round for cron, on the same books as the daemon.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ExitAs as _, Failure};
use crate::agent::{Agent, Inbox};
use crate::config::Config;
use crate::export;
use crate::probe::Probe;
use crate::watch::Watcher;

/// Where `once` delivers its metrics.
pub struct Outputs<'a> {
    /// node_exporter textfile.
    pub textfile: Option<&'a Path>,
    /// Pushgateway base URL.
    pub push: Option<&'a str>,
}

/// How one probe's round went.
struct Outcome {
    name: String,
    sent_any: bool,
    read_any: bool,
}

/// Sends one canary per probe×class, waits up to `wait` for them (collecting earlier runs'
/// canaries on the way), and writes the metrics.
pub async fn run(
    config: &Config,
    wait: Duration,
    outputs: Outputs<'_>,
) -> Result<ExitCode, super::Error> {
    let mut agent = Agent::open(config).await.map_err(super::opening)?;
    let probes = agent.probe_list();
    let deadline = Instant::now() + wait;
    // SIGTERM/SIGINT cut the wait short: no further canary is begun, the ones being submitted
    // finish (bounded by the SMTP timeout), and the metrics are still written.
    let stop = CancellationToken::new();
    let signals = tokio::spawn(super::run::cancel_on_signal(stop.clone()));
    let mut rounds = JoinSet::new();
    let slots = Arc::new(Semaphore::new(ROUNDS_AT_ONCE));
    // Mailboxes watched only for bounces are watched until the receiving rounds are over.
    let receiving_done = CancellationToken::new();
    let mut bounce_rounds = JoinSet::new();
    for inbox in std::mem::take(&mut agent.inboxes) {
        if inbox.receivers == 0 {
            let until = receiving_done.clone();
            bounce_rounds.spawn(bounce_round(inbox, deadline, stop.clone(), until));
            continue;
        }
        let names: Vec<String> = inbox.probes[..inbox.receivers]
            .iter()
            .map(|p| p.config().name.clone())
            .collect();
        let stop = stop.clone();
        let started = in_a_slot(Arc::clone(&slots), deadline, stop.clone(), async move {
            round(inbox, deadline, stop).await
        });
        rounds.spawn(async move {
            started.await.unwrap_or_else(|| {
                tracing::error!(probes = ?names, "no slot for the mailbox's round before the deadline");
                names
                    .into_iter()
                    .map(|name| Outcome {
                        name,
                        sent_any: false,
                        read_any: false,
                    })
                    .collect()
            })
        });
    }
    let mut failed = false;
    while let Some(outcomes) = rounds.join_next().await {
        let outcomes = outcomes
            .context("a probe task panicked")
            .exit_as(Failure::Internal)?;
        for outcome in outcomes.into_iter().filter(|o| !o.sent_any || !o.read_any) {
            failed = true;
            tracing::error!(
                probe = %outcome.name, sent = outcome.sent_any, read = outcome.read_any,
                "probe could not send or read at all"
            );
        }
    }
    receiving_done.cancel();
    while bounce_rounds.join_next().await.is_some() {}
    signals.abort();
    crate::send::close_kept(super::run::QUIT_WITHIN).await;
    let text = Agent::render(&probes, &agent.store);
    agent.close();
    if let Some(path) = outputs.textfile {
        export::write_textfile(path, &text)
            .with_context(|| format!("writing textfile {}", path.display()))
            .exit_as(Failure::Metrics)?;
    }
    if let Some(url) = outputs.push {
        export::push(url, &config.agent.id, &text)
            .await
            .with_context(|| format!("pushing to {url}"))
            .exit_as(Failure::Metrics)?;
    }
    if outputs.textfile.is_none() && outputs.push.is_none() {
        print!("{text}");
    }
    Ok(super::exit_code(failed))
}

/// Mailbox rounds run at a time (one per shared mailbox, with its probes' sends). Each holds
/// a mailbox connection, and its probes' submissions take their turns in the agent's slots
/// ([`crate::submissions`]): 1,000 mailboxes watched at once would open 1,000 connections
/// together (and run into the servers' limits) for no gain, since a round mostly waits for its
/// canaries. The rest wait for a slot; one that
/// has none by the deadline (or a stop) gives up without sending, so the whole run stays
/// within `--wait` plus the SMTP timeout of the rounds under way.
pub const ROUNDS_AT_ONCE: usize = 64;

/// Runs `work` once one of `slots` is free; `None` when none was by `deadline` or `stop`.
async fn in_a_slot<T>(
    slots: Arc<Semaphore>,
    deadline: Instant,
    stop: CancellationToken,
    work: impl Future<Output = T>,
) -> Option<T> {
    let slot = tokio::select! {
        slot = slots.acquire_owned() => slot.ok()?,
        () = tokio::time::sleep_until(deadline) => return None,
        () = stop.cancelled() => return None,
    };
    let done = work.await;
    drop(slot);
    Some(done)
}

/// Sends one round of each of `probes` (all on `mailbox`) and watches the mailbox meanwhile
/// (so a canary that lands mid-round is seen when it lands, not after the round), then until
/// every probe's canaries of this round are in or the deadline passes. Canaries of earlier
/// runs found on the way are accounted for too.
async fn round(inbox: Inbox, deadline: Instant, stop: CancellationToken) -> Vec<Outcome> {
    let probes: Vec<Arc<Probe>> = inbox.probes[..inbox.receivers].to_vec();
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(None::<Vec<Vec<String>>>);
    let sender = async {
        let rounds = probes.iter().map(|p| p.send_round(&stop));
        let ids = futures::future::join_all(rounds).await;
        let _ = sent_tx.send(Some(ids));
    };
    let watching = async {
        let mut watcher = Watcher::serving(inbox.probes, inbox.receivers, inbox.mailbox);
        let mut read_any = false;
        loop {
            read_any |= watcher.look().await;
            let sent = sent_rx.borrow().clone();
            let all_in = sent.as_ref().is_some_and(|ids| {
                probes
                    .iter()
                    .zip(ids)
                    .all(|(probe, ids)| !ids.iter().any(|id| probe.is_in_flight(id)))
            });
            let now = Instant::now();
            if all_in || now >= deadline || stop.is_cancelled() {
                break;
            }
            let wait = (deadline - now).min(watcher.poll_interval());
            tokio::select! {
                _ = watcher.wait_for_next(wait) => {}
                _ = sent_rx.changed(), if sent.is_none() => {}
                _ = stop.cancelled() => {}
            }
        }
        watcher.close().await;
        read_any
    };
    let ((), read_any) = tokio::join!(sender, watching);
    let sent = sent_rx.borrow().clone().unwrap_or_default();
    probes
        .iter()
        .enumerate()
        .map(|(i, probe)| Outcome {
            name: probe.config().name.clone(),
            sent_any: sent.get(i).is_some_and(|ids| !ids.is_empty()),
            read_any,
        })
        .collect()
}

/// Watches a mailbox that only bounces come back to, until `until` (the receiving rounds are
/// over), the deadline or a stop; then one last look, for a bounce that came meanwhile. It
/// takes no round slot: it would hold one for the whole run, and slots are for sending.
async fn bounce_round(
    inbox: Inbox,
    deadline: Instant,
    stop: CancellationToken,
    until: CancellationToken,
) {
    let mut watcher = Watcher::serving(inbox.probes, 0, inbox.mailbox);
    loop {
        watcher.look().await;
        let now = Instant::now();
        if until.is_cancelled() || now >= deadline || stop.is_cancelled() {
            break;
        }
        let wait = (deadline - now).min(watcher.poll_interval());
        tokio::select! {
            _ = watcher.wait_for_next(wait) => {}
            _ = until.cancelled() => { watcher.look().await; break; }
            _ = stop.cancelled() => {}
        }
    }
    watcher.close().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Rounds of 100 probes, each taking 10 ms: never more than the slots at once, every one run.
    #[tokio::test(start_paused = true)]
    async fn no_more_rounds_run_at_once_than_there_are_slots() {
        let slots = Arc::new(Semaphore::new(8));
        let (running, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut rounds = JoinSet::new();
        for _ in 0..100 {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            rounds.spawn(in_a_slot(
                slots.clone(),
                deadline,
                CancellationToken::new(),
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                },
            ));
        }
        while let Some(r) = rounds.join_next().await {
            assert!(r.unwrap().is_some(), "every round got a slot");
        }
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert_eq!(most.load(Ordering::SeqCst), 8);
    }

    /// Rounds that hold their slot past the deadline: the ones still waiting give up at the
    /// deadline instead of running after it.
    #[tokio::test(start_paused = true)]
    async fn a_round_waiting_for_a_slot_gives_up_at_the_deadline() {
        let slots = Arc::new(Semaphore::new(2));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut rounds = JoinSet::new();
        for _ in 0..5 {
            rounds.spawn(in_a_slot(
                slots.clone(),
                deadline,
                CancellationToken::new(),
                tokio::time::sleep_until(deadline + Duration::from_secs(5)),
            ));
        }
        let mut ran = 0;
        while let Some(r) = rounds.join_next().await {
            ran += usize::from(r.unwrap().is_some());
        }
        assert_eq!(ran, 2, "only the rounds that had a slot");
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(15),
            "the last round's own end"
        );
    }
}
