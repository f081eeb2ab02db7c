//! What the person paged at 3 a.m. wants first: per probe and class, one state that reads at a
//! glance (`ok`, `late`, `lost`, `send_failing`, `mailbox_down`, `unknown`) with the figures
//! behind it. Served as `/api/status` (JSON, for scripts and the page's own tests) and drawn by
//! the status page, so both always say the same.
//!
//! The state is judged from the books and from what the probe remembers as going wrong right
//! now (failed submissions since the last accepted one, losses since the last on-time
//! delivery); `late` is the probe's `late_after` (default 15 min, the threshold of the
//! `MailDeliveryDelayed` alert, so the page and the pager agree on what late means).

use std::sync::Arc;

use serde::Serialize;

use crate::ledger::{ClassTally, HistoryPoint, Ledger, Quantile};
use crate::probe::Probe;

/// How a probe's class is doing, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassState {
    /// Its canaries cannot be submitted: the last attempt failed.
    SendFailing,
    /// The mailbox they should arrive in cannot be read.
    MailboxDown,
    /// Canaries were counted lost since the last one arrived in time.
    Lost,
    /// A canary in flight is older than the probe's `late_after`.
    Late,
    /// Nothing wrong.
    Ok,
    /// Nothing happened yet (just started, nothing sent or seen).
    Unknown,
}

impl ClassState {
    /// The word shown for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClassState::SendFailing => "send_failing",
            ClassState::MailboxDown => "mailbox_down",
            ClassState::Lost => "lost",
            ClassState::Late => "late",
            ClassState::Ok => "ok",
            ClassState::Unknown => "unknown",
        }
    }
}

/// What the state of a class is judged from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Submissions failed since the last accepted one.
    pub send_failures: u64,
    /// Whether the last mailbox check succeeded.
    pub mailbox_up: bool,
    /// Canaries lost since the last on-time delivery.
    pub lost: u64,
    /// Age of the oldest canary in flight, seconds (0 with none).
    pub oldest_in_flight_age_s: f64,
    /// The probe's `late_after`, seconds.
    pub late_after_s: f64,
    /// Whether anything was sent, failed or delivered yet.
    pub anything_yet: bool,
}

/// The state `signals` amount to, the worst first.
pub fn judge(signals: Signals) -> ClassState {
    if signals.send_failures > 0 {
        ClassState::SendFailing
    } else if !signals.mailbox_up && signals.anything_yet {
        ClassState::MailboxDown
    } else if signals.lost > 0 {
        ClassState::Lost
    } else if signals.oldest_in_flight_age_s > signals.late_after_s {
        ClassState::Late
    } else if !signals.anything_yet {
        ClassState::Unknown
    } else {
        ClassState::Ok
    }
}

/// The whole agent, as `/api/status` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The agent's id.
    pub agent: String,
    /// When this was taken, Unix seconds.
    pub generated_at: f64,
    /// Every probe, in config order.
    pub probes: Vec<ProbeStatus>,
}

/// One probe.
#[derive(Debug, Serialize)]
pub struct ProbeStatus {
    /// Its name.
    pub name: String,
    /// The receiving mailbox's protocol.
    pub protocol: &'static str,
    /// Whether the last check of its mailbox succeeded.
    pub mailbox_up: bool,
    /// Each class it sends.
    pub classes: Vec<ClassStatus>,
    /// Its last failed attempts, newest first, with what was said on the wire (see
    /// [`crate::ledger::failures`] for the bounds).
    pub last_failures: Vec<FailureStatus>,
    /// The last mail that forged one of its canaries (the forger's own From and Subject:
    /// escape them wherever they are shown).
    pub last_forged: Option<crate::ledger::ForgedMail>,
}

/// One failed attempt, as the books keep it. The message and the transcript carry a server's
/// words: escape them wherever they are shown.
#[derive(Debug, Serialize)]
pub struct FailureStatus {
    /// When it failed, Unix seconds.
    pub at: f64,
    /// `smtp`, `imap`, `pop3` or `maildir`.
    pub side: String,
    /// The stage label of `send_failures_total` or `mailbox_errors_total`.
    pub stage: String,
    /// What went wrong.
    pub message: String,
    /// The dialogue of the attempt: `C: …` commands, `S: …` replies, `-- …` notes of ours;
    /// credentials replaced by `<redacted>`.
    pub transcript: Vec<String>,
}

/// One probe × class.
#[derive(Debug, Serialize)]
pub struct ClassStatus {
    /// The class.
    pub class: String,
    /// How it is doing.
    pub state: ClassState,
    /// Delay of the last delivery, seconds.
    pub last_delay_seconds: Option<f64>,
    /// Median delivery delay of the current hour and the 23 before it, seconds; `null`
    /// without deliveries then. An estimate: see [`crate::ledger::DelayHistory`] for how close.
    pub median_delay_24h_seconds: Option<f64>,
    /// 95th percentile of the same, seconds.
    pub p95_delay_24h_seconds: Option<f64>,
    /// The brackets certainly holding the median and the p95 (for the page; not in the JSON,
    /// whose consumers want one number).
    #[serde(skip)]
    pub quantiles_24h: Option<(Quantile, Quantile)>,
    /// The non-empty half hours of the last 48 h, oldest first.
    pub history: Vec<HistoryPoint>,
    /// When the last delivery was seen, Unix seconds.
    pub last_delivery_timestamp: Option<f64>,
    /// Age of the oldest canary in flight, seconds (0 with none).
    pub oldest_in_flight_age_seconds: f64,
    /// Canaries in flight.
    pub in_flight: usize,
    /// Canaries accepted by the SMTP server.
    pub sent: u64,
    /// Canaries delivered (all folders).
    pub delivered: u64,
    /// Canaries counted lost.
    pub lost: u64,
    /// Canaries bounced.
    pub bounced: u64,
    /// The last bounce or delay notice: `failed 5.1.1: <diagnostic> (canary ID)` (the
    /// diagnostic is a remote server's words: escape it wherever it is shown).
    pub last_bounce: Option<String>,
}

/// The status of `probes` at `now_ms`.
pub fn status(agent: &str, probes: &[Arc<Probe>], now_ms: u64) -> Status {
    Status {
        agent: agent.to_string(),
        generated_at: now_ms as f64 / 1000.0,
        probes: probes.iter().map(|p| probe_status(p, now_ms)).collect(),
    }
}

fn probe_status(probe: &Probe, now_ms: u64) -> ProbeStatus {
    let mailbox_up = probe.mailbox_up();
    let (classes, last_failures, last_forged) = probe.read_ledger(|ledger| {
        let classes = ledger
            .classes
            .iter()
            .map(|(class, t)| {
                let state = class_state(probe, ledger, class, t, mailbox_up, now_ms);
                class_status(ledger, class, t, state, now_ms)
            })
            .collect();
        (
            classes,
            ledger.failures.iter().map(failure_status).collect(),
            ledger.probe.last_forged.clone(),
        )
    });
    ProbeStatus {
        name: probe.config().name.clone(),
        protocol: probe.config().mailbox.protocol(),
        mailbox_up,
        classes,
        last_failures,
        last_forged,
    }
}

/// The worst state of `probe`'s classes (`unknown` without any), judged as [`status`] judges
/// them but without building the rest: what the overview ranks every probe by before it
/// builds the status of the ones it shows.
pub fn worst_state(probe: &Probe, now_ms: u64) -> ClassState {
    let mailbox_up = probe.mailbox_up();
    probe.read_ledger(|ledger| {
        ledger
            .classes
            .iter()
            .map(|(class, t)| class_state(probe, ledger, class, t, mailbox_up, now_ms))
            .min()
            .unwrap_or(ClassState::Unknown)
    })
}

/// How `class` of `probe` is doing, from its books and the probe's troubles in memory.
fn class_state(
    probe: &Probe,
    ledger: &Ledger,
    class: &str,
    t: &ClassTally,
    mailbox_up: bool,
    now_ms: u64,
) -> ClassState {
    let (send_failures, lost) = probe.troubles(class);
    let delivered = t.delivered.values().any(|n| *n > 0);
    judge(Signals {
        send_failures,
        mailbox_up,
        lost,
        oldest_in_flight_age_s: ledger.oldest_age(class, now_ms),
        late_after_s: probe.config().late_after.as_secs_f64(),
        anything_yet: t.sent > 0 || delivered || !t.send_failures.is_empty(),
    })
}

fn failure_status(f: &crate::ledger::Failure) -> FailureStatus {
    FailureStatus {
        at: f.at_ms as f64 / 1000.0,
        side: f.side.clone(),
        stage: f.stage.clone(),
        message: f.message.clone(),
        transcript: f.transcript.clone(),
    }
}

fn class_status(
    ledger: &Ledger,
    class: &str,
    t: &ClassTally,
    state: ClassState,
    now_ms: u64,
) -> ClassStatus {
    let oldest = ledger.oldest_age(class, now_ms);
    let delivered = t.delivered.values().sum::<u64>();
    let history = ledger.history.get(class);
    let quantile = |q| history.and_then(|h| h.quantile(now_ms, q));
    let quantiles_24h = quantile(0.5).zip(quantile(0.95));
    ClassStatus {
        class: class.to_string(),
        state,
        last_delay_seconds: t.last_delay_s,
        median_delay_24h_seconds: quantiles_24h.map(|(m, _)| m.estimate),
        p95_delay_24h_seconds: quantiles_24h.map(|(_, p)| p.estimate),
        quantiles_24h,
        history: history.map_or_else(Vec::new, |h| h.points(now_ms)),
        last_delivery_timestamp: t.last_delivery_ms.map(|ms| ms as f64 / 1000.0),
        oldest_in_flight_age_seconds: oldest,
        in_flight: ledger.in_flight_count(class),
        sent: t.sent,
        delivered,
        lost: t.lost,
        bounced: t.bounced.values().sum(),
        last_bounce: t.last_bounce.as_ref().map(|b| {
            let diagnostic = b.diagnostic.as_deref().unwrap_or("no diagnostic");
            format!("{} {}: {diagnostic} (canary {})", b.action, b.status, b.id)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Signals {
        Signals {
            mailbox_up: true,
            anything_yet: true,
            late_after_s: 900.0,
            ..Signals::default()
        }
    }

    #[test]
    fn states_are_judged_worst_first() {
        assert_eq!(judge(ok()), ClassState::Ok);
        assert_eq!(
            judge(Signals {
                anything_yet: false,
                ..ok()
            }),
            ClassState::Unknown
        );
        let late = Signals {
            oldest_in_flight_age_s: 901.0,
            ..ok()
        };
        assert_eq!(judge(late), ClassState::Late);
        assert_eq!(
            judge(Signals {
                oldest_in_flight_age_s: 900.0,
                ..ok()
            }),
            ClassState::Ok
        );
        let lost = Signals { lost: 1, ..late };
        assert_eq!(judge(lost), ClassState::Lost);
        let down = Signals {
            mailbox_up: false,
            ..lost
        };
        assert_eq!(judge(down), ClassState::MailboxDown);
        assert_eq!(
            judge(Signals {
                send_failures: 2,
                ..down
            }),
            ClassState::SendFailing
        );
        // Before the first check the mailbox is not known to be down.
        let fresh = Signals {
            mailbox_up: false,
            anything_yet: false,
            ..ok()
        };
        assert_eq!(judge(fresh), ClassState::Unknown);
    }

    #[test]
    fn states_serialise_as_their_words() {
        for state in [
            ClassState::SendFailing,
            ClassState::MailboxDown,
            ClassState::Lost,
            ClassState::Late,
            ClassState::Ok,
            ClassState::Unknown,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
    }
}
