//! Histograms as the books keep them (counts per bucket and a sum) and their bucket bounds.

use serde::{Deserialize, Serialize};

/// Buckets of the delay histograms: 1 s up to 48 h, so a multi-day incident still has a bucket.
pub const DELAY_BUCKETS: [f64; 19] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0, 21600.0, 43200.0, 86400.0, 172800.0,
];

/// Buckets of the per-hop delay histograms, coarser than [`DELAY_BUCKETS`]: the dashboard reads
/// them as a median per hop ("which hop usually holds the mail: seconds, minutes or hours"),
/// and no alert uses them; the fine buckets are for the delivery delay the alerts take
/// quantiles of. Up to 8 hops per probe, so 10 fewer buckets save 80 series a probe. Every
/// bound is also one of [`DELAY_BUCKETS`], so hop histograms stored with those are re-bucketed
/// exactly on load ([`Histogram::rebucket`]). Negative values (clock skew) fall in the first.
pub const HOP_BUCKETS: [f64; 9] = [
    1.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

/// Buckets of the SMTP transaction duration.
pub const SMTP_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Cumulative histogram state: per-bucket counts (the last one is `+Inf`) and the sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Non-cumulative count per bucket, `bounds.len() + 1` entries.
    pub counts: Vec<u64>,
    /// Sum of the observed values.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Adds one observation.
    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.len() != bounds.len() + 1 {
            // Stored with other buckets by another version: restart rather than mislabel.
            *self = Histogram::new(bounds);
        }
        let i = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += value;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another histogram's observations (same buckets; otherwise only its sum and count,
    /// in the `+Inf` bucket).
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() == self.counts.len() {
            for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
                *mine += theirs;
            }
        } else if let Some(inf) = self.counts.last_mut() {
            *inf += other.count();
        }
        self.sum += other.sum;
    }

    /// This histogram, kept over the bounds `from`, over the bounds `to` instead: exact when
    /// every bound of `to` is one of `from` (each old bucket then lies within one new bucket).
    /// `None` when it was not kept over `from` or a bound of `to` is missing from it.
    pub fn rebucket(&self, from: &[f64], to: &[f64]) -> Option<Histogram> {
        if self.counts.len() != from.len() + 1 || !to.iter().all(|b| from.contains(b)) {
            return None;
        }
        let mut out = Histogram::new(to);
        for (i, n) in self.counts.iter().enumerate() {
            let bucket = match from.get(i) {
                Some(bound) => to.iter().position(|b| bound <= b).unwrap_or(to.len()),
                None => to.len(),
            };
            out.counts[bucket] += n;
        }
        out.sum = self.sum;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_buckets_are_delay_buckets_so_old_hop_histograms_rebucket_exactly() {
        let mut old = Histogram::new(&DELAY_BUCKETS);
        let mut new = Histogram::new(&HOP_BUCKETS);
        for v in [
            -3.0, 0.5, 1.0, 1.5, 2.0, 10.0, 30.0, 31.0, 4000.0, 90_000.0, 200_000.0,
        ] {
            old.observe(&DELAY_BUCKETS, v);
            new.observe(&HOP_BUCKETS, v);
        }
        assert_eq!(old.rebucket(&DELAY_BUCKETS, &HOP_BUCKETS), Some(new));
    }

    #[test]
    fn rebucketing_refuses_what_it_cannot_do_exactly() {
        let old = Histogram::new(&DELAY_BUCKETS);
        assert_eq!(
            old.rebucket(&DELAY_BUCKETS, &[1.5]),
            None,
            "1.5 is no bound"
        );
        assert_eq!(
            old.rebucket(&HOP_BUCKETS, &[1.0]),
            None,
            "not kept over these"
        );
    }
}
