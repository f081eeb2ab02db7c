//! `mailcanary once`: one round for cron, on the same books as the daemon.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ExitAs as _, Failure};
use crate::agent::Agent;
use crate::config::Config;
use crate::export;
use crate::mailbox::Mailbox;
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
    for inbox in std::mem::take(&mut agent.inboxes) {
        rounds.spawn(round(inbox.probes, inbox.mailbox, deadline, stop.clone()));
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
    signals.abort();
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

/// Sends one round of each of `probes` (all on `mailbox`) and watches the mailbox meanwhile
/// (so a canary that lands mid-round is seen when it lands, not after the round), then until
/// every probe's canaries of this round are in or the deadline passes. Canaries of earlier
/// runs found on the way are accounted for too.
async fn round(
    probes: Vec<Arc<Probe>>,
    mailbox: Box<dyn Mailbox>,
    deadline: Instant,
    stop: CancellationToken,
) -> Vec<Outcome> {
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(None::<Vec<Vec<String>>>);
    let sender = async {
        let rounds = probes.iter().map(|p| p.send_round(&stop));
        let ids = futures::future::join_all(rounds).await;
        let _ = sent_tx.send(Some(ids));
    };
    let watching = async {
        let mut watcher = Watcher::new(probes.clone(), mailbox);
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
