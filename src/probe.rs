//! One probe: send canaries of every class, judge what the mailbox holds, keep the books.
//!
//! A probe's sender and watcher share only the probe's own ledger (behind its own mutex, never
//! held across an `.await`) and the store handle, so 1,000 probes run side by side without a
//! shared lock on the hot path. Whether a mail is ours is decided here and only here
//! ([`judge`]): verified canaries of this agent's probe are counted and cleaned up; forged ones
//! are counted and left alone; everything else is not ours and is never touched.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng as _;
use rand::seq::SliceRandom as _;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use crate::canary::{Canary, SigningKey, parse_header};
use crate::class::{self, Envelope};
use crate::clock;
use crate::config::{ClassConfig, ProbeConfig};
use crate::delay::{self, Breakdown};
use crate::ledger::{Delivery, Failure, ForgedMail, Found, Ledger, Write};
use crate::mailbox::{self, MailId};
use crate::send::{SendError, Submit, Submitter};
use crate::setup::ProbeSetupError;
use crate::state::Store;
use crate::submissions::{Slot, Submissions};

/// What a mail with a canary header is, to this probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
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
pub fn judge(header: &str, key: &SigningKey, agent: &str, probe: &str) -> Verdict {
    let Ok(claimed) = parse_header(header) else {
        return Verdict::NotOurs;
    };
    if claimed.canary.agent != agent || claimed.canary.probe != probe {
        return Verdict::NotOurs;
    }
    match claimed.verify(key) {
        Ok(canary) => Verdict::Ours(canary.clone()),
        Err(_) => Verdict::Forged {
            claimed_class: claimed.canary.class.clone(),
        },
    }
}

/// A mail with a canary header that concerns this probe, judged.
enum JudgedMail<'a> {
    /// A verified canary, with the servers' view of its journey and what the receiving side
    /// wrote about it.
    Ours(
        &'a mailbox::Arrival,
        Canary,
        Breakdown,
        crate::verdict::Verdicts,
    ),
    /// A forgery, with the class it claims.
    Forged(&'a mailbox::Arrival, String),
}

/// What accounting for a look's arrivals asks of the mailbox.
#[derive(Debug, Default)]
pub struct Settled {
    /// Verified canaries of this probe, to clean up as configured.
    pub clean: Vec<MailId>,
    /// Forged mails, to leave in place or move as `forged` says.
    pub forged: Vec<MailId>,
}

/// What went wrong for one class since it last went right: the log says when it goes right
/// again ("sending resumed", "deliveries resumed") instead of logging every canary that did.
#[derive(Debug, Default, Clone, Copy)]
struct Trouble {
    /// Submissions failed since the last accepted one.
    send_failures: u64,
    /// Canaries counted lost since the last on-time delivery.
    lost: u64,
}

/// A probe's totals at one moment, for the periodic summary in the log.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Canaries accepted, all classes.
    pub sent: u64,
    /// Canaries delivered, all classes and folders.
    pub delivered: u64,
    /// Canaries counted lost.
    pub lost: u64,
    /// Failed submissions, all stages.
    pub send_failures: u64,
    /// Canaries in flight now.
    pub in_flight: usize,
    /// The largest delay of the classes' most recent deliveries, seconds.
    pub last_delay_s: Option<f64>,
    /// Whether the last mailbox check succeeded.
    pub mailbox_up: bool,
}

impl Summary {
    /// Whether a person should look at this probe, given its summary one period `before`: a
    /// loss, a failed submission or a mailbox down since then.
    pub fn needs_attention(&self, before: &Summary) -> bool {
        self.lost > before.lost || self.send_failures > before.send_failures || !self.mailbox_up
    }
}

/// A probe: its configuration, its SMTP account and its books.
pub struct Probe {
    config: ProbeConfig,
    agent: String,
    key: SigningKey,
    forget_after: Duration,
    submitter: Box<dyn Submit>,
    /// The agent's slots for submissions, shared with every other probe.
    submissions: Submissions,
    ledger: Mutex<Ledger>,
    store: Store,
    /// The store generation the books were last written in full for.
    synced: AtomicU64,
    mailbox_up: AtomicBool,
    /// Per class, what went wrong since it last went right (in memory: for the log only).
    trouble: Mutex<std::collections::BTreeMap<String, Trouble>>,
    /// How long the steps of the last look at the mailbox took (in memory).
    steps: Mutex<mailbox::Steps>,
}

impl Probe {
    /// Prepares a probe with the books the store had for it, submitting within the agent's
    /// `submissions`; fails on an unusable `ca_file`.
    pub fn new(
        config: ProbeConfig,
        agent: &str,
        key: SigningKey,
        forget_after: Duration,
        ledger: Ledger,
        store: Store,
        submissions: Submissions,
    ) -> Result<Probe, ProbeSetupError> {
        let submitter = Submitter::new(&config.smtp).map_err(|source| ProbeSetupError {
            probe: config.name.clone(),
            side: "smtp",
            source,
        })?;
        Ok(Probe {
            config,
            agent: agent.to_string(),
            key,
            forget_after,
            submitter: Box::new(submitter),
            submissions,
            ledger: Mutex::new(ledger),
            synced: AtomicU64::new(store.generation()),
            store,
            mailbox_up: AtomicBool::new(false),
            trouble: Mutex::default(),
            steps: Mutex::default(),
        })
    }

    /// The same probe sending through `submitter` instead of its SMTP account (for tests of
    /// the loops around it).
    #[cfg(test)]
    pub(crate) fn with_submitter(mut self, submitter: Box<dyn Submit>) -> Probe {
        self.submitter = submitter;
        self
    }

    /// The probe's configuration.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// The agent id this probe signs its canaries with.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Whether the last mailbox check succeeded.
    pub fn mailbox_up(&self) -> bool {
        self.mailbox_up.load(Ordering::Relaxed)
    }

    /// Reads the books (for metrics and the status page).
    pub fn read_ledger<T>(&self, read: impl FnOnce(&Ledger) -> T) -> T {
        read(&self.lock())
    }

    /// The probe's totals now, for the periodic summary.
    pub fn summary(&self) -> Summary {
        let mailbox_up = self.mailbox_up();
        self.read_ledger(|l| {
            let mut s = Summary {
                mailbox_up,
                ..Summary::default()
            };
            for (class, t) in &l.classes {
                s.sent += t.sent;
                s.delivered += t.delivered.values().sum::<u64>();
                s.lost += t.lost;
                s.send_failures += t.send_failures.values().sum::<u64>();
                s.in_flight += l.in_flight_count(class);
                s.last_delay_s = match (s.last_delay_s, t.last_delay_s) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            s
        })
    }

    /// What is wrong with `class` right now: submissions failed since the last accepted one,
    /// and canaries lost since the last on-time delivery.
    pub fn troubles(&self, class: &str) -> (u64, u64) {
        let all = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        all.get(class).map_or((0, 0), |t| (t.send_failures, t.lost))
    }

    /// Changes what is remembered as wrong for `class`; returns what was remembered before.
    fn trouble(&self, class: &str, change: impl FnOnce(&mut Trouble)) -> Trouble {
        let mut all = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        let t = all.entry(class.to_string()).or_default();
        let before = *t;
        change(t);
        before
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // Every ledger operation finishes its mutation before it can panic, so a poisoned
        // lock still guards consistent books.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an operation to the books and waits until its writes are committed. The writes
    /// are queued while the lock is held, so they reach the store in the order the books changed.
    async fn record<T>(&self, op: impl FnOnce(&mut Ledger) -> (T, Vec<Write>)) -> T {
        let (value, pending) = {
            let mut ledger = self.lock();
            let (value, mut writes) = op(&mut ledger);
            // After the store was reopened, what failed to reach it meanwhile is only in these
            // books: rewrite them whole, once.
            let generation = self.store.generation();
            if self.synced.swap(generation, Ordering::AcqRel) != generation {
                writes = ledger.full_writes();
            }
            (value, self.store.submit(&self.config.name, writes))
        };
        self.store.wait_committed(pending).await;
        value
    }

    /// Gives every configured class its (zero) totals, so all series exist from the start, and
    /// rewrites books loaded beyond their bounds once (see [`Ledger::compact_loaded`]).
    pub async fn open_books(&self) {
        self.record(|l| {
            let mut writes = l.compact_loaded();
            let opened = self
                .config
                .classes
                .iter()
                .filter_map(|c| l.open_class(c.name()));
            writes.extend(opened.collect::<Vec<_>>());
            ((), writes)
        })
        .await;
    }

    /// Sends one canary of `class` in `slot` (taken before, so the wait for it is not on the
    /// books: see [`crate::submissions`]); returns its id once the server accepted it.
    pub async fn send(&self, class: &ClassConfig, slot: Slot) -> Result<String, SendError> {
        let booked_ms = clock::now_ms();
        let id = Ulid::from_datetime(std::time::UNIX_EPOCH + Duration::from_millis(booked_ms))
            .to_string();
        // On the books, durably, before the transaction starts: a crash from here on cannot
        // lose this canary.
        let seq = self
            .record(|l| l.begin_send(&id, class.name(), booked_ms))
            .await;
        // `sent` is taken immediately before the connection opens ("I pressed send"), after
        // the commit, so the store's latency is not counted as mail delay.
        let sent_ms = clock::now_ms();
        let canary = Canary {
            id: id.clone(),
            probe: self.config.name.clone(),
            class: class.name().to_string(),
            seq,
            sent_ms,
            agent: self.agent.clone(),
        };
        let envelope = Envelope {
            from: &self.config.from,
            to: &self.config.to,
        };
        let message = class::render(&class.spec, &canary, &self.key, &envelope);
        let submitted = self
            .submitter
            .send(&self.config.from, &self.config.to, &message)
            .await;
        // The connection is closed: the next submission may start while this one is booked.
        drop(slot);
        match submitted {
            Ok(accepted) => {
                let smtp_s = accepted.duration.as_secs_f64();
                let queue_id = accepted.queue_id.clone();
                let tls = accepted.tls.clone();
                self.record(|l| {
                    l.submitted_over(tls);
                    ((), l.accepted(&id, clock::now_ms(), queue_id, smtp_s))
                })
                .await;
                tracing::debug!(
                    probe = %self.config.name, class = %class.name(), %id, seq,
                    queue_id = accepted.queue_id.as_deref().unwrap_or("-"), smtp_s, "canary sent"
                );
                let before = self.trouble(class.name(), |t| t.send_failures = 0);
                if before.send_failures > 0 {
                    tracing::info!(
                        probe = %self.config.name, class = %class.name(),
                        failed = before.send_failures, "sending resumed: a canary was accepted"
                    );
                }
                Ok(id)
            }
            Err(e) => {
                // Before the books show the failure: the status page judges from both.
                self.trouble(class.name(), |t| t.send_failures += 1);
                let failure = Failure::new(
                    clock::now_ms(),
                    "smtp",
                    e.stage.as_str(),
                    &e.message,
                    e.transcript.clone(),
                );
                self.record(|l| {
                    let mut writes = l.send_failed(&id, e.stage);
                    writes.extend(l.failed(failure));
                    ((), writes)
                })
                .await;
                tracing::warn!(
                    probe = %self.config.name, class = %class.name(), stage = e.stage.as_str(),
                    error = %e.message, "canary not sent"
                );
                Err(e)
            }
        }
    }

    /// Sends one canary of every class, in random order with a random pause of up to
    /// `jitter` between two, so no class is always first and they do not arrive as one burst
    /// a provider could treat differently. Returns the ids the server accepted.
    ///
    /// Each class waits for one of the agent's submission slots first. Once `stop` is
    /// cancelled no further class is begun (nor waits for a slot): a canary either goes through the
    /// whole submission (bounded by the SMTP timeout) and onto the books, or is never booked.
    /// Callers stopping the agent therefore await the round instead of dropping it, and close
    /// the store only afterwards.
    pub async fn send_round(&self, stop: &CancellationToken) -> Vec<String> {
        let mut classes: Vec<&ClassConfig> = self.config.classes.iter().collect();
        classes.shuffle(&mut rand::rng());
        let mut ids = Vec::new();
        for (i, class) in classes.into_iter().enumerate() {
            if i > 0 && !self.config.jitter.is_zero() {
                let pause = rand::rng().random_range(Duration::ZERO..=self.config.jitter);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            // A class not begun when the stop comes is not begun, even if its turn for a slot
            // had not come yet.
            let Some(slot) = self.submissions.slot(stop).await else {
                break;
            };
            if let Ok(id) = self.send(class, slot).await {
                ids.push(id);
            }
        }
        ids
    }

    /// Whether a canary is still on the books as in flight.
    pub fn is_in_flight(&self, id: &str) -> bool {
        self.lock().in_flight().contains_key(id)
    }

    /// Accounts for canaries found in the mailbox; returns the mails to clean up (verified
    /// canaries of this probe, and only those) and the forged ones (for `forged = "move:…"`).
    pub async fn account_for(&self, arrivals: &[mailbox::Arrival]) -> Settled {
        let (bounces, arrivals): (Vec<&mailbox::Arrival>, Vec<&mailbox::Arrival>) =
            arrivals.iter().partition(|a| a.mark.bounce().is_some());
        let mut settled = Settled::default();
        if !bounces.is_empty() {
            settled.clean = self.account_for_bounces(&bounces).await;
        }
        let canaries = self.account_for_canaries(&arrivals).await;
        settled.clean.extend(canaries.clean);
        settled.forged = canaries.forged;
        settled
    }

    /// [`Probe::account_for`] of the arrivals that are not bounces.
    async fn account_for_canaries(&self, arrivals: &[&mailbox::Arrival]) -> Settled {
        // Judging and parsing Received chains happen before the books are locked.
        let judged: Vec<JudgedMail> = arrivals
            .iter()
            .copied()
            .filter_map(|a| {
                match judge(a.mark.value(), &self.key, &self.agent, &self.config.name) {
                    Verdict::Ours(canary) => {
                        let chain = delay::received_chain(&a.head);
                        let servers = delay::breakdown(canary.sent_ms, &chain, a.server_ms);
                        let trusted = &self.config.trusted_authserv_ids;
                        let receiver = crate::verdict::read(&a.head, trusted);
                        Some(JudgedMail::Ours(a, canary, servers, receiver))
                    }
                    Verdict::Forged { claimed_class } => Some(JudgedMail::Forged(a, claimed_class)),
                    Verdict::NotOurs => None,
                }
            })
            .collect();
        if judged.is_empty() {
            return Settled::default();
        }
        let outcomes = self
            .record(|l| {
                let mut writes = Vec::new();
                let outcomes: Vec<Option<Delivery>> = judged
                    .iter()
                    .map(|j| match j {
                        JudgedMail::Ours(a, canary, servers, receiver) => {
                            let mail = a.id.to_string();
                            let found = Found {
                                folder: &a.id.folder,
                                mail: &mail,
                                seen_ms: a.seen_ms,
                                server_ms: a.server_ms,
                                forget_after: self.forget_after,
                                now_ms: clock::now_ms(),
                            };
                            let (outcome, w) = l.arrived(canary, found, servers);
                            writes.extend(w);
                            if a.mark.header_stripped() && outcome.is_delivery() {
                                writes.extend(l.arrived_without_header(&canary.class));
                            }
                            if outcome.is_delivery() {
                                writes.extend(l.judged_by_receiver(&canary.class, receiver));
                            }
                            Some(outcome)
                        }
                        JudgedMail::Forged(a, claimed_class) => {
                            let mail = a.id.to_string();
                            let counted = l.forged(claimed_class, &mail, a.seen_ms);
                            if !counted.is_empty() {
                                let note = ForgedMail::from_head(&a.head, &mail, a.seen_ms);
                                writes.extend(counted);
                                writes.extend(l.note_forged(note));
                            }
                            None
                        }
                    })
                    .collect();
                (outcomes, writes)
            })
            .await;
        let (mut clean, mut forged) = (Vec::new(), Vec::new());
        for (judged, outcome) in judged.iter().zip(outcomes) {
            match (judged, outcome) {
                (JudgedMail::Ours(a, canary, servers, _), Some(outcome)) => {
                    self.log_arrival(canary, a, outcome, servers);
                    // A mail recognised by its body alone may be someone's reply quoting a
                    // canary: only the delivery itself is ours to remove, never a later copy.
                    if !a.mark.header_stripped()
                        || outcome.is_delivery()
                        || outcome == Delivery::AlreadyCounted
                    {
                        clean.push(a.id.clone());
                    }
                }
                (JudgedMail::Forged(a, _), _) | (JudgedMail::Ours(a, ..), None) => {
                    tracing::warn!(
                        probe = %self.config.name, mail = %a.id,
                        "forged canary: signature does not verify"
                    );
                    forged.push(a.id.clone());
                }
            }
        }
        Settled { clean, forged }
    }

    fn log_arrival(
        &self,
        canary: &Canary,
        arrival: &mailbox::Arrival,
        outcome: Delivery,
        servers: &Breakdown,
    ) {
        let (probe, class, id) = (&self.config.name, &canary.class, &canary.id);
        let folder = &arrival.id.folder;
        if matches!(
            outcome,
            Delivery::OnTime { .. } | Delivery::Unexpected { .. }
        ) {
            let before = self.trouble(class, |t| t.lost = 0);
            if before.lost > 0 {
                tracing::info!(
                    %probe, %class, lost = before.lost,
                    "deliveries resumed: a canary arrived in time after losses"
                );
            }
        }
        match outcome {
            Delivery::OnTime { delay_s } => tracing::debug!(
                %probe, %class, %id, seq = canary.seq, %folder, delay_s,
                server_delay_s = ?servers.server_delay_s, hops_s = ?servers.hops,
                "canary delivered"
            ),
            Delivery::Late { delay_s } => tracing::warn!(
                %probe, %class, %id, seq = canary.seq, %folder, delay_s,
                "canary delivered late, after it was counted lost"
            ),
            Delivery::Unexpected { delay_s } => tracing::warn!(
                %probe, %class, %id, seq = canary.seq, %folder, delay_s,
                "canary delivered that the books do not know (state reset or forgotten)"
            ),
            Delivery::Duplicate => tracing::warn!(
                %probe, %class, %id, mail = %arrival.id, "duplicate of a delivered canary"
            ),
            Delivery::Replayed => tracing::warn!(
                %probe, %class, %id, seq = canary.seq, mail = %arrival.id,
                "replayed canary: genuine, but older than forget_after or its sequence number \
                 is already settled; not a delivery"
            ),
            Delivery::AlreadyCounted => {}
        }
    }

    /// Counts canaries overdue as lost and forgets old history.
    pub async fn expire(&self) {
        let config = &self.config;
        let forget_after = self.forget_after;
        let declared = self
            .record(|l| {
                l.expire(
                    clock::now_ms(),
                    |class| config.lost_after_for(class),
                    forget_after,
                )
            })
            .await;
        for c in declared {
            self.trouble(&c.class, |t| t.lost += 1);
            tracing::warn!(
                probe = %config.name, class = %c.class, id = %c.id, seq = c.seq,
                queue_id = c.queue_id.as_deref().unwrap_or("-"),
                lost_after = ?config.lost_after_for(&c.class), "canary lost: not seen within lost_after"
            );
        }
    }

    /// What the mailbox adapter remembered at the last look, from the books.
    pub fn scan_memory(&self) -> Option<String> {
        self.lock().scan_memory.clone()
    }

    /// Makes the adapter's memory durable (after the look's arrivals are on the books).
    pub async fn remember_scan(&self, memory: String) {
        self.record(|l| ((), l.remember_scan(memory))).await;
    }

    /// Queues the delay history not yet stored (it is written once per half hour, see
    /// [`crate::ledger::DelayHistory`]), without waiting: called as the agent stops, before the
    /// store's writer commits what is queued and ends.
    pub fn save_history(&self) {
        let mut ledger = self.lock();
        let writes = ledger.unsaved_history();
        drop(self.store.submit(&self.config.name, writes));
    }

    /// What the bounce mailbox's adapter remembered at the last look, from the books.
    pub fn bounce_scan_memory(&self) -> Option<String> {
        self.lock().bounce_scan_memory.clone()
    }

    /// Makes the bounce mailbox adapter's memory durable.
    pub async fn remember_bounce_scan(&self, memory: String) {
        self.record(|l| ((), l.remember_bounce_scan(memory))).await;
    }

    /// Counts mails the mailbox skipped because it could not read them.
    pub async fn mails_skipped(&self, count: u64) {
        tracing::warn!(
            probe = %self.config.name, count,
            "mails that cannot be read were skipped and are left alone"
        );
        self.record(|l| ((), l.mails_skipped(count))).await;
    }

    /// The mailbox could not be read because of a fault of ours (the adapter panicked): down,
    /// but not a server error of any stage.
    pub fn mailbox_faulted(&self) {
        self.mailbox_up.store(false, Ordering::Relaxed);
    }

    /// How long the steps of the last look at this probe's mailbox took.
    pub fn mailbox_steps(&self) -> mailbox::Steps {
        *self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the steps a look at this probe's mailbox measured.
    pub fn looked(&self, steps: mailbox::Steps) {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(&steps);
    }

    /// Records the outcome of a mailbox check (logged by the watcher, once per mailbox); a
    /// failure is kept with the `side` (protocol) and `transcript` of the attempt.
    pub async fn mailbox_checked(
        &self,
        result: &Result<(), mailbox::MailboxError>,
        side: &str,
        transcript: &[String],
    ) {
        self.mailbox_up.store(result.is_ok(), Ordering::Relaxed);
        if let Err(e) = result {
            let (stage, message) = (e.stage.as_str(), &e.message);
            let failure = Failure::new(clock::now_ms(), side, stage, message, transcript.to_vec());
            self.record(|l| {
                let mut writes = l.mailbox_error(e.stage);
                writes.extend(l.failed(failure));
                ((), writes)
            })
            .await;
        }
    }
}

mod bounces;

#[cfg(test)]
mod tests;
