//! `mailcanary once`: one round for cron.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::clock;
use crate::config::Config;
use crate::export;
use crate::mailbox::Mailbox;
use crate::probe::{Probe, Watcher};

/// How one probe's round went.
struct Outcome {
    name: String,
    sent_any: bool,
    read_any: bool,
}

/// Sends one canary per probe×class, waits up to `wait` for them, writes the metrics.
pub async fn run(config: &Config, wait: Duration, textfile: Option<&Path>) -> Result<ExitCode> {
    let agent = Agent::new(config)?;
    let deadline = Instant::now() + wait;
    let mut rounds = JoinSet::new();
    for (probe, mailbox) in agent.probes {
        rounds.spawn(round(probe, mailbox, deadline));
    }
    let mut failed = false;
    while let Some(outcome) = rounds.join_next().await {
        let outcome = outcome.context("a probe task panicked")?;
        if !outcome.sent_any || !outcome.read_any {
            failed = true;
            tracing::error!(
                probe = %outcome.name, sent = outcome.sent_any, read = outcome.read_any,
                "probe could not send or read at all"
            );
        }
    }
    let text = agent.metrics.render(clock::now_ms());
    match textfile {
        Some(path) => export::write_textfile(path, &text)
            .with_context(|| format!("writing textfile {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(super::exit_code(failed))
}

/// Sends, then looks at the mailbox until this round's canaries are in or the deadline passes.
/// Canaries of earlier runs that are found on the way are accounted for too.
async fn round(probe: Arc<Probe>, mailbox: Box<dyn Mailbox>, deadline: Instant) -> Outcome {
    let sent = probe.send_round().await;
    let mut watcher = Watcher::new(Arc::clone(&probe), mailbox);
    let mut read_any = false;
    loop {
        read_any |= watcher.look().await.is_ok();
        let pending = sent.iter().any(|id| probe.in_flight().contains(id));
        let now = Instant::now();
        if !pending || now >= deadline {
            break;
        }
        tokio::time::sleep_until(deadline.min(now + watcher.poll_interval())).await;
    }
    watcher.close().await;
    Outcome {
        name: probe.config().name.clone(),
        sent_any: !sent.is_empty(),
        read_any,
    }
}
