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
    for (probe, mailbox) in std::mem::take(&mut agent.probes) {
        rounds.spawn(round(probe, mailbox, deadline, stop.clone()));
    }
    let mut failed = false;
    while let Some(outcome) = rounds.join_next().await {
        let outcome = outcome
            .context("a probe task panicked")
            .exit_as(Failure::Internal)?;
        if !outcome.sent_any || !outcome.read_any {
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

/// Watches the mailbox while sending (so a canary that lands mid-round is seen when it lands,
/// not after the round), then until this round's canaries are in or the deadline passes.
/// Canaries of earlier runs found on the way are accounted for too.
async fn round(
    probe: Arc<Probe>,
    mailbox: Box<dyn Mailbox>,
    deadline: Instant,
    stop: CancellationToken,
) -> Outcome {
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(None::<Vec<String>>);
    let sender = async {
        let ids = probe.send_round(&stop).await;
        let _ = sent_tx.send(Some(ids));
    };
    let watching = async {
        let mut watcher = Watcher::new(Arc::clone(&probe), mailbox);
        let mut read_any = false;
        loop {
            read_any |= watcher.look().await;
            let sent = sent_rx.borrow().clone();
            let all_in = sent
                .as_ref()
                .is_some_and(|ids| !ids.iter().any(|id| probe.is_in_flight(id)));
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
    let sent_any = sent_rx.borrow().as_ref().is_some_and(|ids| !ids.is_empty());
    Outcome {
        name: probe.config().name.clone(),
        sent_any,
        read_any,
    }
}
