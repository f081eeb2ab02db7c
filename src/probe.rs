//! One probe: send canaries of every class, watch the mailbox, account for what arrives.
//!
//! A probe is two tasks (sender and watcher) sharing only the probe's own in-flight set and
//! metric handles, so 1,000 probes run side by side without a shared lock on the hot path.
//! Whether a mail is ours is decided here and only here ([`judge`]): valid canaries of this
//! agent's probe are counted and cleaned up; forged ones are counted and left alone; everything
//! else is not ours and is never touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use crate::canary::{Canary, SigningKey, parse_header};
use crate::class::{self, Envelope};
use crate::clock;
use crate::config::{ClassConfig, ProbeConfig};
use crate::delay;
use crate::mailbox::{Arrival, MailId, Mailbox, MailboxError};
use crate::metrics::{Metrics, ProbeMetrics};
use crate::send::{SendError, Submitter};
use crate::state::{InFlight, InFlightCanary};

/// What a mail with a canary header is, to this probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// A verified canary this probe sent.
    Ours(Canary),
    /// Claims to be this agent's and this probe's, but the signature does not verify.
    Forged {
        /// The class it claims; untrusted.
        claimed_class: String,
    },
    /// Another agent's or another probe's canary, or not a canary at all: hands off.
    NotOurs,
}

/// Decides what a canary header found in this probe's mailbox is. Pure.
pub fn judge(header: &str, key: &SigningKey, agent: &str, probe: &str) -> Judgement {
    let Ok(claimed) = parse_header(header) else {
        return Judgement::NotOurs;
    };
    if claimed.canary.agent != agent || claimed.canary.probe != probe {
        return Judgement::NotOurs;
    }
    match claimed.verify(key) {
        Ok(canary) => Judgement::Ours(canary.clone()),
        Err(_) => Judgement::Forged {
            claimed_class: claimed.canary.class.clone(),
        },
    }
}

/// A probe's sending side and its accounting.
pub struct Probe {
    config: ProbeConfig,
    agent: String,
    key: SigningKey,
    submitter: Submitter,
    metrics: ProbeMetrics,
    in_flight: Arc<InFlight>,
    sequences: HashMap<String, AtomicU64>,
}

impl Probe {
    /// Prepares a probe; fails on an unusable `ca_file`.
    pub fn new(
        config: ProbeConfig,
        agent: &str,
        key: SigningKey,
        metrics: &Arc<Metrics>,
    ) -> Result<Probe, String> {
        let submitter = Submitter::new(&config.smtp)
            .map_err(|e| format!("probe {}: smtp: {e}", config.name))?;
        let in_flight = Arc::new(InFlight::default());
        let sequences = config
            .classes
            .iter()
            .map(|c| (c.name.clone(), AtomicU64::new(0)))
            .collect();
        Ok(Probe {
            metrics: metrics.probe(&config, Arc::clone(&in_flight)),
            config,
            agent: agent.to_string(),
            key,
            submitter,
            in_flight,
            sequences,
        })
    }

    /// The probe's configuration.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Canaries sent and not yet seen.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// The probe's metric handles.
    pub fn metrics(&self) -> &ProbeMetrics {
        &self.metrics
    }

    /// Sends one canary of `class`; returns its id once the server accepted it.
    pub async fn send(&self, class: &ClassConfig) -> Result<String, SendError> {
        let seq = self.sequences[&class.name].fetch_add(1, Ordering::Relaxed) + 1;
        // `sent` is taken immediately before the connection opens: what a user means by
        // "I pressed send".
        let sent_ms = clock::now_ms();
        let canary = Canary {
            id: Ulid::from_datetime(std::time::UNIX_EPOCH + Duration::from_millis(sent_ms))
                .to_string(),
            probe: self.config.name.clone(),
            class: class.name.clone(),
            seq,
            sent_ms,
            agent: self.agent.clone(),
        };
        let envelope = Envelope {
            from: &self.config.from,
            to: &self.config.to,
        };
        let message = class::render(class.template, &canary, &self.key, &envelope);
        // Recorded before the transaction starts, so a canary that arrives before `send`
        // returns is still matched.
        self.in_flight.insert(InFlightCanary {
            id: canary.id.clone(),
            class: class.name.clone(),
            seq,
            sent_ms,
            queue_id: None,
        });
        let handles = self.metrics.class(&class.name);
        match self
            .submitter
            .send(&self.config.from, &self.config.to, &message)
            .await
        {
            Ok(accepted) => {
                handles.sent.inc();
                handles
                    .smtp_duration
                    .observe(accepted.duration.as_secs_f64());
                self.in_flight
                    .set_queue_id(&canary.id, accepted.queue_id.clone());
                tracing::info!(
                    probe = %self.config.name, class = %class.name, id = %canary.id, seq,
                    queue_id = accepted.queue_id.as_deref().unwrap_or("-"),
                    smtp_s = accepted.duration.as_secs_f64(), "canary sent"
                );
                Ok(canary.id)
            }
            Err(e) => {
                self.in_flight.remove(&canary.id);
                handles.send_failure(e.stage.as_str()).inc();
                tracing::warn!(
                    probe = %self.config.name, class = %class.name, stage = e.stage.as_str(),
                    error = %e.message, "canary not sent"
                );
                Err(e)
            }
        }
    }

    /// Sends one canary of every class; returns the ids the server accepted.
    pub async fn send_round(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for class in &self.config.classes {
            if let Ok(id) = self.send(class).await {
                ids.push(id);
            }
        }
        ids
    }

    /// Accounts for what a look at the mailbox found; returns the mails to clean up.
    ///
    /// `handled` remembers mails already accounted for, so a canary that could not be removed
    /// (or is kept by config) and a forged mail left in place are counted once, not per look.
    pub fn settle(&self, arrivals: Vec<Arrival>, handled: &mut HashSet<MailId>) -> Vec<MailId> {
        let present: HashSet<MailId> = arrivals.iter().map(|a| a.id.clone()).collect();
        handled.retain(|id| present.contains(id));
        let mut clean = Vec::new();
        for arrival in arrivals {
            if handled.contains(&arrival.id) {
                continue;
            }
            match judge(&arrival.header, &self.key, &self.agent, &self.config.name) {
                Judgement::Ours(canary) => {
                    self.delivered(&canary, &arrival);
                    clean.push(arrival.id.clone());
                }
                Judgement::Forged { claimed_class } => {
                    self.metrics.forged(&claimed_class);
                    tracing::warn!(
                        probe = %self.config.name, mail = %arrival.id,
                        "forged canary: signature does not verify; left in place"
                    );
                }
                Judgement::NotOurs => {}
            }
            handled.insert(arrival.id);
        }
        clean
    }

    fn delivered(&self, canary: &Canary, arrival: &Arrival) {
        let was_in_flight = self.in_flight.remove(&canary.id).is_some();
        let delay = delay::delivery_delay(canary.sent_ms, arrival.seen_ms);
        let handles = self.metrics.class(&canary.class);
        handles.delivery_delay.observe(delay);
        handles.last_delay.set(delay);
        handles.last_timestamp.set(arrival.seen_ms as f64 / 1000.0);
        self.metrics.delivered(&canary.class, &arrival.id.folder);
        tracing::info!(
            probe = %self.config.name, class = %canary.class, id = %canary.id, seq = canary.seq,
            folder = %arrival.id.folder, delay_s = delay, was_in_flight, "canary delivered"
        );
    }
}

/// The receiving side of a probe: its mailbox and what it has already accounted for.
pub struct Watcher {
    probe: Arc<Probe>,
    mailbox: Box<dyn Mailbox>,
    handled: HashSet<MailId>,
}

impl Watcher {
    /// Watches `mailbox` for `probe`.
    pub fn new(probe: Arc<Probe>, mailbox: Box<dyn Mailbox>) -> Watcher {
        Watcher {
            probe,
            mailbox,
            handled: HashSet::new(),
        }
    }

    /// One look: find canaries, account for them, clean up. Mailbox health is recorded here,
    /// once, rather than in each adapter.
    pub async fn look(&mut self) -> Result<(), MailboxError> {
        let result = self.try_look().await;
        let metrics = self.probe.metrics();
        match &result {
            Ok(()) => metrics.mailbox_up.set(1.0),
            Err(e) => {
                metrics.mailbox_up.set(0.0);
                metrics.mailbox_error(e.stage.as_str());
                tracing::warn!(
                    probe = %self.probe.config().name, protocol = self.mailbox.protocol(),
                    stage = e.stage.as_str(), error = %e.message, "mailbox check failed"
                );
            }
        }
        result
    }

    async fn try_look(&mut self) -> Result<(), MailboxError> {
        let arrivals = self.mailbox.canaries().await?;
        let clean = self.probe.settle(arrivals, &mut self.handled);
        self.mailbox.clean_up(&clean).await
    }

    /// Time between looks.
    pub fn poll_interval(&self) -> Duration {
        self.mailbox.poll_interval()
    }

    /// Logs out.
    pub async fn close(&mut self) {
        self.mailbox.close().await;
    }
}

/// Runs a probe until `shutdown`: a canary of every class each `interval`, a look at the
/// mailbox each poll interval.
pub async fn run(probe: Arc<Probe>, mailbox: Box<dyn Mailbox>, shutdown: CancellationToken) {
    let sender = {
        let probe = Arc::clone(&probe);
        let shutdown = shutdown.clone();
        async move {
            let mut ticks = tokio::time::interval(probe.config().interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = probe.send_round() => {}
                }
            }
        }
    };
    let watcher = async {
        let mut watcher = Watcher::new(Arc::clone(&probe), mailbox);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = watcher.look() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(watcher.poll_interval()) => {}
            }
        }
        watcher.close().await;
    };
    tokio::join!(sender, watcher);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::new(b"k".to_vec()).unwrap()
    }

    fn header(agent: &str, probe: &str, key: &SigningKey) -> String {
        Canary {
            id: "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C".into(),
            probe: probe.into(),
            class: "bulk".into(),
            seq: 1,
            sent_ms: 1,
            agent: agent.into(),
        }
        .header_value(key)
    }

    #[test]
    fn judgement_separates_ours_forged_and_foreign() {
        let k = key();
        let other = SigningKey::new(b"other".to_vec()).unwrap();
        assert!(
            matches!(judge(&header("a", "p", &k), &k, "a", "p"), Judgement::Ours(c) if c.seq == 1)
        );
        assert_eq!(
            judge(&header("a", "p", &other), &k, "a", "p"),
            Judgement::Forged {
                claimed_class: "bulk".into()
            }
        );
        assert_eq!(
            judge(&header("b", "p", &other), &k, "a", "p"),
            Judgement::NotOurs
        );
        assert_eq!(
            judge(&header("a", "q", &k), &k, "a", "p"),
            Judgement::NotOurs
        );
        assert_eq!(judge("v=1; garbage", &k, "a", "p"), Judgement::NotOurs);
    }
}
