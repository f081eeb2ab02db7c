//! Metric families and their text rendering (exposition format 0.0.4).
//!
//! Each probe resolves its label handles once, at start-up ([`ProbeMetrics`]), so the hot path
//! of a probe touches only its own atomics: no registry lock, no label hashing per canary. The
//! in-flight gauges are computed when metrics are rendered, from the probes' in-flight sets, so
//! `oldest_in_flight_age_seconds` is exact at scrape time and keeps growing while mail is late.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    Opts, Registry, TextEncoder,
};

use crate::config::ProbeConfig;
use crate::delay;
use crate::state::InFlight;

/// Buckets of the delay histograms: 1 s up to 48 h, so a multi-day incident still has a bucket.
pub const DELAY_BUCKETS: [f64; 19] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0, 21600.0, 43200.0, 86400.0, 172800.0,
];

/// Buckets of the SMTP transaction duration.
const SMTP_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Where a send failed, as in `send_failures_total{stage}`.
pub const SEND_STAGES: [&str; 5] = ["connect", "tls", "auth", "rejected", "timeout"];

/// Where a mailbox check failed, as in `mailbox_errors_total{stage}`.
pub const MAILBOX_STAGES: [&str; 8] = [
    "connect", "tls", "greeting", "auth", "select", "search", "cleanup", "timeout",
];

/// Class label used for forged canaries that claim a class this probe does not send; keeps an
/// attacker from creating series at will.
pub const UNKNOWN_CLASS: &str = "unknown";

/// The agent's metric families.
pub struct Metrics {
    registry: Registry,
    sent: IntCounterVec,
    send_failures: IntCounterVec,
    smtp_duration: HistogramVec,
    delivered: IntCounterVec,
    delivery_delay: HistogramVec,
    last_delay: GaugeVec,
    last_timestamp: GaugeVec,
    in_flight: GaugeVec,
    oldest_age: GaugeVec,
    forged: IntCounterVec,
    mailbox_up: GaugeVec,
    mailbox_errors: IntCounterVec,
    watched: Mutex<Vec<Watched>>,
}

/// A probe whose in-flight set feeds the in-flight gauges at render time.
struct Watched {
    probe: String,
    classes: Vec<String>,
    in_flight: Arc<InFlight>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("mailcanary_{name}"), help)
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let pc = &["probe", "class"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(opts(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let o =
                HistogramOpts::new(format!("mailcanary_{name}"), help).buckets(buckets.to_vec());
            let h = HistogramVec::new(o, pc).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let metrics = Metrics {
            sent: counter("sent_total", "Canaries accepted by the SMTP server.", pc),
            send_failures: counter(
                "send_failures_total",
                "Canaries that could not be submitted, by the stage that failed.",
                &["probe", "class", "stage"],
            ),
            smtp_duration: histogram(
                "smtp_duration_seconds",
                "Duration of the SMTP transaction, connect to accepted.",
                &SMTP_BUCKETS,
            ),
            delivered: counter(
                "delivered_total",
                "Canaries found in the mailbox, by folder.",
                &["probe", "class", "folder"],
            ),
            delivery_delay: histogram(
                "delivery_delay_seconds",
                "Time from sending a canary to the agent seeing it in the mailbox.",
                &DELAY_BUCKETS,
            ),
            last_delay: gauge(
                "last_delivery_delay_seconds",
                "Delivery delay of the most recent delivered canary.",
                pc,
            ),
            last_timestamp: gauge(
                "last_delivery_timestamp_seconds",
                "Unix time the most recent canary was seen in the mailbox.",
                pc,
            ),
            in_flight: gauge("in_flight", "Canaries sent and not yet seen.", pc),
            oldest_age: gauge(
                "oldest_in_flight_age_seconds",
                "Age of the oldest canary still in flight; 0 when none. Grows during an incident.",
                pc,
            ),
            forged: counter(
                "forged_total",
                "Mails carrying a canary header of this agent whose signature does not verify.",
                pc,
            ),
            mailbox_up: gauge(
                "mailbox_up",
                "1 when the last mailbox check succeeded, else 0.",
                &["probe", "protocol"],
            ),
            mailbox_errors: counter(
                "mailbox_errors_total",
                "Failed mailbox checks, by the stage that failed.",
                &["probe", "stage"],
            ),
            watched: Mutex::new(Vec::new()),
            registry: registry.clone(),
        };
        let build = gauge("build_info", "Build of mailcanary; always 1.", &["version"]);
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        Arc::new(metrics)
    }

    /// Resolves one probe's series (all at zero) and watches its in-flight set.
    pub fn probe(self: &Arc<Self>, probe: &ProbeConfig, in_flight: Arc<InFlight>) -> ProbeMetrics {
        let name = probe.name.as_str();
        let classes = probe
            .classes
            .iter()
            .map(|c| (c.name.clone(), self.class(name, &c.name)))
            .collect();
        self.watched.lock().expect("metrics lock").push(Watched {
            probe: name.to_string(),
            classes: probe.classes.iter().map(|c| c.name.clone()).collect(),
            in_flight,
        });
        let protocol = probe.mailbox.protocol();
        ProbeMetrics {
            classes,
            name: name.to_string(),
            folders: match &probe.mailbox {
                crate::config::MailboxConfig::Imap(imap) => imap.folders.clone(),
            },
            mailbox_up: self.mailbox_up.with_label_values(&[name, protocol]),
            families: Arc::clone(self),
        }
        .initialised()
    }

    fn class(&self, probe: &str, class: &str) -> ClassMetrics {
        let pc = [probe, class];
        ClassMetrics {
            sent: self.sent.with_label_values(&pc),
            failures: SEND_STAGES.map(|s| self.send_failures.with_label_values(&[probe, class, s])),
            smtp_duration: self.smtp_duration.with_label_values(&pc),
            delivery_delay: self.delivery_delay.with_label_values(&pc),
            last_delay: self.last_delay.with_label_values(&pc),
            last_timestamp: self.last_timestamp.with_label_values(&pc),
        }
    }

    /// Renders every family in the text exposition format, in-flight gauges as of `now_ms`.
    pub fn render(&self, now_ms: u64) -> String {
        for w in self.watched.lock().expect("metrics lock").iter() {
            let (probe, by_class) = (w.probe.as_str(), w.in_flight.by_class());
            // Only this probe's own sends enter its in-flight set, so its configured classes
            // cover every class that can be in flight.
            for class in &w.classes {
                let sent = by_class.get(class).map_or(&[][..], Vec::as_slice);
                let labels = [probe, class.as_str()];
                self.in_flight
                    .with_label_values(&labels)
                    .set(sent.len() as f64);
                self.oldest_age
                    .with_label_values(&labels)
                    .set(delay::oldest_age(sent.iter().copied(), now_ms));
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

/// One class's series of one probe.
#[derive(Clone)]
pub struct ClassMetrics {
    /// `sent_total`.
    pub sent: IntCounter,
    failures: [IntCounter; 5],
    /// `smtp_duration_seconds`.
    pub smtp_duration: Histogram,
    /// `delivery_delay_seconds`.
    pub delivery_delay: Histogram,
    /// `last_delivery_delay_seconds`.
    pub last_delay: Gauge,
    /// `last_delivery_timestamp_seconds`.
    pub last_timestamp: Gauge,
}

impl ClassMetrics {
    /// `send_failures_total{stage}`.
    pub fn send_failure(&self, stage: &str) -> &IntCounter {
        let i = SEND_STAGES
            .iter()
            .position(|s| *s == stage)
            .expect("send stage is one of SEND_STAGES");
        &self.failures[i]
    }
}

/// One probe's handles.
pub struct ProbeMetrics {
    name: String,
    classes: HashMap<String, ClassMetrics>,
    folders: Vec<String>,
    /// `mailbox_up{protocol}`.
    pub mailbox_up: Gauge,
    families: Arc<Metrics>,
}

impl ProbeMetrics {
    /// Creates every series this probe can produce at zero, so `rate()` and `increase()` have
    /// a starting point and alerts see the series before the first event.
    fn initialised(self) -> ProbeMetrics {
        let f = &self.families;
        for class in self.classes.keys() {
            for folder in &self.folders {
                f.delivered.with_label_values(&[&self.name, class, folder]);
            }
            f.forged.with_label_values(&[&self.name, class]);
        }
        f.forged.with_label_values(&[&self.name, UNKNOWN_CLASS]);
        for stage in MAILBOX_STAGES {
            f.mailbox_errors.with_label_values(&[&self.name, stage]);
        }
        self
    }

    /// Handles of a class. A verified canary may carry a class that is no longer configured
    /// (the config changed while it was in flight); its series are then resolved on demand.
    pub fn class(&self, class: &str) -> std::borrow::Cow<'_, ClassMetrics> {
        match self.classes.get(class) {
            Some(c) => std::borrow::Cow::Borrowed(c),
            None => std::borrow::Cow::Owned(self.families.class(&self.name, class)),
        }
    }

    /// Counts a delivery in `folder`.
    pub fn delivered(&self, class: &str, folder: &str) {
        self.families
            .delivered
            .with_label_values(&[&self.name, class, folder])
            .inc();
    }

    /// Counts a forged canary under its claimed class when that class is configured.
    pub fn forged(&self, claimed_class: &str) {
        let class = if self.classes.contains_key(claimed_class) {
            claimed_class
        } else {
            UNKNOWN_CLASS
        };
        self.families
            .forged
            .with_label_values(&[&self.name, class])
            .inc();
    }

    /// Counts a failed mailbox check.
    pub fn mailbox_error(&self, stage: &str) {
        self.families
            .mailbox_errors
            .with_label_values(&[&self.name, stage])
            .inc();
    }
}
