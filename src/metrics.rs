//! Metric families, rendered from the probes' books (text exposition format 0.0.4).
//!
//! Counters and histograms must continue across restarts and across `once` runs, and the
//! prometheus crate's own counters cannot be set to a stored value. So nothing here counts:
//! every family is built at render time from the ledgers, which the store keeps durable, and
//! `oldest_in_flight_age_seconds` is computed for the moment of the scrape, so it keeps growing
//! while mail is late. The crate's text encoder writes the result.

use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder as _, TextEncoder};

use crate::ledger::{DELAY_BUCKETS, Histogram, Ledger, SMTP_BUCKETS};
use crate::probe::Probe;
use crate::stage::{MailboxStage, SendStage};

/// Class label of forged canaries that claim a class the probe does not send; keeps an
/// attacker from creating series at will.
pub const UNKNOWN_CLASS: &str = "unknown";

/// The agent-wide values that belong to no probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentFigures {
    /// Failed store commits since start.
    pub state_errors: u64,
}

/// The families in exposition order, filled probe by probe.
struct Families {
    all: Vec<MetricFamily>,
}

/// Index of each family in [`Families::all`].
#[derive(Clone, Copy)]
enum F {
    BuildInfo,
    Sent,
    SendFailures,
    SmtpDuration,
    Delivered,
    DeliveryDelay,
    ServerDelay,
    HopDelay,
    LastHopDelay,
    ClockSkew,
    LastDelay,
    LastTimestamp,
    InFlight,
    OldestAge,
    Lost,
    Late,
    Duplicates,
    Replayed,
    SequenceGaps,
    Forged,
    HeaderStripped,
    MailboxUp,
    MailboxErrors,
    MailsSkipped,
    StateErrors,
}

const FAMILIES: [(&str, MetricType, &str); 25] = [
    (
        "build_info",
        MetricType::GAUGE,
        "Build of mailcanary; always 1.",
    ),
    (
        "sent_total",
        MetricType::COUNTER,
        "Canaries accepted by the SMTP server.",
    ),
    (
        "send_failures_total",
        MetricType::COUNTER,
        "Canaries that could not be submitted, by the stage that failed.",
    ),
    (
        "smtp_duration_seconds",
        MetricType::HISTOGRAM,
        "Duration of the SMTP transaction, connect to accepted.",
    ),
    (
        "delivered_total",
        MetricType::COUNTER,
        "Canaries found in the mailbox, by folder.",
    ),
    (
        "delivery_delay_seconds",
        MetricType::HISTOGRAM,
        "Time from sending a canary to the agent seeing it in the mailbox.",
    ),
    (
        "server_delay_seconds",
        MetricType::HISTOGRAM,
        "Receiving server's own timestamp (IMAP INTERNALDATE, else the newest Received date) minus sent; whole seconds.",
    ),
    (
        "hop_delay_seconds",
        MetricType::HISTOGRAM,
        "Delay per hop of the Received chain over every class of the probe, oldest hop \"0\" (sender to first server), at most 8 labels: \"7\" is hop 7 and every deeper one, summed; negative values are clock skew.",
    ),
    (
        "last_hop_delay_seconds",
        MetricType::GAUGE,
        "Delay per hop of the Received chain of the class's most recent delivery that had one; hops as in hop_delay_seconds.",
    ),
    (
        "clock_skew_seconds",
        MetricType::GAUGE,
        "First server's clock minus the sender's, estimated from the first Received date of the latest delivery.",
    ),
    (
        "last_delivery_delay_seconds",
        MetricType::GAUGE,
        "Delivery delay of the most recent delivered canary.",
    ),
    (
        "last_delivery_timestamp_seconds",
        MetricType::GAUGE,
        "Unix time the most recent canary was seen in the mailbox.",
    ),
    (
        "in_flight",
        MetricType::GAUGE,
        "Canaries sent and not yet seen (nor counted lost).",
    ),
    (
        "oldest_in_flight_age_seconds",
        MetricType::GAUGE,
        "Age of the oldest canary still in flight; 0 when none. Grows during an incident.",
    ),
    (
        "lost_total",
        MetricType::COUNTER,
        "Canaries not seen within lost_after.",
    ),
    (
        "late_total",
        MetricType::COUNTER,
        "Canaries that arrived after being counted lost.",
    ),
    (
        "duplicates_total",
        MetricType::COUNTER,
        "Second mails carrying an already delivered canary.",
    ),
    (
        "replayed_total",
        MetricType::COUNTER,
        "Genuine canaries arriving again after their books were settled (older than forget_after, or a sequence number already seen); never a delivery.",
    ),
    (
        "sequence_gaps_total",
        MetricType::COUNTER,
        "Sequence numbers the receiver saw skipped that stayed missing lost_after past the canary that revealed them.",
    ),
    (
        "forged_total",
        MetricType::COUNTER,
        "Mails carrying a canary header of this agent whose signature does not verify.",
    ),
    (
        "header_stripped_total",
        MetricType::COUNTER,
        "Canaries delivered without their X-Mailcanary header, recognised by the body token.",
    ),
    (
        "mailbox_up",
        MetricType::GAUGE,
        "1 when the last mailbox check succeeded, else 0.",
    ),
    (
        "mailbox_errors_total",
        MetricType::COUNTER,
        "Failed mailbox checks, by the stage that failed.",
    ),
    (
        "mails_skipped_total",
        MetricType::COUNTER,
        "Mails the mailbox could not read or parse (too large, cut off, refused), each once.",
    ),
    (
        "state_errors_total",
        MetricType::COUNTER,
        "State store writes that failed since the agent started.",
    ),
];

impl Families {
    fn new() -> Families {
        let all = FAMILIES
            .iter()
            .map(|(name, kind, help)| {
                let mut f = MetricFamily::default();
                f.set_name(format!("mailcanary_{name}"));
                f.set_help(help.to_string());
                f.set_field_type(*kind);
                f
            })
            .collect();
        Families { all }
    }

    fn push(&mut self, family: F, labels: &[(&str, &str)], fill: impl FnOnce(&mut Metric)) {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        fill(&mut m);
        self.all[family as usize].mut_metric().push(m);
    }

    fn counter(&mut self, family: F, labels: &[(&str, &str)], value: u64) {
        self.push(family, labels, |m| {
            let mut c = proto::Counter::default();
            c.set_value(value as f64);
            m.set_counter(c);
        });
    }

    fn gauge(&mut self, family: F, labels: &[(&str, &str)], value: f64) {
        self.push(family, labels, |m| {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        });
    }

    fn histogram(&mut self, family: F, labels: &[(&str, &str)], h: &Histogram, bounds: &[f64]) {
        self.push(family, labels, |m| {
            let mut out = proto::Histogram::default();
            let mut cumulative = 0;
            out.set_bucket(
                bounds
                    .iter()
                    .zip(&h.counts)
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect(),
            );
            out.set_sample_count(h.count());
            out.set_sample_sum(h.sum);
            m.set_histogram(out);
        });
    }

    fn encode(self) -> String {
        let families: Vec<MetricFamily> = self
            .all
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

/// A probe as the renderer sees it: its labels, its mailbox's health and its books.
///
/// A trait rather than the agent's probe type, so the renderer is measured on books built in
/// memory (`benches/render.rs`) exactly as it runs in the agent.
pub trait Books {
    /// The `probe` label.
    fn name(&self) -> &str;
    /// The watched folders in configured order: each has a `delivered_total` series from the
    /// start, at 0.
    fn folders(&self) -> &[String];
    /// The `protocol` label of `mailbox_up`.
    fn protocol(&self) -> &str;
    /// Whether the last mailbox check succeeded.
    fn mailbox_up(&self) -> bool;
    /// Calls `read` with the books, locked for as long as it runs (keep it short: the probe's
    /// sender and watcher wait for the same lock).
    fn read(&self, read: &mut dyn FnMut(&Ledger));
}

impl Books for std::sync::Arc<Probe> {
    fn name(&self) -> &str {
        &self.config().name
    }
    fn folders(&self) -> &[String] {
        self.config().mailbox.folders()
    }
    fn protocol(&self) -> &str {
        self.config().mailbox.protocol()
    }
    fn mailbox_up(&self) -> bool {
        Probe::mailbox_up(self)
    }
    fn read(&self, read: &mut dyn FnMut(&Ledger)) {
        self.read_ledger(|ledger| read(ledger));
    }
}

/// Renders every family for these probes, in-flight ages as of `now_ms`.
pub fn render<B: Books>(probes: &[B], agent: AgentFigures, now_ms: u64) -> String {
    let mut f = Families::new();
    f.gauge(F::BuildInfo, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    for probe in probes {
        render_probe(&mut f, probe, now_ms);
    }
    f.counter(F::StateErrors, &[], agent.state_errors);
    f.encode()
}

fn render_probe(f: &mut Families, probe: &impl Books, now_ms: u64) {
    let mailbox = Mailbox {
        folders: probe.folders(),
        protocol: probe.protocol(),
        up: probe.mailbox_up(),
    };
    probe.read(&mut |ledger| render_books(f, probe.name(), &mailbox, ledger, now_ms));
}

/// What the families say about a probe's mailbox besides its books.
struct Mailbox<'a> {
    folders: &'a [String],
    protocol: &'a str,
    up: bool,
}

/// Every series of one probe. Reads only totals the books keep (no list of canaries is walked),
/// so its time grows with the number of series alone.
fn render_books(f: &mut Families, name: &str, mailbox: &Mailbox<'_>, ledger: &Ledger, now_ms: u64) {
    let folders = mailbox.folders;
    f.gauge(
        F::MailboxUp,
        &[("probe", name), ("protocol", mailbox.protocol)],
        if mailbox.up { 1.0 } else { 0.0 },
    );
    for (class, t) in &ledger.classes {
        let pc = [("probe", name), ("class", class.as_str())];
        f.counter(F::Sent, &pc, t.sent);
        for stage in SendStage::ALL.map(SendStage::as_str) {
            let n = t.send_failures.get(stage).copied().unwrap_or(0);
            f.counter(F::SendFailures, &[pc[0], pc[1], ("stage", stage)], n);
        }
        f.histogram(F::SmtpDuration, &pc, &t.smtp_duration, &SMTP_BUCKETS);
        let unlisted = t.delivered.keys().filter(|k| !folders.contains(k));
        for folder in folders.iter().chain(unlisted) {
            let n = t.delivered.get(folder).copied().unwrap_or(0);
            f.counter(F::Delivered, &[pc[0], pc[1], ("folder", folder)], n);
        }
        f.histogram(F::DeliveryDelay, &pc, &t.delivery_delay, &DELAY_BUCKETS);
        f.histogram(F::ServerDelay, &pc, &t.server_delay, &DELAY_BUCKETS);
        for (hop, seconds) in t.last_hop_delay_s.iter().enumerate() {
            let hop = hop.to_string();
            f.gauge(F::LastHopDelay, &[pc[0], pc[1], ("hop", &hop)], *seconds);
        }
        if let Some(skew) = t.clock_skew_s {
            f.gauge(F::ClockSkew, &pc, skew);
        }
        if let Some(delay) = t.last_delay_s {
            f.gauge(F::LastDelay, &pc, delay);
        }
        if let Some(ms) = t.last_delivery_ms {
            f.gauge(F::LastTimestamp, &pc, ms as f64 / 1000.0);
        }
        f.gauge(F::InFlight, &pc, ledger.in_flight_count(class) as f64);
        f.gauge(F::OldestAge, &pc, ledger.oldest_age(class, now_ms));
        f.counter(F::Lost, &pc, t.lost);
        f.counter(F::Late, &pc, t.late);
        f.counter(F::Duplicates, &pc, t.duplicates);
        f.counter(F::Replayed, &pc, t.replayed);
        f.counter(F::SequenceGaps, &pc, t.sequence_gaps);
        f.counter(F::Forged, &pc, t.forged);
        f.counter(F::HeaderStripped, &pc, t.header_stripped);
    }
    for (hop, h) in ledger.probe.hop_delay.iter().enumerate() {
        let hop = hop.to_string();
        f.histogram(
            F::HopDelay,
            &[("probe", name), ("hop", &hop)],
            h,
            &DELAY_BUCKETS,
        );
    }
    f.counter(
        F::Forged,
        &[("probe", name), ("class", UNKNOWN_CLASS)],
        ledger.probe.forged_unknown_class,
    );
    let errors = &ledger.probe.mailbox_errors;
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
        f.counter(F::MailboxErrors, &[("probe", name), ("stage", stage)], n);
    }
    f.counter(
        F::MailsSkipped,
        &[("probe", name)],
        ledger.probe.mails_skipped,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_indexes_match_their_names() {
        let named = [
            (F::BuildInfo, "build_info"),
            (F::Sent, "sent_total"),
            (F::SendFailures, "send_failures_total"),
            (F::SmtpDuration, "smtp_duration_seconds"),
            (F::Delivered, "delivered_total"),
            (F::DeliveryDelay, "delivery_delay_seconds"),
            (F::ServerDelay, "server_delay_seconds"),
            (F::HopDelay, "hop_delay_seconds"),
            (F::LastHopDelay, "last_hop_delay_seconds"),
            (F::ClockSkew, "clock_skew_seconds"),
            (F::LastDelay, "last_delivery_delay_seconds"),
            (F::LastTimestamp, "last_delivery_timestamp_seconds"),
            (F::InFlight, "in_flight"),
            (F::OldestAge, "oldest_in_flight_age_seconds"),
            (F::Lost, "lost_total"),
            (F::Late, "late_total"),
            (F::Duplicates, "duplicates_total"),
            (F::Replayed, "replayed_total"),
            (F::SequenceGaps, "sequence_gaps_total"),
            (F::Forged, "forged_total"),
            (F::HeaderStripped, "header_stripped_total"),
            (F::MailboxUp, "mailbox_up"),
            (F::MailboxErrors, "mailbox_errors_total"),
            (F::MailsSkipped, "mails_skipped_total"),
            (F::StateErrors, "state_errors_total"),
        ];
        assert_eq!(named.len(), FAMILIES.len());
        for (family, name) in named {
            assert_eq!(FAMILIES[family as usize].0, name);
        }
    }

    #[test]
    fn an_agent_without_probes_still_reports_itself() {
        let text = render(&[], AgentFigures { state_errors: 3 }, 0);
        assert!(
            text.contains("# TYPE mailcanary_build_info gauge"),
            "{text}"
        );
        assert!(text.contains("mailcanary_state_errors_total 3"), "{text}");
        assert!(
            !text.contains("mailcanary_sent_total"),
            "empty families are left out"
        );
    }

    /// A probe's books with `classes` classes sending, one delivery each through `hops` hops
    /// (server timestamps and skew known) and `in_flight` canaries of each class in flight.
    fn books(classes: usize, hops: usize, in_flight: usize) -> Ledger {
        use crate::canary::Canary;
        use crate::delay::Breakdown;
        use crate::ledger::Found;
        use std::time::Duration;
        let mut l = Ledger::default();
        for c in 0..classes {
            let class = format!("class{c}");
            l.open_class(&class);
            let id = format!("{class}-delivered");
            l.begin_send(&id, &class, 0);
            l.accepted(&id, 100, None, 0.1);
            let canary = Canary {
                id: id.clone(),
                probe: "p".into(),
                class: class.clone(),
                seq: 1,
                sent_ms: 0,
                agent: "a".into(),
            };
            let found = Found {
                folder: "INBOX",
                mail: &id,
                seen_ms: 5_000,
                server_ms: Some(4_000),
                forget_after: Duration::from_secs(3600),
                now_ms: 5_000,
            };
            let servers = Breakdown {
                server_delay_s: Some(4.0),
                hops: vec![0.5; hops],
                clock_skew_s: Some(0.1),
            };
            l.arrived(&canary, found, &servers);
            for i in 0..in_flight {
                l.begin_send(&format!("{class}-{i}"), &class, 1_000 + i as u64);
            }
        }
        l
    }

    fn render_books_text(ledger: &Ledger, probe: &str) -> String {
        let mut f = Families::new();
        let mailbox = Mailbox {
            folders: &["INBOX".to_string()],
            protocol: "imap",
            up: true,
        };
        render_books(&mut f, probe, &mailbox, ledger, 10_000);
        f.encode()
    }

    fn series(text: &str) -> usize {
        text.lines().filter(|l| !l.starts_with('#')).count()
    }

    /// README documents this figure ("Series per probe"); change both together.
    #[test]
    fn a_probe_with_3_classes_and_8_hops_has_a_bounded_number_of_series() {
        let text = render_books_text(&books(3, 8, 2), "p");
        let hop = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(
            hop("mailcanary_hop_delay_seconds"),
            8 * (DELAY_BUCKETS.len() + 3),
            "one histogram per hop, not per class and hop"
        );
        assert_eq!(hop("mailcanary_last_hop_delay_seconds"), 3 * 8);
        // Per class 85 (sent 1, send failures 5, SMTP histogram 14, delivered 1, delivery and
        // server histograms 22 each, skew, last delay, last time, in flight, oldest age 5, seven
        // counters, last hop delay 8 of this test's 8 hops) = 255; per probe 9 stage counters,
        // mailbox_up, forged{class="unknown"}, mails_skipped and 8 hop histograms of 22.
        // Before hop histograms left the class: 771 (8 × 22 per class instead).
        assert_eq!(series(&text), 443, "{text}");
    }

    #[test]
    fn in_flight_series_come_from_the_per_class_counts() {
        let text = render_books_text(&books(2, 1, 3), "p");
        assert!(
            text.contains("mailcanary_in_flight{probe=\"p\",class=\"class1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "mailcanary_oldest_in_flight_age_seconds{probe=\"p\",class=\"class0\"} 9"
            ),
            "{text}"
        );
    }

    /// Render time for 1,000 probes with 50 canaries in flight each (run with `--ignored
    /// --nocapture` in a release build for the figure).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn render_time_of_1000_probes_with_50_in_flight_each() {
        let ledger = books(3, 3, 50);
        let names: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let mut f = Families::new();
            let mailbox = Mailbox {
                folders: &["INBOX".to_string()],
                protocol: "imap",
                up: true,
            };
            for name in &names {
                render_books(&mut f, name, &mailbox, &ledger, 100_000);
            }
            let body = f.encode();
            times.push((start.elapsed(), body.len()));
        }
        times.sort();
        eprintln!("render of 1,000 probes × 3 classes × 50 in flight: {times:?}");
    }
}
