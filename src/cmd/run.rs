//! `mailcanary run`: the daemon.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::config::Config;
use crate::http::{self, WebState};
use crate::watch;
use crate::web_config::WebConfig;

/// Runs every probe and the HTTP endpoints until SIGINT or SIGTERM.
pub async fn run(config: &Config, listen: SocketAddr, web: Option<&Path>) -> Result<ExitCode> {
    let web = Arc::new(match web {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::unprotected(),
    });
    let mut agent = Agent::open(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let state = Arc::new(WebState {
        probes: agent.probe_list(),
        store: agent.store.clone(),
        ready: AtomicBool::new(false),
    });
    tasks.spawn(http::serve(
        listener,
        Arc::clone(&state),
        web,
        shutdown.clone(),
    ));
    for (probe, mailbox) in std::mem::take(&mut agent.probes) {
        tasks.spawn(watch::run(probe, mailbox, shutdown.clone()));
    }
    state.ready.store(true, Ordering::Release);
    tracing::info!(%listen, probes = config.probes.len(), agent = %config.agent.id, "mailcanary running");
    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    agent.close();
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
