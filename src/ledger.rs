//! A probe's books: what it sent, what is in flight, what arrived, and the running totals.
//!
//! Pure accounting, no I/O: every operation takes `now` as a parameter, mutates the ledger and
//! returns the [`Write`]s that make the change durable. The caller commits those writes before
//! acting on the change (a canary is on the books before its SMTP transaction starts), and the
//! same ledger is rebuilt from the store after a restart, so counters never go backwards and a
//! canary in flight is never forgotten.
//!
//! # What an arrival counts as
//!
//! A verified canary is judged against the books, in this order:
//!
//! - a mail already counted (the same `folder/key` read again): nothing;
//! - its id is among the class's recent deliveries, as another mail: a **duplicate**, counted
//!   once per mail;
//! - in flight: delivered **on time**; counted lost: delivered **late**;
//! - not on the books, and either sent longer than `forget_after` ago (the books have forgotten
//!   anything that old, so they cannot vouch for it) or carrying a sequence number already
//!   settled for its class (at or below the highest seen and not in an open gap): **replayed**,
//!   an attacker's or a mail loop's copy, never a delivery;
//! - otherwise **unexpected**: younger than `forget_after`, with a sequence number the receiver
//!   has not settled, yet not on the books. That happens after the state store was reset or when
//!   a submission that timed out went through after all; it counts as a delivery.
//!
//! Sequence numbers the receiver skipped are held as open gaps and counted in
//! `sequence_gaps` only once overdue: still missing `lost_after` after the canary that revealed
//! them was sent. A canary that merely arrives out of order closes its gap and is never counted,
//! so the counter only ever rises for numbers that really did not come.
//!
//! # Books that do not grow with time
//!
//! What is kept per probe is bounded by count, whatever the canary rate and `forget_after`:
//! per class the totals, the highest sequence number seen and the open gaps (which close or
//! fall due within `lost_after`), and the last [`RECENT_PER_CLASS`] deliveries in full; per
//! probe at most [`MAILS_REMEMBERED`] duplicate or replayed mails and as many forged ones. The
//! sequence numbers are the window that recognises old copies: a settled number is a replay
//! however long ago it was delivered, so nothing per canary has to be kept for that. The cost of
//! the bound: a second mail of a canary that has dropped out of the recent deliveries counts as
//! replayed rather than duplicate, and the same mail read again after that (only when a mailbox
//! adapter lost its scan memory) counts once as replayed. Canaries in flight and those counted
//! lost are not bounded here: they are as many as the mail system loses within `forget_after`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::canary::Canary;
use crate::delay::{self, Breakdown};
use crate::stage::{MailboxStage, SendStage};

pub mod bounce;
mod example;
pub mod failures;
mod forged;
mod histogram;
pub mod history;
mod verdicts;

pub use bounce::{Bounced, LastBounce};
pub use example::example_books;
pub use failures::Failure;
pub use forged::ForgedMail;
pub use histogram::{DELAY_BUCKETS, HOP_BUCKETS, Histogram, SMTP_BUCKETS};
pub use history::{DelayHistory, HistoryPoint, Quantile};

/// Deliveries remembered in full per class (id, mail, times), newest kept: enough to tell a
/// second mail of a recent canary (a duplicate) from the same mail read again. Bounded by count,
/// not by time, so the books do not grow with the canary rate or `forget_after`: at about
/// 200 bytes in memory and 370 in the store per record, at most ~6 KiB and ~12 KiB per class.
pub const RECENT_PER_CLASS: usize = 32;

/// Mails remembered as counted duplicates or replays, and as counted forgeries, per probe
/// (each map on its own); beyond it the oldest is forgotten. A flood of copies (or of forged
/// mail, which anyone can send) then costs at most this many records, ~100 bytes each.
pub const MAILS_REMEMBERED: usize = 1024;

/// A canary handed to SMTP and not yet seen in the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightCanary {
    /// Canary id.
    pub id: String,
    /// Class it was sent as.
    pub class: String,
    /// Its sequence number.
    pub seq: u64,
    /// Unix ms taken before the SMTP connection opened.
    pub sent_ms: u64,
    /// Unix ms at which the server accepted it; `None` while the transaction runs.
    pub accepted_ms: Option<u64>,
    /// Queue id the server named when it accepted the canary.
    pub queue_id: Option<String>,
}

/// A canary counted lost, kept for a while to recognise it if it arrives late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostCanary {
    /// The canary as it was in flight.
    pub canary: InFlightCanary,
    /// When it was declared lost.
    pub lost_ms: u64,
}

/// A canary already counted as delivered, kept to recognise duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenCanary {
    /// Its class.
    pub class: String,
    /// When it was sent (its `sent` field).
    #[serde(default)]
    pub sent_ms: u64,
    /// When it was seen; refreshed while the mail stays in place (`cleanup = "keep"`), so it
    /// is remembered as long as it can be read again.
    pub seen_ms: u64,
    /// The receiving server's own timestamp for it, if known.
    #[serde(default)]
    pub server_ms: Option<u64>,
    /// The mail it was seen as (folder and mailbox key): the same mail read again is not a
    /// duplicate, a second mail with the same canary is.
    pub mail: String,
}

/// Running totals of one probe×class. Every counter metric of the class lives here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassTally {
    /// Sequence number of the last canary sent.
    pub last_seq_sent: u64,
    /// Highest sequence number the receiver has seen.
    pub highest_seq_seen: u64,
    /// Canaries accepted by the SMTP server.
    pub sent: u64,
    /// Failed submissions by stage.
    pub send_failures: BTreeMap<String, u64>,
    /// Deliveries by folder.
    pub delivered: BTreeMap<String, u64>,
    /// Canaries not seen within `lost_after`.
    pub lost: u64,
    /// Canaries that arrived after being counted lost.
    pub late: u64,
    /// Second mails carrying an already delivered canary.
    pub duplicates: u64,
    /// Genuine canaries the books had settled or forgotten, arriving (again).
    #[serde(default)]
    pub replayed: u64,
    /// Sequence numbers the receiver saw skipped and that stayed missing past `lost_after`.
    pub sequence_gaps: u64,
    /// Sequence numbers skipped but not yet overdue, oldest first.
    #[serde(default)]
    pub open_gaps: Vec<OpenGap>,
    /// Forged canaries claiming this class.
    pub forged: u64,
    /// Verified canaries that arrived without their `X-Mailcanary` header (recognised by
    /// the body token): something on the way strips unknown headers.
    #[serde(default)]
    pub header_stripped: u64,
    /// SMTP transaction durations as books written before they moved to the probe
    /// ([`ProbeTally::smtp_duration`]) kept them, per class. Loading folds what it holds into
    /// the probe's histogram and rewrites the books once with it empty, so it is counted once.
    /// Still written, always empty: the version before requires the field, so an agent rolled
    /// back to it still loads these books (its per-class SMTP series start again from 0).
    #[serde(default = "smtp_histogram", rename = "smtp_duration")]
    pub legacy_smtp_duration: Histogram,
    /// Delivery delays.
    pub delivery_delay: Histogram,
    /// Server delays (receiving server's timestamp − sent).
    #[serde(default = "delay_histogram")]
    pub server_delay: Histogram,
    /// Per-hop delays of the most recent delivery that had a `Received:` chain, oldest hop
    /// first, at most [`delay::HOP_LABELS`]. (Books written before this kept a histogram per
    /// class and hop here, `hop_delay`; it is left unread: the probe's histograms start anew.)
    #[serde(default)]
    pub last_hop_delay_s: Vec<f64>,
    /// The first server's clock minus the sender's, from the latest delivery.
    #[serde(default)]
    pub clock_skew_s: Option<f64>,
    /// Delay of the most recent delivery, seconds.
    pub last_delay_s: Option<f64>,
    /// When the most recent delivery was seen, Unix ms.
    pub last_delivery_ms: Option<u64>,
    /// Canaries ended by a failed bounce, by enhanced status code (bounded: see
    /// [`bounce::status_label`]).
    #[serde(default)]
    pub bounced: BTreeMap<String, u64>,
    /// Delay notices received for canaries in flight.
    #[serde(default)]
    pub delay_notices: u64,
    /// The most recent bounce or delay notice.
    #[serde(default)]
    pub last_bounce: Option<LastBounce>,
    /// Authentication results the receiving side wrote on deliveries, by `method/result`
    /// (bounded: [`crate::verdict::AuthMethod`] × [`crate::verdict::AuthResult`]).
    #[serde(default)]
    pub auth_results: BTreeMap<String, u64>,
    /// Spam verdicts the receiving side wrote on deliveries, by `filter/verdict` (bounded:
    /// [`crate::verdict::SpamFilter`] × spam, ham).
    #[serde(default)]
    pub spam_verdicts: BTreeMap<String, u64>,
    /// The latest delivery's spam score, by filter.
    #[serde(default)]
    pub spam_scores: BTreeMap<String, f64>,
}

impl Default for ClassTally {
    fn default() -> ClassTally {
        ClassTally {
            last_seq_sent: 0,
            highest_seq_seen: 0,
            sent: 0,
            send_failures: BTreeMap::new(),
            delivered: BTreeMap::new(),
            lost: 0,
            late: 0,
            duplicates: 0,
            replayed: 0,
            sequence_gaps: 0,
            open_gaps: Vec::new(),
            forged: 0,
            header_stripped: 0,
            legacy_smtp_duration: smtp_histogram(),
            delivery_delay: Histogram::new(&DELAY_BUCKETS),
            server_delay: delay_histogram(),
            last_hop_delay_s: Vec::new(),
            clock_skew_s: None,
            last_delay_s: None,
            last_delivery_ms: None,
            bounced: BTreeMap::new(),
            delay_notices: 0,
            last_bounce: None,
            auth_results: BTreeMap::new(),
            spam_verdicts: BTreeMap::new(),
            spam_scores: BTreeMap::new(),
        }
    }
}

fn delay_histogram() -> Histogram {
    Histogram::new(&DELAY_BUCKETS)
}

/// A run of sequence numbers the receiver skipped: `from..=to`, revealed by a canary sent at
/// `revealed_ms`. They count as gaps once `lost_after` has passed since then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenGap {
    /// First missing number.
    pub from: u64,
    /// Last missing number.
    pub to: u64,
    /// `sent` of the canary whose arrival showed them missing.
    pub revealed_ms: u64,
}

impl ClassTally {
    /// Whether `seq` was settled at the receiver: at or below the highest seen and not awaited
    /// in an open gap.
    fn seq_settled(&self, seq: u64) -> bool {
        seq <= self.highest_seq_seen
            && !self
                .open_gaps
                .iter()
                .any(|g| (g.from..=g.to).contains(&seq))
    }

    /// Notes that `seq` (sent at `sent_ms`) arrived: opens a gap for the numbers it skipped, or
    /// closes the one it was awaited in.
    fn seq_arrived(&mut self, seq: u64, sent_ms: u64) {
        if seq > self.highest_seq_seen + 1 {
            self.open_gaps.push(OpenGap {
                from: self.highest_seq_seen + 1,
                to: seq - 1,
                revealed_ms: sent_ms,
            });
        } else if let Some(i) = self
            .open_gaps
            .iter()
            .position(|g| (g.from..=g.to).contains(&seq))
        {
            let gap = self.open_gaps.remove(i);
            let piece = |from, to| OpenGap {
                from,
                to,
                revealed_ms: gap.revealed_ms,
            };
            if seq < gap.to {
                self.open_gaps.insert(i, piece(seq + 1, gap.to));
            }
            if gap.from < seq {
                self.open_gaps.insert(i, piece(gap.from, seq - 1));
            }
        }
        self.highest_seq_seen = self.highest_seq_seen.max(seq);
    }

    /// Counts the open gaps revealed at least `lost_after` before `now_ms`; whether any was.
    fn gaps_overdue(&mut self, now_ms: u64, lost_after: Duration) -> bool {
        let due = |g: &OpenGap| {
            u128::from(now_ms.saturating_sub(g.revealed_ms)) >= lost_after.as_millis()
        };
        let overdue: u64 = self
            .open_gaps
            .iter()
            .filter(|g| due(g))
            .map(|g| g.to - g.from + 1)
            .sum();
        self.open_gaps.retain(|g| !due(g));
        self.sequence_gaps += overdue;
        overdue > 0
    }
}

/// Running totals of a probe that belong to no class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeTally {
    /// Failed mailbox checks by stage.
    pub mailbox_errors: BTreeMap<String, u64>,
    /// Forged canaries claiming a class this probe does not send.
    pub forged_unknown_class: u64,
    /// Mails the mailbox could not read or parse (too large, cut off, refused), each once.
    #[serde(default)]
    pub mails_skipped: u64,
    /// Per-hop delays of every class's deliveries, by hop index (oldest hop 0, at most
    /// [`delay::HOP_LABELS`]), over [`HOP_BUCKETS`]. One histogram per hop, not per class and
    /// hop: which hop holds a class's mail is read from its `last_hop_delay_s`, and the
    /// histograms cost 12 series each. (Books written before kept them over [`DELAY_BUCKETS`];
    /// loading re-buckets them, exactly.)
    #[serde(default)]
    pub hop_delay: Vec<Histogram>,
    /// SMTP transaction durations of every class. Per probe, not per class: the transaction
    /// does not depend on the class (a few hundred bytes more or less), the dashboard sums the
    /// classes, and the histogram costs 14 series.
    #[serde(default = "smtp_histogram")]
    pub smtp_duration: Histogram,
    /// The most recent mail forging one of this probe's canaries, as its sender wrote it.
    #[serde(default)]
    pub last_forged: Option<ForgedMail>,
    /// The TLS of the latest accepted submission's session.
    #[serde(default)]
    pub smtp_tls: Option<crate::send::SessionTls>,
}

impl Default for ProbeTally {
    fn default() -> ProbeTally {
        ProbeTally {
            mailbox_errors: BTreeMap::new(),
            forged_unknown_class: 0,
            mails_skipped: 0,
            hop_delay: Vec::new(),
            smtp_duration: smtp_histogram(),
            last_forged: None,
            smtp_tls: None,
        }
    }
}

impl ProbeTally {
    /// Hop histograms stored over [`DELAY_BUCKETS`] by an older version, over [`HOP_BUCKETS`].
    fn rebucket_hops(&mut self) {
        for h in &mut self.hop_delay {
            if let Some(rebucketed) = h.rebucket(&DELAY_BUCKETS, &HOP_BUCKETS) {
                *h = rebucketed;
            }
        }
    }
}

fn smtp_histogram() -> Histogram {
    Histogram::new(&SMTP_BUCKETS)
}

fn hop_histogram() -> Histogram {
    Histogram::new(&HOP_BUCKETS)
}

/// One change to the durable store, for one probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert or replace an in-flight canary.
    InFlight(InFlightCanary),
    /// Remove an in-flight canary.
    Landed(String),
    /// Insert a lost canary.
    Lost(LostCanary),
    /// Remove a lost canary.
    Unlost(String),
    /// Insert a seen canary under its id.
    Seen(String, SeenCanary),
    /// Remove a seen canary.
    Unseen(String),
    /// Replace a class's totals.
    Class(String, Box<ClassTally>),
    /// Replace the probe's own totals.
    Probe(ProbeTally),
    /// Remember a forged mail as counted.
    Forged(String, u64),
    /// Forget a forged mail.
    Unforged(String),
    /// Remember a mail as counted as a duplicate or a replay.
    Repeated(String, u64),
    /// Forget such a mail.
    Unrepeated(String),
    /// Replace what the mailbox adapter remembers (see [`Ledger::scan_memory`]).
    ScanMemory(String),
    /// Replace what the bounce mailbox's adapter remembers (see
    /// [`Ledger::bounce_scan_memory`]).
    BounceScanMemory(String),
    /// Keep a failed attempt with its transcript (see [`failures`]).
    Failed(Box<Failure>),
    /// Forget a failed attempt, by its id.
    FailureForgotten(String),
    /// Replace a class's delay history (its own record, written once per half hour: see
    /// [`DelayHistory`]).
    History(String, Box<DelayHistory>),
    /// Remove every record of the probe (the first write of a full rewrite of its books).
    Reset,
}

/// Where and when a canary was found.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    /// The folder it was in.
    pub folder: &'a str,
    /// The mail it was found as (`folder/key`).
    pub mail: &'a str,
    /// When the agent saw it.
    pub seen_ms: u64,
    /// The receiving server's own timestamp, if the protocol has one.
    pub server_ms: Option<u64>,
    /// How long the books remember (`agent.forget_after`): a canary sent longer ago than this
    /// and not on the books is a replay.
    pub forget_after: Duration,
    /// The agent's clock as the books are written: when a mail read again was last known to
    /// be there (`seen_ms` stays the time it was first seen).
    pub now_ms: u64,
}

/// What a verified canary's arrival turned out to be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delivery {
    /// Delivered while in flight.
    OnTime {
        /// Its delivery delay.
        delay_s: f64,
    },
    /// Delivered after it had been counted lost.
    Late {
        /// Its delivery delay, hold time included.
        delay_s: f64,
    },
    /// Delivered, but the books had no record of sending it (state reset or forgotten).
    Unexpected {
        /// Its delivery delay, from its own `sent` field.
        delay_s: f64,
    },
    /// A second mail with a canary already delivered.
    Duplicate,
    /// A genuine canary the books no longer await: sent longer than `forget_after` ago, or with
    /// a sequence number already settled. Not a delivery.
    Replayed,
    /// The same mail, already counted (read again, e.g. after a restart with `cleanup = keep`).
    AlreadyCounted,
}

impl Delivery {
    /// Whether this arrival counted as a delivery (rather than a copy or a re-report).
    pub fn is_delivery(&self) -> bool {
        matches!(
            self,
            Delivery::OnTime { .. } | Delivery::Late { .. } | Delivery::Unexpected { .. }
        )
    }
}

/// The in-flight canaries of one class, summed up: kept beside the list so a scrape reads a
/// count and an oldest time instead of walking every canary in flight for every class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ClassInFlight {
    /// How many canaries of the class are in flight.
    count: usize,
    /// Their `sent` times, each with how many canaries share it; the first is the oldest.
    sent: BTreeMap<u64, usize>,
}

/// Everything one probe has on its books.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// Canaries in flight, by id. Private: every change goes through [`Ledger::put_in_flight`]
    /// and [`Ledger::take_in_flight`], which keep `in_flight_by_class` in step.
    in_flight: BTreeMap<String, InFlightCanary>,
    /// Per-class count and `sent` times of `in_flight`; never stored, rebuilt by replay.
    in_flight_by_class: BTreeMap<String, ClassInFlight>,
    /// Canaries counted lost, by id.
    pub lost: BTreeMap<String, LostCanary>,
    /// The most recent deliveries, by id: at most [`RECENT_PER_CLASS`] per class (the oldest
    /// seen is forgotten first) and none older than `forget_after`.
    pub seen: BTreeMap<String, SeenCanary>,
    /// Forged mails already counted, by mail (`folder/key`), with when: a forgery left in
    /// place is counted once, not again after every restart.
    pub forged: BTreeMap<String, u64>,
    /// Mails counted as a duplicate or as replayed, by mail (`folder/key`), with when: each
    /// such mail counts once, also when it is read again after a restart.
    pub repeated: BTreeMap<String, u64>,
    /// Totals per class.
    pub classes: BTreeMap<String, ClassTally>,
    /// Totals of the probe.
    pub probe: ProbeTally,
    /// Delay history per class, for the status page's chart and 24 h quantiles. Boxed: a
    /// map node holds eleven entries inline, and each history is 1.5 KB.
    pub history: BTreeMap<String, Box<DelayHistory>>,
    /// What the mailbox adapter remembers of the mail it has looked at (opaque to the books),
    /// so a restart or the next `once` run does not read old mail again.
    pub scan_memory: Option<String>,
    /// The same for the probe's bounce mailbox, when this probe keeps it (a mailbox watched
    /// only for bounces is kept by its first such probe).
    pub bounce_scan_memory: Option<String>,
    /// The last failed attempts, newest first, each with its transcript (see [`failures`]).
    pub failures: Vec<Failure>,
    /// Set when loading found more records than the bounds keep (books written by a version
    /// that remembered every delivery for `forget_after`): the store is rewritten once, see
    /// [`Ledger::compact_loaded`]. Never stored.
    over_bounds_on_load: bool,
    /// SMTP histograms loaded from class records of books written while they were per class
    /// ([`ClassTally::legacy_smtp_duration`]), summed; [`Ledger::compact_loaded`] folds them
    /// into the probe's and rewrites the books. Held apart until then because the probe's own
    /// record is loaded after the classes' and replaces its totals. Never stored.
    smtp_to_fold: Option<Histogram>,
}

impl Ledger {
    /// Makes sure a class has totals (so its series exist from the start); returns the write
    /// when it was new.
    pub fn open_class(&mut self, class: &str) -> Option<Write> {
        if self.classes.contains_key(class) {
            return None;
        }
        self.classes
            .insert(class.to_string(), ClassTally::default());
        Some(self.class_write(class))
    }

    fn class_write(&self, class: &str) -> Write {
        Write::Class(class.to_string(), Box::new(self.classes[class].clone()))
    }

    fn tally(&mut self, class: &str) -> &mut ClassTally {
        self.classes.entry(class.to_string()).or_default()
    }

    /// Canaries in flight, by id.
    pub fn in_flight(&self) -> &BTreeMap<String, InFlightCanary> {
        &self.in_flight
    }

    /// Number of canaries of `class` in flight.
    pub fn in_flight_count(&self, class: &str) -> usize {
        self.in_flight_by_class.get(class).map_or(0, |c| c.count)
    }

    /// `sent` of the oldest canary of `class` in flight.
    pub fn oldest_sent(&self, class: &str) -> Option<u64> {
        self.in_flight_by_class
            .get(class)
            .and_then(|c| c.sent.keys().next().copied())
    }

    /// Puts a canary in flight (replacing one with its id) and counts it for its class.
    fn put_in_flight(&mut self, canary: InFlightCanary) {
        let by_class = self
            .in_flight_by_class
            .entry(canary.class.clone())
            .or_default();
        by_class.count += 1;
        *by_class.sent.entry(canary.sent_ms).or_default() += 1;
        if let Some(old) = self.in_flight.insert(canary.id.clone(), canary) {
            self.uncount_in_flight(&old);
        }
    }

    /// Takes a canary out of flight and out of its class's count.
    fn take_in_flight(&mut self, id: &str) -> Option<InFlightCanary> {
        let canary = self.in_flight.remove(id)?;
        self.uncount_in_flight(&canary);
        Some(canary)
    }

    fn uncount_in_flight(&mut self, canary: &InFlightCanary) {
        let Some(by_class) = self.in_flight_by_class.get_mut(&canary.class) else {
            return;
        };
        by_class.count = by_class.count.saturating_sub(1);
        if let Some(n) = by_class.sent.get_mut(&canary.sent_ms) {
            *n -= 1;
            if *n == 0 {
                by_class.sent.remove(&canary.sent_ms);
            }
        }
        if by_class.count == 0 {
            self.in_flight_by_class.remove(&canary.class);
        }
    }

    /// Puts a canary on the books before it is submitted; returns its sequence number.
    pub fn begin_send(&mut self, id: &str, class: &str, sent_ms: u64) -> (u64, Vec<Write>) {
        let tally = self.tally(class);
        tally.last_seq_sent += 1;
        let seq = tally.last_seq_sent;
        let canary = InFlightCanary {
            id: id.to_string(),
            class: class.to_string(),
            seq,
            sent_ms,
            accepted_ms: None,
            queue_id: None,
        };
        self.put_in_flight(canary.clone());
        (seq, vec![self.class_write(class), Write::InFlight(canary)])
    }

    /// The server accepted the canary.
    ///
    /// A server can deliver a canary before its acceptance reply reaches the agent (a loaded
    /// machine, a slow last hop back), so the canary may already have left `in_flight` as a
    /// delivery; it still counts as sent, or `sent_total` would fall behind `delivered_total`.
    pub fn accepted(
        &mut self,
        id: &str,
        accepted_ms: u64,
        queue_id: Option<String>,
        smtp_s: f64,
    ) -> Vec<Write> {
        let (class, still_in_flight) = match self.in_flight.get_mut(id) {
            Some(canary) => {
                canary.accepted_ms = Some(accepted_ms);
                canary.queue_id = queue_id;
                (canary.class.clone(), Some(canary.clone()))
            }
            None => match self.seen.get(id) {
                Some(seen) => (seen.class.clone(), None),
                None => return Vec::new(),
            },
        };
        self.tally(&class).sent += 1;
        self.probe.smtp_duration.observe(&SMTP_BUCKETS, smtp_s);
        let mut writes = vec![self.class_write(&class), Write::Probe(self.probe.clone())];
        writes.extend(still_in_flight.map(Write::InFlight));
        writes
    }

    /// The submission failed at `stage`; the canary was never accepted, so it leaves the books.
    ///
    /// Its sequence number is handed out again unless the failure was a timeout (after which
    /// the server may still have accepted it), so receivers do not see a gap for mail that was
    /// never sent.
    pub fn send_failed(&mut self, id: &str, stage: SendStage) -> Vec<Write> {
        let Some(canary) = self.take_in_flight(id) else {
            return Vec::new();
        };
        let tally = self.tally(&canary.class);
        *tally.send_failures.entry(stage.to_string()).or_default() += 1;
        if stage != SendStage::Timeout && tally.last_seq_sent == canary.seq {
            tally.last_seq_sent -= 1;
        }
        vec![
            self.class_write(&canary.class),
            Write::Landed(id.to_string()),
        ]
    }

    /// A verified canary of this probe was found in `folder` as `mail`, at `seen_ms`, with the
    /// servers' view of its journey in `servers`.
    pub fn arrived(
        &mut self,
        canary: &Canary,
        found: Found<'_>,
        servers: &Breakdown,
    ) -> (Delivery, Vec<Write>) {
        let Found {
            folder,
            mail,
            seen_ms,
            server_ms,
            forget_after,
            now_ms,
        } = found;
        let forget_ms = u64::try_from(forget_after.as_millis()).unwrap_or(u64::MAX);
        // A mail left in place (`cleanup = "keep"`) is read on every look: its memory is
        // refreshed now and then, so it is not forgotten and then counted again. Measured
        // from `now_ms`: adapters report a mail read again with the time it was first seen.
        let stale = |at: u64| now_ms.saturating_sub(at) >= forget_ms / 2;
        if let Some(at) = self.repeated.get_mut(mail) {
            if !stale(*at) {
                return (Delivery::AlreadyCounted, Vec::new());
            }
            *at = now_ms;
            return (
                Delivery::AlreadyCounted,
                vec![Write::Repeated(mail.to_string(), now_ms)],
            );
        }
        if let Some(seen) = self.seen.get_mut(&canary.id) {
            if seen.mail == mail {
                if !stale(seen.seen_ms) {
                    return (Delivery::AlreadyCounted, Vec::new());
                }
                seen.seen_ms = now_ms;
                let refreshed = Write::Seen(canary.id.clone(), seen.clone());
                return (Delivery::AlreadyCounted, vec![refreshed]);
            }
            self.tally(&canary.class).duplicates += 1;
            return (
                Delivery::Duplicate,
                self.repeated_writes(mail, &canary.class, now_ms),
            );
        }
        let delay_s = delay::delivery_delay(canary.sent_ms, seen_ms);
        let mut writes = Vec::new();
        let arrival = if self.take_in_flight(&canary.id).is_some() {
            writes.push(Write::Landed(canary.id.clone()));
            Delivery::OnTime { delay_s }
        } else if self.lost.remove(&canary.id).is_some() {
            writes.push(Write::Unlost(canary.id.clone()));
            self.tally(&canary.class).late += 1;
            Delivery::Late { delay_s }
        } else {
            let forgotten = seen_ms.saturating_sub(canary.sent_ms) >= forget_ms;
            let tally = self.tally(&canary.class);
            if forgotten || tally.seq_settled(canary.seq) {
                tally.replayed += 1;
                return (
                    Delivery::Replayed,
                    self.repeated_writes(mail, &canary.class, now_ms),
                );
            }
            Delivery::Unexpected { delay_s }
        };
        let tally = self.tally(&canary.class);
        *tally.delivered.entry(folder.to_string()).or_default() += 1;
        tally.delivery_delay.observe(&DELAY_BUCKETS, delay_s);
        tally.last_delay_s = Some(delay_s);
        tally.last_delivery_ms = Some(seen_ms);
        if let Some(server_s) = servers.server_delay_s {
            tally.server_delay.observe(&DELAY_BUCKETS, server_s);
        }
        let hops = delay::fold_hops(&servers.hops, delay::HOP_LABELS);
        if !hops.is_empty() {
            tally.last_hop_delay_s = hops.clone();
        }
        if servers.clock_skew_s.is_some() {
            tally.clock_skew_s = servers.clock_skew_s;
        }
        tally.seq_arrived(canary.seq, canary.sent_ms);
        writes.extend(self.record_delay(&canary.class, seen_ms, delay_s));
        if !hops.is_empty() {
            let histograms = &mut self.probe.hop_delay;
            if histograms.len() < hops.len() {
                histograms.resize_with(hops.len(), hop_histogram);
            }
            for (h, seconds) in histograms.iter_mut().zip(&hops) {
                h.observe(&HOP_BUCKETS, *seconds);
            }
            writes.push(Write::Probe(self.probe.clone()));
        }
        let seen = SeenCanary {
            class: canary.class.clone(),
            sent_ms: canary.sent_ms,
            seen_ms,
            server_ms,
            mail: mail.to_string(),
        };
        self.seen.insert(canary.id.clone(), seen.clone());
        writes.push(Write::Seen(canary.id.clone(), seen));
        writes.extend(
            self.trim_recent(&canary.class)
                .into_iter()
                .map(Write::Unseen),
        );
        writes.push(self.class_write(&canary.class));
        (arrival, writes)
    }

    /// Remembers `mail` as counted (a duplicate or a replay) and returns the writes for it.
    fn repeated_writes(&mut self, mail: &str, class: &str, now_ms: u64) -> Vec<Write> {
        let mut writes = self.remember_counted(mail, now_ms);
        writes.push(self.class_write(class));
        writes
    }

    /// Remembers `mail` among the mails already counted (bounded, oldest forgotten first), so
    /// reading it again counts nothing; returns the writes.
    fn remember_counted(&mut self, mail: &str, now_ms: u64) -> Vec<Write> {
        self.repeated.insert(mail.to_string(), now_ms);
        let mut writes = vec![Write::Repeated(mail.to_string(), now_ms)];
        writes.extend(
            trim_mails(&mut self.repeated)
                .into_iter()
                .map(Write::Unrepeated),
        );
        writes
    }

    /// Forgets `class`'s oldest deliveries beyond [`RECENT_PER_CLASS`]; returns their ids.
    fn trim_recent(&mut self, class: &str) -> Vec<String> {
        let mut of_class: Vec<(u64, &String)> = self
            .seen
            .iter()
            .filter(|(_, s)| s.class == class)
            .map(|(id, s)| (s.seen_ms, id))
            .collect();
        if of_class.len() <= RECENT_PER_CLASS {
            return Vec::new();
        }
        of_class.sort_unstable();
        let excess: Vec<String> = of_class[..of_class.len() - RECENT_PER_CLASS]
            .iter()
            .map(|(_, id)| (*id).clone())
            .collect();
        for id in &excess {
            self.seen.remove(id);
        }
        excess
    }

    /// Books loaded as an older version wrote them, once: the writes that replace the stored
    /// books by what was kept. Loading stopped at the bounds (books of a version that
    /// remembered every delivery for `forget_after`), or found per-class SMTP histograms, which
    /// are folded into the probe's here. The rewrite drops them from the class records, so a
    /// later start cannot fold them twice.
    pub fn compact_loaded(&mut self) -> Vec<Write> {
        let folded = self.smtp_to_fold.take();
        if let Some(smtp) = &folded {
            self.probe.smtp_duration.merge(smtp);
        }
        if !std::mem::take(&mut self.over_bounds_on_load) && folded.is_none() {
            return Vec::new();
        }
        self.full_writes()
    }

    /// [`Ledger::arrived`] with no server timestamps and a `forget_after` of a week, for tests
    /// of the accounting.
    #[cfg(test)]
    pub(crate) fn arrived_at(
        &mut self,
        canary: &Canary,
        folder: &str,
        mail: &str,
        seen_ms: u64,
    ) -> (Delivery, Vec<Write>) {
        let found = Found {
            folder,
            mail,
            seen_ms,
            server_ms: None,
            forget_after: Duration::from_secs(7 * 24 * 3600),
            now_ms: seen_ms,
        };
        self.arrived(canary, found, &Breakdown::default())
    }

    /// `mail` claims to be this probe's canary but its signature fails. Counted once per mail.
    pub fn forged(&mut self, claimed_class: &str, mail: &str, now_ms: u64) -> Vec<Write> {
        if self.forged.contains_key(mail) {
            return Vec::new();
        }
        self.forged.insert(mail.to_string(), now_ms);
        let mut writes = vec![Write::Forged(mail.to_string(), now_ms)];
        writes.extend(
            trim_mails(&mut self.forged)
                .into_iter()
                .map(Write::Unforged),
        );
        match self.classes.get_mut(claimed_class) {
            Some(tally) => {
                tally.forged += 1;
                writes.push(self.class_write(claimed_class));
            }
            None => {
                self.probe.forged_unknown_class += 1;
                writes.push(Write::Probe(self.probe.clone()));
            }
        }
        writes
    }

    /// A mailbox check failed at `stage`.
    pub fn mailbox_error(&mut self, stage: MailboxStage) -> Vec<Write> {
        *self
            .probe
            .mailbox_errors
            .entry(stage.to_string())
            .or_default() += 1;
        vec![Write::Probe(self.probe.clone())]
    }

    /// Declares canaries older than their class's `lost_after` lost, and forgets lost and seen
    /// canaries older than `forget_after`. Returns the ids declared lost and the writes.
    pub fn expire(
        &mut self,
        now_ms: u64,
        lost_after: impl Fn(&str) -> Duration,
        forget_after: Duration,
    ) -> (Vec<InFlightCanary>, Vec<Write>) {
        let age_ms = |since: u64| now_ms.saturating_sub(since);
        let overdue: Vec<String> = self
            .in_flight
            .values()
            .filter(|c| u128::from(age_ms(c.sent_ms)) >= lost_after(&c.class).as_millis())
            .map(|c| c.id.clone())
            .collect();
        let mut writes = Vec::new();
        let mut declared = Vec::new();
        for id in overdue {
            let canary = self.take_in_flight(&id).expect("listed above");
            self.tally(&canary.class).lost += 1;
            let lost = LostCanary {
                canary: canary.clone(),
                lost_ms: now_ms,
            };
            self.lost.insert(id.clone(), lost.clone());
            writes.push(Write::Lost(lost));
            writes.push(Write::Landed(id));
            writes.push(self.class_write(&canary.class));
            declared.push(canary);
        }
        let classes: Vec<String> = self.classes.keys().cloned().collect();
        for class in classes {
            let lost_after = lost_after(&class);
            if self.tally(&class).gaps_overdue(now_ms, lost_after) {
                writes.push(self.class_write(&class));
            }
        }
        let forget_ms = u64::try_from(forget_after.as_millis()).unwrap_or(u64::MAX);
        self.lost.retain(|id, l| {
            let keep = age_ms(l.lost_ms) < forget_ms;
            if !keep {
                writes.push(Write::Unlost(id.clone()));
            }
            keep
        });
        self.seen.retain(|id, s| {
            let keep = age_ms(s.seen_ms) < forget_ms;
            if !keep {
                writes.push(Write::Unseen(id.clone()));
            }
            keep
        });
        self.forged.retain(|mail, at| {
            let keep = age_ms(*at) < forget_ms;
            if !keep {
                writes.push(Write::Unforged(mail.clone()));
            }
            keep
        });
        self.repeated.retain(|mail, at| {
            let keep = age_ms(*at) < forget_ms;
            if !keep {
                writes.push(Write::Unrepeated(mail.clone()));
            }
            keep
        });
        writes.extend(self.expire_failures(now_ms));
        (declared, writes)
    }

    /// Applies a write to this ledger: how a ledger is rebuilt from the store at start-up.
    pub fn replay(&mut self, write: Write) {
        match write {
            Write::InFlight(c) => self.put_in_flight(c),
            Write::Landed(id) => {
                self.take_in_flight(&id);
            }
            Write::Lost(l) => {
                self.lost.insert(l.canary.id.clone(), l);
            }
            Write::Unlost(id) => {
                self.lost.remove(&id);
            }
            Write::Seen(id, s) => {
                let class = s.class.clone();
                self.seen.insert(id, s);
                self.over_bounds_on_load |= !self.trim_recent(&class).is_empty();
            }
            Write::Unseen(id) => {
                self.seen.remove(&id);
            }
            Write::Class(class, mut tally) => {
                let smtp = std::mem::replace(&mut tally.legacy_smtp_duration, smtp_histogram());
                if smtp.count() > 0 {
                    self.smtp_to_fold
                        .get_or_insert_with(smtp_histogram)
                        .merge(&smtp);
                }
                self.classes.insert(class, *tally);
            }
            Write::Probe(mut p) => {
                p.rebucket_hops();
                self.probe = p;
            }
            Write::Forged(mail, at) => {
                self.forged.insert(mail, at);
                self.over_bounds_on_load |= !trim_mails(&mut self.forged).is_empty();
            }
            Write::Unforged(mail) => {
                self.forged.remove(&mail);
            }
            Write::Repeated(mail, at) => {
                self.repeated.insert(mail, at);
                self.over_bounds_on_load |= !trim_mails(&mut self.repeated).is_empty();
            }
            Write::Unrepeated(mail) => {
                self.repeated.remove(&mail);
            }
            Write::ScanMemory(memory) => self.scan_memory = Some(memory),
            Write::BounceScanMemory(memory) => self.bounce_scan_memory = Some(memory),
            Write::Failed(failure) => self.replay_failure(*failure),
            Write::FailureForgotten(id) => self.failures.retain(|f| f.id != id),
            Write::History(class, h) => {
                self.history.insert(class, h);
            }
            Write::Reset => *self = Ledger::default(),
        }
    }

    /// Writes that replace everything stored for this probe by these books.
    pub fn full_writes(&self) -> Vec<Write> {
        let mut writes = vec![Write::Reset, Write::Probe(self.probe.clone())];
        writes.extend(self.classes.keys().map(|c| self.class_write(c)));
        writes.extend(self.in_flight.values().cloned().map(Write::InFlight));
        writes.extend(self.lost.values().cloned().map(Write::Lost));
        writes.extend(
            self.seen
                .iter()
                .map(|(id, s)| Write::Seen(id.clone(), s.clone())),
        );
        // Without these, a store repair would count every forged, duplicate or replayed mail
        // still in the mailbox once more.
        writes.extend(
            self.forged
                .iter()
                .map(|(m, at)| Write::Forged(m.clone(), *at)),
        );
        writes.extend(
            self.repeated
                .iter()
                .map(|(m, at)| Write::Repeated(m.clone(), *at)),
        );
        writes.extend(self.scan_memory.clone().map(Write::ScanMemory));
        writes.extend(self.bounce_scan_memory.clone().map(Write::BounceScanMemory));
        writes.extend(
            self.failures
                .iter()
                .cloned()
                .map(|f| Write::Failed(Box::new(f))),
        );
        writes.extend(
            self.history
                .iter()
                .map(|(c, h)| Write::History(c.clone(), h.clone())),
        );
        writes
    }

    /// The mailbox adapter's memory moved on; nothing to write when it did not change.
    pub fn remember_scan(&mut self, memory: String) -> Vec<Write> {
        if self.scan_memory.as_ref() == Some(&memory) {
            return Vec::new();
        }
        self.scan_memory = Some(memory.clone());
        vec![Write::ScanMemory(memory)]
    }

    /// [`Ledger::remember_scan`] for the bounce mailbox.
    pub fn remember_bounce_scan(&mut self, memory: String) -> Vec<Write> {
        if self.bounce_scan_memory.as_ref() == Some(&memory) {
            return Vec::new();
        }
        self.bounce_scan_memory = Some(memory.clone());
        vec![Write::BounceScanMemory(memory)]
    }

    /// A verified canary of `class` was delivered without its header (found by its body token).
    pub fn arrived_without_header(&mut self, class: &str) -> Vec<Write> {
        self.tally(class).header_stripped += 1;
        vec![self.class_write(class)]
    }

    /// The mailbox skipped `count` mails it could not read.
    pub fn mails_skipped(&mut self, count: u64) -> Vec<Write> {
        self.probe.mails_skipped += count;
        vec![Write::Probe(self.probe.clone())]
    }

    /// Age of the oldest in-flight canary of `class` at `now_ms`; 0 when none.
    pub fn oldest_age(&self, class: &str, now_ms: u64) -> f64 {
        delay::oldest_age(self.oldest_sent(class), now_ms)
    }
}

/// Forgets the mails remembered longest beyond [`MAILS_REMEMBERED`]; returns them.
fn trim_mails(mails: &mut BTreeMap<String, u64>) -> Vec<String> {
    let mut forgotten = Vec::new();
    while mails.len() > MAILS_REMEMBERED {
        let oldest = mails
            .iter()
            .min_by_key(|(mail, at)| (**at, *mail))
            .map(|(mail, _)| mail.clone())
            .expect("not empty");
        mails.remove(&oldest);
        forgotten.push(oldest);
    }
    forgotten
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod upgrade_tests;
