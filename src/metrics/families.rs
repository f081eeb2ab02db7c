//! The families in exposition order, each with how its series are written from the books.
//!
//! Nothing counts here: every value comes from the books (the ledgers, which the store keeps
//! durable, so counters and histograms continue across restarts and `once` runs) at render
//! time, and `oldest_in_flight_age_seconds` is computed for the moment of the scrape, so it
//! keeps growing while mail is late. Each series reads totals the books keep (no list of
//! canaries is walked), so rendering time grows with the number of series alone.

use crate::delay::HOP_LABELS;
use crate::ledger::{ClassTally, DELAY_BUCKETS, HOP_BUCKETS, Histogram, Ledger, SMTP_BUCKETS};
use crate::stage::{MailboxStage, SendStage};

use super::deliverability;
use super::text::{Buckets, Kind, Text};
use super::{AgentFigures, UNKNOWN_CLASS};

/// `le` values of [`DELAY_BUCKETS`].
pub(super) const DELAY: Buckets = Buckets {
    bounds: &DELAY_BUCKETS,
    le: &[
        "1", "2", "5", "10", "15", "30", "60", "120", "300", "600", "900", "1800", "3600", "7200",
        "14400", "21600", "43200", "86400", "172800",
    ],
};

/// `le` values of [`HOP_BUCKETS`].
pub(super) const HOP: Buckets = Buckets {
    bounds: &HOP_BUCKETS,
    le: &[
        "1", "5", "30", "120", "600", "1800", "3600", "14400", "86400",
    ],
};

/// `le` values of [`SMTP_BUCKETS`].
pub(super) const SMTP: Buckets = Buckets {
    bounds: &SMTP_BUCKETS,
    le: &[
        "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120",
    ],
};

/// The probe whose series are being written: its labels, its mailbox's health, its books
/// (locked while they are read) and the moment of the scrape.
pub(super) struct At<'a> {
    pub(super) name: &'a str,
    pub(super) folders: &'a [String],
    pub(super) protocol: &'a str,
    pub(super) up: bool,
    pub(super) steps: crate::mailbox::Steps,
    pub(super) ledger: &'a Ledger,
    pub(super) now_ms: u64,
}

/// How a family's series are written.
pub(super) enum Series {
    /// Once for the agent.
    Agent(fn(&mut Text, &AgentFigures)),
    /// For each probe, however the family's labels go.
    Probe(fn(&mut Text, &At<'_>)),
    /// For each probe, one counter per class (`probe`, `class`).
    ClassCounter(fn(&ClassTally) -> u64),
    /// For each probe, one gauge per class that has a value (`probe`, `class`).
    ClassGauge(fn(&str, &ClassTally, &At<'_>) -> Option<f64>),
    /// For each probe, one histogram per class (`probe`, `class`).
    ClassHistogram(fn(&ClassTally) -> &Histogram, &'static Buckets),
}

/// One metric family.
pub(super) struct Family {
    /// Full metric name.
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    pub(super) help: &'static str,
    pub(super) series: Series,
}

impl Family {
    /// Writes this family's series of one probe.
    pub(super) fn write_probe(&self, t: &mut Text, at: &At<'_>) {
        let classes = || at.ledger.classes.iter().map(|(k, c)| (k.as_str(), c));
        match &self.series {
            Series::Agent(_) => {}
            Series::Probe(write) => write(t, at),
            Series::ClassCounter(value) => {
                for (class, c) in classes() {
                    t.counter(&[("probe", at.name), ("class", class)], value(c));
                }
            }
            Series::ClassGauge(value) => {
                for (class, c) in classes() {
                    if let Some(v) = value(class, c, at) {
                        t.gauge(&[("probe", at.name), ("class", class)], v);
                    }
                }
            }
            Series::ClassHistogram(histogram, buckets) => {
                for (class, c) in classes() {
                    t.histogram(
                        &[("probe", at.name), ("class", class)],
                        histogram(c),
                        buckets,
                    );
                }
            }
        }
    }
}

/// Every family, in exposition order.
pub(super) const FAMILIES: [Family; 33] = [
    Family {
        name: "mailcanary_build_info",
        kind: Kind::Gauge,
        help: "Build of mailcanary; always 1.",
        series: Series::Agent(|t, _| t.gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)),
    },
    Family {
        name: "mailcanary_sent_total",
        kind: Kind::Counter,
        help: "Canaries accepted by the SMTP server.",
        series: Series::ClassCounter(|c| c.sent),
    },
    Family {
        name: "mailcanary_send_failures_total",
        kind: Kind::Counter,
        help: "Canaries that could not be submitted, by the stage that failed.",
        series: Series::Probe(send_failures),
    },
    Family {
        name: "mailcanary_smtp_duration_seconds",
        kind: Kind::Histogram,
        help: "Duration of the SMTP transaction, connect to accepted, over every class of the probe.",
        series: Series::Probe(|t, p| {
            t.histogram(&[("probe", p.name)], &p.ledger.probe.smtp_duration, &SMTP)
        }),
    },
    Family {
        name: "mailcanary_delivered_total",
        kind: Kind::Counter,
        help: "Canaries found in the mailbox, by folder.",
        series: Series::Probe(delivered),
    },
    Family {
        name: "mailcanary_delivery_delay_seconds",
        kind: Kind::Histogram,
        help: "Time from sending a canary to the agent seeing it in the mailbox.",
        series: Series::ClassHistogram(|c| &c.delivery_delay, &DELAY),
    },
    Family {
        name: "mailcanary_server_delay_seconds",
        kind: Kind::Histogram,
        help: "Receiving server's own timestamp (IMAP INTERNALDATE, else the newest Received date) minus sent; whole seconds.",
        series: Series::ClassHistogram(|c| &c.server_delay, &DELAY),
    },
    Family {
        name: "mailcanary_hop_delay_seconds",
        kind: Kind::Histogram,
        help: "Delay per hop of the Received chain over every class of the probe, oldest hop \"0\" (sender to first server), at most 8 labels: \"7\" is hop 7 and every deeper one, summed; negative values are clock skew.",
        series: Series::Probe(hop_delay),
    },
    Family {
        name: "mailcanary_last_hop_delay_seconds",
        kind: Kind::Gauge,
        help: "Delay per hop of the Received chain of the class's most recent delivery that had one; hops as in hop_delay_seconds.",
        series: Series::Probe(last_hop_delay),
    },
    Family {
        name: "mailcanary_clock_skew_seconds",
        kind: Kind::Gauge,
        help: "First server's clock minus the sender's, estimated from the first Received date of the latest delivery.",
        series: Series::ClassGauge(|_, c, _| c.clock_skew_s),
    },
    Family {
        name: "mailcanary_last_delivery_delay_seconds",
        kind: Kind::Gauge,
        help: "Delivery delay of the most recent delivered canary.",
        series: Series::ClassGauge(|_, c, _| c.last_delay_s),
    },
    Family {
        name: "mailcanary_last_delivery_timestamp_seconds",
        kind: Kind::Gauge,
        help: "Unix time the most recent canary was seen in the mailbox.",
        series: Series::ClassGauge(|_, c, _| c.last_delivery_ms.map(|ms| ms as f64 / 1000.0)),
    },
    Family {
        name: "mailcanary_in_flight",
        kind: Kind::Gauge,
        help: "Canaries sent and not yet seen (nor counted lost).",
        series: Series::ClassGauge(|class, _, p| Some(p.ledger.in_flight_count(class) as f64)),
    },
    Family {
        name: "mailcanary_oldest_in_flight_age_seconds",
        kind: Kind::Gauge,
        help: "Age of the oldest canary still in flight; 0 when none. Grows during an incident.",
        series: Series::ClassGauge(|class, _, p| Some(p.ledger.oldest_age(class, p.now_ms))),
    },
    Family {
        name: "mailcanary_lost_total",
        kind: Kind::Counter,
        help: "Canaries not seen within lost_after.",
        series: Series::ClassCounter(|c| c.lost),
    },
    Family {
        name: "mailcanary_bounced_total",
        kind: Kind::Counter,
        help: "Canaries the receiving side rejected after accepting them (a failed delivery \
               status notification), by enhanced status code; never also counted lost.",
        series: Series::Probe(bounced),
    },
    Family {
        name: "mailcanary_delay_notices_total",
        kind: Kind::Counter,
        help: "Delay notices (delivery status notifications with Action: delayed) for canaries \
               in flight.",
        series: Series::ClassCounter(|c| c.delay_notices),
    },
    Family {
        name: "mailcanary_late_total",
        kind: Kind::Counter,
        help: "Canaries that arrived after being counted lost.",
        series: Series::ClassCounter(|c| c.late),
    },
    Family {
        name: "mailcanary_duplicates_total",
        kind: Kind::Counter,
        help: "Second mails carrying an already delivered canary.",
        series: Series::ClassCounter(|c| c.duplicates),
    },
    Family {
        name: "mailcanary_replayed_total",
        kind: Kind::Counter,
        help: "Genuine canaries arriving again after their books were settled (older than forget_after, or a sequence number already seen); never a delivery.",
        series: Series::ClassCounter(|c| c.replayed),
    },
    Family {
        name: "mailcanary_sequence_gaps_total",
        kind: Kind::Counter,
        help: "Sequence numbers the receiver saw skipped that stayed missing lost_after past the canary that revealed them.",
        series: Series::ClassCounter(|c| c.sequence_gaps),
    },
    Family {
        name: "mailcanary_forged_total",
        kind: Kind::Counter,
        help: "Mails carrying a canary header of this agent whose signature does not verify.",
        series: Series::Probe(forged),
    },
    Family {
        name: "mailcanary_header_stripped_total",
        kind: Kind::Counter,
        help: "Canaries delivered without their X-Mailcanary header, recognised by the body token.",
        series: Series::ClassCounter(|c| c.header_stripped),
    },
    Family {
        name: "mailcanary_auth_results_total",
        kind: Kind::Counter,
        help: "Delivered canaries by the result of each authentication method (spf, dkim, dmarc, \
               arc) in the Authentication-Results the receiving side wrote (a trusted \
               authserv-id); one count per method and canary.",
        series: Series::Probe(deliverability::auth_results),
    },
    Family {
        name: "mailcanary_spam_verdicts_total",
        kind: Kind::Counter,
        help: "Delivered canaries by the verdict of each spam filter of the receiving side \
               (spamassassin, rspamd, microsoft).",
        series: Series::Probe(deliverability::spam_verdicts),
    },
    Family {
        name: "mailcanary_spam_score",
        kind: Kind::Gauge,
        help: "The latest delivered canary's score from each spam filter of the receiving side \
               (points; Microsoft's SCL).",
        series: Series::Probe(deliverability::spam_scores),
    },
    Family {
        name: "mailcanary_smtp_tls_info",
        kind: Kind::Gauge,
        help: "TLS version and cipher suite of the latest accepted submission's session \
               (as the server chose them in its ServerHello).",
        series: Series::Probe(deliverability::smtp_tls),
    },
    Family {
        name: "mailcanary_smtp_certificate_expiry_timestamp_seconds",
        kind: Kind::Gauge,
        help: "When the submission server's certificate (the leaf of the latest accepted \
               submission's session) expires, Unix seconds.",
        series: Series::Probe(deliverability::certificate_expiry),
    },
    Family {
        name: "mailcanary_mailbox_up",
        kind: Kind::Gauge,
        help: "1 when the last mailbox check succeeded, else 0.",
        series: Series::Probe(mailbox_up),
    },
    Family {
        name: "mailcanary_mailbox_step_duration_seconds",
        kind: Kind::Gauge,
        help: "How long each step of the last look at the mailbox took (connect, tls, greeting \
               and login when that look opened a connection; scan; cleanup when it removed mail).",
        series: Series::Probe(mailbox_steps),
    },
    Family {
        name: "mailcanary_mailbox_errors_total",
        kind: Kind::Counter,
        help: "Failed mailbox checks, by the stage that failed.",
        series: Series::Probe(mailbox_errors),
    },
    Family {
        name: "mailcanary_mails_skipped_total",
        kind: Kind::Counter,
        help: "Mails the mailbox could not read or parse (too large, cut off, refused), each once.",
        series: Series::Probe(|t, p| t.counter(&[("probe", p.name)], p.ledger.probe.mails_skipped)),
    },
    Family {
        name: "mailcanary_state_errors_total",
        kind: Kind::Counter,
        help: "State store writes that failed since the agent started.",
        series: Series::Agent(|t, agent| t.counter(&[], agent.state_errors)),
    },
];

fn send_failures(t: &mut Text, at: &At<'_>) {
    for (class, c) in &at.ledger.classes {
        for stage in SendStage::ALL.map(SendStage::as_str) {
            let n = c.send_failures.get(stage).copied().unwrap_or(0);
            t.counter(&[("probe", at.name), ("class", class), ("stage", stage)], n);
        }
    }
}

/// Every watched folder from the start, then any other folder a canary was found in.
fn delivered(t: &mut Text, at: &At<'_>) {
    for (class, c) in &at.ledger.classes {
        let unlisted = c.delivered.keys().filter(|k| !at.folders.contains(k));
        for folder in at.folders.iter().chain(unlisted) {
            let n = c.delivered.get(folder).copied().unwrap_or(0);
            t.counter(
                &[("probe", at.name), ("class", class), ("folder", folder)],
                n,
            );
        }
    }
}

/// `hop` labels, by hop index: at most [`crate::delay::HOP_LABELS`] of them.
const HOPS: [&str; HOP_LABELS] = ["0", "1", "2", "3", "4", "5", "6", "7"];

fn hop_delay(t: &mut Text, at: &At<'_>) {
    for (h, hop) in at.ledger.probe.hop_delay.iter().zip(HOPS) {
        t.histogram(&[("probe", at.name), ("hop", hop)], h, &HOP);
    }
}

fn last_hop_delay(t: &mut Text, at: &At<'_>) {
    for (class, c) in &at.ledger.classes {
        for (seconds, hop) in c.last_hop_delay_s.iter().zip(HOPS) {
            t.gauge(
                &[("probe", at.name), ("class", class), ("hop", hop)],
                *seconds,
            );
        }
    }
}

/// Per class, then the forgeries claiming a class the probe does not send.
fn forged(t: &mut Text, at: &At<'_>) {
    for (class, c) in &at.ledger.classes {
        t.counter(&[("probe", at.name), ("class", class)], c.forged);
    }
    let unknown = at.ledger.probe.forged_unknown_class;
    t.counter(&[("probe", at.name), ("class", UNKNOWN_CLASS)], unknown);
}

/// Only the codes a bounce was counted under: a status exists once it happened.
fn bounced(t: &mut Text, at: &At<'_>) {
    for (class, c) in &at.ledger.classes {
        for (status, n) in &c.bounced {
            t.counter(
                &[("probe", at.name), ("class", class), ("status", status)],
                *n,
            );
        }
    }
}

/// Only the steps measured so far: a series appears with the first look that took its step.
fn mailbox_steps(t: &mut Text, at: &At<'_>) {
    for step in crate::mailbox::Step::ALL {
        if let Some(took) = at.steps.get(step) {
            let labels = [
                ("probe", at.name),
                ("protocol", at.protocol),
                ("step", step.as_str()),
            ];
            t.gauge(&labels, took.as_secs_f64());
        }
    }
}

fn mailbox_up(t: &mut Text, at: &At<'_>) {
    let up = if at.up { 1.0 } else { 0.0 };
    t.gauge(&[("probe", at.name), ("protocol", at.protocol)], up);
}

/// Every known stage from the start, then any other stage the books hold.
fn mailbox_errors(t: &mut Text, at: &At<'_>) {
    let errors = &at.ledger.probe.mailbox_errors;
    let unlisted = errors
        .keys()
        .map(String::as_str)
        .filter(|k| !MailboxStage::ALL.iter().any(|s| s.as_str() == *k));
    for stage in MailboxStage::ALL
        .map(MailboxStage::as_str)
        .into_iter()
        .chain(unlisted)
    {
        let n = errors.get(stage).copied().unwrap_or(0);
        t.counter(&[("probe", at.name), ("stage", stage)], n);
    }
}
