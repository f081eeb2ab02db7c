//! What the agent knows about canaries it sent and has not yet seen.
//!
//! Each probe owns one [`InFlight`] set; only that probe's tasks and the metrics renderer touch
//! it, and never across an `.await`, so a plain mutex is enough and 1,000 probes never contend.
//! This slice keeps the set in memory; the durable store replaces the inside of this type, not
//! its callers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A canary that was handed to SMTP and has not been seen in the mailbox yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightCanary {
    /// Canary id.
    pub id: String,
    /// Class it was sent as.
    pub class: String,
    /// Its sequence number.
    pub seq: u64,
    /// Unix ms taken before the SMTP connection opened.
    pub sent_ms: u64,
    /// Queue id the server named when it accepted the canary.
    pub queue_id: Option<String>,
}

/// The in-flight canaries of one probe, by id.
#[derive(Debug, Default)]
pub struct InFlight {
    canaries: Mutex<BTreeMap<String, InFlightCanary>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, InFlightCanary>> {
        // A panic while holding this lock cannot leave the map half-updated (every operation is
        // one map call), so a poisoned lock is still safe to use.
        self.canaries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a canary before its SMTP transaction starts.
    pub fn insert(&self, canary: InFlightCanary) {
        self.lock().insert(canary.id.clone(), canary);
    }

    /// Notes the queue id the server gave the canary.
    pub fn set_queue_id(&self, id: &str, queue_id: Option<String>) {
        if let Some(c) = self.lock().get_mut(id) {
            c.queue_id = queue_id;
        }
    }

    /// Removes a canary that arrived or was never accepted; returns it if it was in flight.
    pub fn remove(&self, id: &str) -> Option<InFlightCanary> {
        self.lock().remove(id)
    }

    /// Whether a canary is still in flight.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Number of canaries in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// `sent` times of the in-flight canaries, by class.
    pub fn by_class(&self) -> HashMap<String, Vec<u64>> {
        let mut out: HashMap<String, Vec<u64>> = HashMap::new();
        for c in self.lock().values() {
            out.entry(c.class.clone()).or_default().push(c.sent_ms);
        }
        out
    }

    /// A copy of every in-flight canary, oldest id first.
    pub fn snapshot(&self) -> Vec<InFlightCanary> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(id: &str, class: &str, sent_ms: u64) -> InFlightCanary {
        InFlightCanary {
            id: id.into(),
            class: class.into(),
            seq: 1,
            sent_ms,
            queue_id: None,
        }
    }

    #[test]
    fn insert_queue_id_remove() {
        let set = InFlight::default();
        set.insert(canary("a", "bulk", 10));
        set.insert(canary("b", "bulk", 5));
        set.insert(canary("c", "interpersonal", 7));
        set.set_queue_id("a", Some("4XyZ".into()));
        assert_eq!(set.len(), 3);
        assert_eq!(set.snapshot()[0].queue_id.as_deref(), Some("4XyZ"));
        let mut by_class = set.by_class();
        by_class.get_mut("bulk").unwrap().sort();
        assert_eq!(by_class["bulk"], vec![5, 10]);
        assert_eq!(by_class["interpersonal"], vec![7]);
        assert_eq!(set.remove("b").unwrap().sent_ms, 5);
        assert!(set.remove("b").is_none());
        assert!(!set.contains("b") && set.contains("a"));
    }
}
