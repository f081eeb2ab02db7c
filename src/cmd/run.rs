//! `mailcanary run`: the daemon, and the loops that drive each probe.
//!
//! Every probe runs a send loop, and every distinct mailbox a watch loop serving all the probes
//! configured with it (one connection, one IDLE; see [`crate::watch`]), each as a task of its
//! own, so that a fault on one side (a hanging server, a bug that panics) never silences the
//! other. Shutdown goes in order:
//! the signal stops new work, every send round in flight finishes or stops before booking its
//! next canary, the watch loops log out, and only then does the store close, so nothing is
//! written after it and no accepted canary is missing from the books.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ExitAs as _, Failure};
use crate::agent::Agent;
use crate::agent::Inbox;
use crate::config::Config;
use crate::http::{self, WebState};
#[cfg(test)]
use crate::mailbox::Mailbox;
use crate::probe::{Probe, Summary};
use crate::watch::Watcher;
use crate::web_config::WebConfig;

/// How `run` was asked to run: where its config came from (read again on a reload) and what
/// it serves.
pub struct RunOptions<'a> {
    /// The config file, read again on `SIGHUP` and `POST /-/reload`.
    pub config_path: &'a Path,
    /// Address of the HTTP endpoints.
    pub listen: SocketAddr,
    /// TLS and basic auth for them.
    pub web: Option<&'a Path>,
    /// Whether `POST /-/reload` is served (as Prometheus' `--web.enable-lifecycle`).
    pub lifecycle: bool,
}

/// Runs every probe and the HTTP endpoints until SIGINT or SIGTERM; `SIGHUP` (and
/// `POST /-/reload` when enabled) reads the config again and applies it.
pub async fn run(config: Config, options: RunOptions<'_>) -> Result<ExitCode, super::Error> {
    let web = Arc::new(match options.web {
        Some(path) => WebConfig::load(path).exit_as(Failure::Config)?,
        None => WebConfig::unprotected(),
    });
    // Before anything else can take a while: a SIGHUP's default action ends the process.
    let mut signals = Signals::install().exit_as(Failure::Internal)?;
    let mut agent = Agent::open(&config).await.map_err(super::opening)?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))
        .exit_as(Failure::Listen)?;
    let shutdown = CancellationToken::new();
    let http_tasks = TaskTracker::new();
    let (reload_requests, mut reloads) = tokio::sync::mpsc::channel(4);
    let state = Arc::new(WebState {
        probes: std::sync::RwLock::new(agent.probe_list().into()),
        store: agent.store.clone(),
        ready: AtomicBool::new(false),
        reload: options.lifecycle.then_some(reload_requests),
    });
    http_tasks.spawn(http::serve(
        listener,
        Arc::clone(&state),
        web,
        shutdown.clone(),
    ));
    http_tasks.spawn(trim_c_heap(shutdown.clone()));
    let mut schedule = reload::Schedule::default();
    let mut running = reload::start(&mut agent, &mut schedule);
    state.ready.store(true, Ordering::Release);
    tracing::info!(listen = %options.listen, probes = config.probes.len(), agent = %config.agent.id, "mailcanary running");
    let mut current = config;
    let mut reloader = reload::Reloader {
        path: options.config_path,
        agent: &mut agent,
        schedule: &mut schedule,
        state: &state,
    };
    loop {
        let answer = tokio::select! {
            stop = signals.next() => match stop {
                Wake::Stop => break,
                Wake::Reload => None,
            },
            Some(answer) = reloads.recv() => Some(answer),
        };
        let outcome = reloader.reload(&mut current, &mut running).await;
        if let Some(answer) = answer {
            let _ = answer.send(outcome);
        }
    }
    tracing::info!("shutting down: finishing the canaries being sent");
    shutdown.cancel();
    running.stop().await;
    http_tasks.close();
    http_tasks.wait().await;
    crate::send::close_kept(QUIT_WITHIN).await;
    agent.close();
    Ok(ExitCode::SUCCESS)
}

/// Starts a probe's send loop and watch loop as two tasks of `tasks`, both ending on `shutdown`.
#[cfg(test)]
pub(crate) fn spawn_probe(
    tasks: &TaskTracker,
    probe: Arc<Probe>,
    mailbox: Box<dyn Mailbox>,
    shutdown: &CancellationToken,
) {
    spawn_shared(tasks, vec![probe], mailbox, shutdown);
}

/// Starts the send loop of each of `probes` and one watch loop on their shared `mailbox`, all
/// ending on `shutdown`.
#[cfg(test)]
pub(crate) fn spawn_shared(
    tasks: &TaskTracker,
    probes: Vec<Arc<Probe>>,
    mailbox: Box<dyn Mailbox>,
    shutdown: &CancellationToken,
) {
    spawn_send_loops(tasks, &probes, shutdown);
    let receivers = probes.len();
    let inbox = Inbox {
        probes,
        receivers,
        mailbox,
    };
    tasks.spawn(watch_loop(inbox, shutdown.clone()));
}

/// Starts the send loop of each of `probes` as a task of `tasks`, each with its first round
/// at its own [`first_round_after`], all ending on `shutdown`.
#[cfg(test)]
fn spawn_send_loops(tasks: &TaskTracker, probes: &[Arc<Probe>], shutdown: &CancellationToken) {
    for (index, probe) in probes.iter().enumerate() {
        let phase = first_round_after(index, probes.len(), probe.config().interval);
        let next = Arc::default();
        tasks.spawn(send_loop(Arc::clone(probe), phase, next, shutdown.clone()));
    }
}

/// The most time between the first rounds of two consecutive probes; see [`first_round_after`].
pub(crate) const MAX_SPACING: Duration = Duration::from_millis(500);

/// When the probe at `index` (in config order) of `count` probes has its first round, after
/// the agent starts; every later round follows one `interval` after the one before, so the
/// phase holds for the whole run.
///
/// Why spread at all: if every probe started at once, all of them would send at the same
/// instant of every interval, 1,000 probes as 3,000 SMTP sessions in one burst that the
/// servers refuse or queue past the timeout (and the mailboxes see 3,000 deliveries at once),
/// then nothing for the rest of the minute.
///
/// Why by index, evenly, rather than by a hash of the probe's name: an even spacing of
/// `interval / count` gives the lowest peak rate of new sessions there can be (a hash lands
/// probes in clumps, as random arrivals do), and it is just as stable: the same config starts
/// the same probes at the same offsets after a restart, and a restart spreads them again
/// instead of firing them together. Adding a probe shifts the others' offsets a little, which
/// harms nothing.
///
/// Why the spacing is capped at [`MAX_SPACING`]: a handful of probes with long intervals would
/// otherwise wait up to an interval (say an hour) for their first canary after every start,
/// with nothing to show on the status page meanwhile, to avoid a load that a few probes do not
/// make. The cap only applies while the probes are so few that their first rounds, two a
/// second (6 SMTP sessions), are nothing for any server; with more of them `interval / count`
/// is the smaller spacing and they spread over the whole interval. The first probe starts at
/// once.
pub(crate) fn first_round_after(index: usize, count: usize, interval: Duration) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    (interval / count).min(MAX_SPACING).saturating_mul(index)
}

/// A canary of every class each `interval`, the first round `phase` after the start, until
/// `shutdown`; `next` is kept at the time of the next round (Unix ms), so a reload continues
/// the schedule instead of sending an extra round.
async fn send_loop(
    probe: Arc<Probe>,
    phase: Duration,
    next: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
) {
    let interval = probe.config().interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        next.store(
            crate::clock::now_ms().saturating_add(interval_ms),
            Ordering::Relaxed,
        );
        // Each round is a task of its own: a bug that panics in one round is logged and the
        // next round still runs. It is awaited even when shutdown comes meanwhile (the round
        // itself stops before its next class), never dropped: a dropped round would go on
        // sending after the store closed, and its canaries would miss the books.
        let round = tokio::spawn({
            let (probe, stop) = (Arc::clone(&probe), shutdown.clone());
            async move { probe.send_round(&stop).await }
        });
        if let Err(e) = round.await {
            tracing::error!(probe = %probe.config().name, error = %e, "a send round failed; continuing");
        }
    }
}

/// A look whenever the mailbox announces news and at least each poll interval, until
/// `shutdown`; then logs out. A look interrupted by shutdown loses nothing: what it booked is
/// queued for the store, and what it did not get to is found again by the next run.
async fn watch_loop(inbox: Inbox, shutdown: CancellationToken) {
    let mut watcher = Watcher::serving(inbox.probes, inbox.receivers, inbox.mailbox);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = watcher.look() => {}
        }
        let max = watcher.poll_interval();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = watcher.wait_for_next(max) => {}
        }
    }
    watcher.close().await;
}

/// How long a kept submission connection gets to answer QUIT when the agent stops.
pub(crate) const QUIT_WITHIN: Duration = Duration::from_secs(2);

/// How often the C library's heap gives back what it holds free.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Every [`TRIM_EVERY`], hands the C library's free heap pages back to the system. Rust's
/// allocations go to mimalloc; what is left on glibc's heap is OpenSSL's (its parse of the
/// trust store at start-up, each handshake's buffers), which glibc keeps once freed: about
/// 0.4 MB of a single probe's 16 MB. A walk over a heap of a few megabytes, once a minute.
async fn trim_c_heap(shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(TRIM_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                // SAFETY: malloc_trim only returns free memory of glibc's own heap.
                unsafe { libc::malloc_trim(0) };
            }
        }
    }
}

/// How often the log gets its summary lines.
const SUMMARY_EVERY: Duration = Duration::from_secs(600);

/// Every `every`, one info line for the whole agent (what happened since the last one) and one
/// per probe that needs attention (a loss, a failed submission, its mailbox down): 1,000 healthy
/// probes make one line per period, not 1,000. Single canaries are logged at debug level and
/// looked up on the status page or with `mailcanary status`.
async fn summary_loop(probes: Vec<Arc<Probe>>, every: Duration, shutdown: CancellationToken) {
    let mut before: Vec<Summary> = probes.iter().map(|p| p.summary()).collect();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now: Vec<Summary> = probes.iter().map(|p| p.summary()).collect();
        let mut total = Summary::default();
        let mut attention = 0;
        for ((probe, now), before) in probes.iter().zip(&now).zip(&before) {
            total.sent += now.sent - before.sent.min(now.sent);
            total.delivered += now.delivered - before.delivered.min(now.delivered);
            total.lost += now.lost - before.lost.min(now.lost);
            total.send_failures += now.send_failures - before.send_failures.min(now.send_failures);
            total.in_flight += now.in_flight;
            if now.needs_attention(before) {
                attention += 1;
                tracing::info!(
                    probe = %probe.config().name,
                    sent = now.sent.saturating_sub(before.sent),
                    delivered = now.delivered.saturating_sub(before.delivered),
                    lost = now.lost.saturating_sub(before.lost),
                    send_failures = now.send_failures.saturating_sub(before.send_failures),
                    in_flight = now.in_flight,
                    last_delay_s = ?now.last_delay_s,
                    mailbox_up = now.mailbox_up,
                    "probe needs attention"
                );
            }
        }
        tracing::info!(
            period = ?every, probes = probes.len(), sent = total.sent, delivered = total.delivered,
            lost = total.lost, send_failures = total.send_failures, in_flight = total.in_flight,
            needing_attention = attention, "summary"
        );
        before = now;
    }
}

/// Cancels `stop` on the first SIGTERM or SIGINT (for `once`, which has no other way to stop).
pub(crate) async fn cancel_on_signal(stop: CancellationToken) {
    match wait_for_signal().await {
        Ok(()) => {
            tracing::info!("signal received: finishing the canaries being sent, then exiting");
            stop.cancel();
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for signals"),
    }
}

async fn wait_for_signal() -> Result<()> {
    let mut signals = Signals::install()?;
    while signals.next().await != Wake::Stop {}
    Ok(())
}

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP.
    Reload,
}

/// The signals the daemon listens for, installed once (a SIGHUP not listened for would end
/// the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn next(&mut self) -> Wake {
        tokio::select! {
            _ = self.term.recv() => Wake::Stop,
            _ = self.interrupt.recv() => Wake::Stop,
            _ = self.hangup.recv() => Wake::Reload,
        }
    }
}

mod reload;
#[cfg(test)]
mod tests;
