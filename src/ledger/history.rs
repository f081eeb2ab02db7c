//! Delay history of one probe × class: enough to draw the last 48 h and to give the median and
//! p95 delivery delay of the last 24 h, in a fixed 1,544 bytes whatever the canary rate (1.7 KB
//! of resident memory with the allocator's and the class map's share, measured over 60,000
//! classes) and 1,541 bytes in the store. At 1,000 probes × 3 classes that is about 5 MB.
//!
//! # Shape, and why
//!
//! - **96 half-hour slots** (48 h), keyed by absolute time (slot number = Unix ms / 30 min) in a
//!   ring: a slot is reused, cleared, when its time comes round again, so nothing grows with
//!   time or with deliveries. Each slot holds the count and the minimum, maximum and geometric
//!   mean of its delays (the chart's bar and dot), 10 bytes. Delays are kept as 16-bit codes on
//!   a log scale (1,024 steps per doubling from 1 ms): exact to ±0.034 %, at a quarter of the
//!   size of `f64`s. The geometric mean, not the arithmetic one, is the middle of the slot on
//!   the chart's log scale and is not dragged up by a single held mail.
//! - **24 hourly histograms** over [`QUANTILE_BOUNDS`] (12 buckets, every bound one of the
//!   exported [`DELAY_BUCKETS`](super::DELAY_BUCKETS)), `u16` counts, 576 bytes: what the 24 h
//!   quantiles are read from. Per hour over the full 20 exported buckets would cost 960 bytes
//!   and still only place a quantile within a bucket.
//!
//! # How precise the 24 h quantiles are
//!
//! Two brackets each hold the true quantile for certain: the histogram bucket its rank falls
//! in, and the range the half-hour slots' extremes allow. For the latter, take the slots by
//! their longest delay: once they hold `rank` deliveries, that many delays are at most the
//! last one's maximum, so the quantile is too; taken by their shortest delay, the slots before
//! the one that completes `rank` hold fewer deliveries than that and no other delay lies below
//! that slot's minimum, so the quantile is at least that minimum. The estimate is
//! interpolated by rank (like `histogram_quantile`, but on a log scale) inside the intersection,
//! [`Quantile::low`]..[`Quantile::high`], so it is never off by more than the factor
//! `high / low`. In steady traffic that is the spread of delays within a half hour (a few tens
//! of per cent); when delays are spread over hours in every slot, the bucket bounds it (a
//! factor of 2 to 6). The window is the current hour and the 23 before it (23–24 h).
//!
//! # Durability
//!
//! The history is not part of the class totals written on every delivery: it has its own
//! record, written when a delivery opens a new half hour (at most once per 30 min per class)
//! and, through [`Ledger::unsaved_history`], when the agent stops. A crash loses at most the
//! deliveries of the current half hour from the chart; the counters are not affected.

use super::{Ledger, Write};

/// Length of a slot: the chart's resolution.
pub const SLOT_MS: u64 = 30 * 60 * 1000;
/// Slots kept: 48 h.
pub const SLOTS: usize = 96;
/// Hours of the quantile window.
const HOURS: usize = 24;
/// Slots per hour.
const SLOTS_PER_HOUR: u32 = 2;
/// Upper bounds of the quantile histogram's buckets (the last bucket is `+Inf`), seconds. Finer
/// where delays usually are (seconds to minutes); the slot brackets sharpen the coarse ones.
pub const QUANTILE_BOUNDS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];
const BUCKETS: usize = QUANTILE_BOUNDS.len() + 1;

/// Code steps per doubling of the delay.
const STEPS_PER_OCTAVE: f64 = 1024.0;
/// The delay of code 0 (and of anything shorter), seconds.
const FLOOR_S: f64 = 0.001;
/// Version byte of the stored form.
const STORED_VERSION: u8 = 1;
/// Length of the stored form: version, newest slot, slots, hours.
const STORED_LEN: usize = 1 + 4 + SLOTS * 10 + HOURS * BUCKETS * 2;

/// A delay as a log-scale code (saturating; negative and sub-millisecond delays are code 0).
fn encode(seconds: f64) -> u16 {
    if seconds.is_nan() || seconds <= FLOOR_S {
        return 0;
    }
    let code = (seconds / FLOOR_S).log2() * STEPS_PER_OCTAVE;
    code.round().min(f64::from(u16::MAX)) as u16
}

/// The delay a code stands for, seconds.
fn decode(code: u16) -> f64 {
    FLOOR_S * (f64::from(code) / STEPS_PER_OCTAVE).exp2()
}

/// The quantile histogram's bucket of a delay.
fn bucket(seconds: f64) -> usize {
    QUANTILE_BOUNDS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(QUANTILE_BOUNDS.len())
}

/// One half hour of deliveries. The mean is kept as quotient and remainder of the sum of codes
/// by the count, so it is exact (no drift over thousands of deliveries) in two `u16`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    count: u16,
    min: u16,
    max: u16,
    mean: u16,
    rest: u16,
}

impl Slot {
    fn add(&mut self, code: u16) {
        if self.count == 0 {
            *self = Slot {
                count: 1,
                min: code,
                max: code,
                mean: code,
                rest: 0,
            };
            return;
        }
        self.min = self.min.min(code);
        self.max = self.max.max(code);
        // Saturated (36 deliveries a second for half an hour): the extremes still move.
        if self.count == u16::MAX {
            return;
        }
        let n = u64::from(self.count);
        let sum = u64::from(self.mean) * n + u64::from(self.rest) + u64::from(code);
        self.count += 1;
        let n = n + 1;
        // Both fit: the mean of u16 codes is a u16 code, the remainder is below the count.
        self.mean = (sum / n) as u16;
        self.rest = (sum % n) as u16;
    }
}

/// The delay history of one probe × class; see the module documentation.
#[derive(Debug, Clone)]
pub struct DelayHistory {
    /// Number of the newest slot recorded (Unix ms / [`SLOT_MS`]); slot `s` lives at
    /// `slots[s % SLOTS]` while `newest - s < SLOTS`, hour `h` at `hours[h % HOURS]`.
    newest: u32,
    slots: [Slot; SLOTS],
    hours: [[u16; BUCKETS]; HOURS],
    /// Deliveries were recorded since the history was last handed out as a write. Never
    /// stored, and not compared: books replayed from the store equal the live ones.
    unsaved: bool,
}

impl Default for DelayHistory {
    fn default() -> DelayHistory {
        DelayHistory {
            newest: 0,
            slots: [Slot::default(); SLOTS],
            hours: [[0; BUCKETS]; HOURS],
            unsaved: false,
        }
    }
}

impl PartialEq for DelayHistory {
    fn eq(&self, other: &DelayHistory) -> bool {
        self.newest == other.newest && self.slots == other.slots && self.hours == other.hours
    }
}

/// One non-empty half hour, as the chart and `/api/status` show it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HistoryPoint {
    /// Start of the half hour, Unix seconds.
    pub start: u64,
    /// Deliveries seen in it.
    pub count: u32,
    /// Shortest delay, seconds (±0.034 %).
    pub min_seconds: f64,
    /// Longest delay, seconds (±0.034 %).
    pub max_seconds: f64,
    /// Geometric mean of its delays, seconds: the slot's middle on a log scale.
    pub mean_seconds: f64,
}

/// A quantile of the last 24 h with the bracket that certainly holds the true value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    /// The estimate, seconds.
    pub estimate: f64,
    /// The true quantile is at least this, seconds.
    pub low: f64,
    /// The true quantile is at most this, seconds.
    pub high: f64,
}

fn slot_of(ms: u64) -> u32 {
    u32::try_from(ms / SLOT_MS).unwrap_or(u32::MAX)
}

impl DelayHistory {
    /// Records a delivery seen at `at_ms` after `delay_s`. True when it opened a half hour
    /// newer than any before (or was the first): the caller then writes the history, so it
    /// is stored once per half hour. A delivery older than the 48 h kept is ignored.
    pub fn record(&mut self, at_ms: u64, delay_s: f64) -> bool {
        let slot = slot_of(at_ms);
        let empty = self.is_empty();
        let opened = slot > self.newest || empty;
        if empty {
            *self = DelayHistory {
                newest: slot,
                ..DelayHistory::default()
            };
        } else if opened {
            self.advance(slot);
        } else if self.newest - slot >= SLOTS as u32 {
            return false;
        }
        self.slots[slot as usize % SLOTS].add(encode(delay_s));
        let hour = slot / SLOTS_PER_HOUR;
        if self.newest / SLOTS_PER_HOUR - hour < HOURS as u32 {
            let count = &mut self.hours[hour as usize % HOURS][bucket(delay_s)];
            *count = count.saturating_add(1);
        }
        self.unsaved = !opened;
        opened
    }

    fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.count == 0)
    }

    /// Makes `slot` (later than the newest) the newest, clearing the slots and hours between
    /// (their time has come round again: what they held is older than the window).
    fn advance(&mut self, slot: u32) {
        if slot - self.newest >= SLOTS as u32 {
            self.slots = [Slot::default(); SLOTS];
        } else {
            for s in self.newest + 1..=slot {
                self.slots[s as usize % SLOTS] = Slot::default();
            }
        }
        let (old_hour, hour) = (self.newest / SLOTS_PER_HOUR, slot / SLOTS_PER_HOUR);
        if hour - old_hour >= HOURS as u32 {
            self.hours = [[0; BUCKETS]; HOURS];
        } else {
            for h in old_hour + 1..=hour {
                self.hours[h as usize % HOURS] = [0; BUCKETS];
            }
        }
        self.newest = slot;
    }

    /// The slot numbers of the 48 h up to `now_ms` that the ring still holds, oldest first.
    fn window(&self, now_ms: u64) -> std::ops::RangeInclusive<u32> {
        let now = slot_of(now_ms).max(self.newest);
        let first = (now + 1)
            .saturating_sub(SLOTS as u32)
            .max((self.newest + 1).saturating_sub(SLOTS as u32));
        first..=self.newest
    }

    /// The non-empty half hours of the 48 h up to `now_ms`, oldest first.
    pub fn points(&self, now_ms: u64) -> Vec<HistoryPoint> {
        if self.is_empty() {
            return Vec::new();
        }
        self.window(now_ms)
            .filter_map(|s| {
                let slot = self.slots[s as usize % SLOTS];
                (slot.count > 0).then(|| HistoryPoint {
                    start: u64::from(s) * SLOT_MS / 1000,
                    count: u32::from(slot.count),
                    min_seconds: decode(slot.min),
                    max_seconds: decode(slot.max),
                    mean_seconds: decode(slot.mean),
                })
            })
            .collect()
    }

    /// The `q` quantile (0 < q ≤ 1) of the delays of the current hour and the 23 before it at
    /// `now_ms`; `None` without deliveries then.
    pub fn quantile(&self, now_ms: u64, q: f64) -> Option<Quantile> {
        if self.is_empty() {
            return None;
        }
        let now_hour = slot_of(now_ms).max(self.newest) / SLOTS_PER_HOUR;
        let first_hour = (now_hour + 1).saturating_sub(HOURS as u32);
        let newest_hour = self.newest / SLOTS_PER_HOUR;
        if newest_hour < first_hour {
            return None;
        }
        let mut buckets = [0u64; BUCKETS];
        for h in first_hour..=newest_hour {
            for (sum, n) in buckets.iter_mut().zip(&self.hours[h as usize % HOURS]) {
                *sum += u64::from(*n);
            }
        }
        let slots: Vec<Slot> = self
            .window(now_ms)
            .filter(|s| s / SLOTS_PER_HOUR >= first_hour)
            .map(|s| self.slots[s as usize % SLOTS])
            .filter(|s| s.count > 0)
            .collect();
        let (b_low, b_high, fraction) = bucket_bracket(&buckets, q)?;
        let (s_low, s_high) = slot_bracket(&slots, q)?;
        let (low, high) = (b_low.max(s_low), b_high.min(s_high));
        // Both brackets hold the true value; only code rounding can make them miss each other.
        let (low, high) = if low <= high {
            (low, high)
        } else {
            (high, low)
        };
        Some(Quantile {
            estimate: low * (high / low).powf(fraction),
            low,
            high,
        })
    }

    /// The stored form: a version byte, then little-endian `u32` newest slot, the slots
    /// (5 × `u16` each) and the hours (12 × `u16` each), 1,541 bytes. Binary,
    /// not JSON like the other records: JSON of the same numbers would be about three times
    /// the size, written for every class every half hour.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_LEN);
        out.push(STORED_VERSION);
        out.extend_from_slice(&self.newest.to_le_bytes());
        for s in &self.slots {
            for v in [s.count, s.min, s.max, s.mean, s.rest] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for h in &self.hours {
            for v in h {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Reads [`DelayHistory::to_bytes`]; `None` for anything else (another version, a cut-off
    /// record).
    pub fn from_bytes(bytes: &[u8]) -> Option<DelayHistory> {
        if bytes.len() != STORED_LEN || bytes[0] != STORED_VERSION {
            return None;
        }
        let newest = u32::from_le_bytes(bytes[1..5].try_into().ok()?);
        let mut words = bytes[5..]
            .chunks_exact(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]));
        let mut h = DelayHistory {
            newest,
            ..DelayHistory::default()
        };
        for s in &mut h.slots {
            let mut next = || words.next().unwrap_or(0);
            *s = Slot {
                count: next(),
                min: next(),
                max: next(),
                mean: next(),
                rest: next(),
            };
        }
        for hour in &mut h.hours {
            for v in hour {
                *v = words.next().unwrap_or(0);
            }
        }
        Some(h)
    }

    /// [`DelayHistory::from_bytes`], or an empty history for a record it cannot read: the
    /// history is a chart, not a count, and must never keep the books from loading.
    pub fn from_stored(bytes: &[u8]) -> DelayHistory {
        DelayHistory::from_bytes(bytes).unwrap_or_default()
    }
}

/// The histogram bucket holding rank `ceil(q × n)`: its bounds and how far into it the rank
/// lies (as `histogram_quantile` interpolates).
fn bucket_bracket(buckets: &[u64; BUCKETS], q: f64) -> Option<(f64, f64, f64)> {
    let n: u64 = buckets.iter().sum();
    let rank = rank(n, q)?;
    let mut below = 0;
    for (i, count) in buckets.iter().enumerate() {
        if below + count >= rank {
            let low = if i == 0 { 0.0 } else { QUANTILE_BOUNDS[i - 1] };
            let high = QUANTILE_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            let fraction = (rank - below) as f64 / *count as f64;
            return Some((low, high, fraction));
        }
        below += count;
    }
    None
}

/// Bounds on the `q` quantile from the slots' extremes: at least `rank` delays lie at or
/// below `high` (every delay of the slots with the lowest maxima), and fewer than `rank`
/// below `low` (only slots with a minimum below it have any there).
fn slot_bracket(slots: &[Slot], q: f64) -> Option<(f64, f64)> {
    let n: u64 = slots.iter().map(|s| u64::from(s.count)).sum();
    let rank = rank(n, q)?;
    let reach = |key: fn(&Slot) -> u16| {
        let mut by: Vec<(u16, u64)> = slots.iter().map(|s| (key(s), u64::from(s.count))).collect();
        by.sort_unstable();
        let mut covered = 0;
        by.into_iter().find_map(|(code, count)| {
            covered += count;
            (covered >= rank).then(|| decode(code))
        })
    };
    Some((reach(|s| s.min)?, reach(|s| s.max)?))
}

/// Rank of the `q` quantile among `n` values, 1-based; `None` for none.
fn rank(n: u64, q: f64) -> Option<u64> {
    (n > 0).then(|| ((q * n as f64).ceil() as u64).clamp(1, n))
}

impl Ledger {
    /// Puts a delivery of `class` on its history; the write of the history when it opened a
    /// new half hour (see the module documentation).
    pub(super) fn record_delay(&mut self, class: &str, at_ms: u64, delay_s: f64) -> Option<Write> {
        let history = self.history.entry(class.to_string()).or_default();
        history
            .record(at_ms, delay_s)
            .then(|| Write::History(class.to_string(), history.clone()))
    }

    /// The writes of every history with deliveries not yet handed out as a write: what the
    /// agent stores as it stops, so a restart keeps the current half hour.
    pub fn unsaved_history(&mut self) -> Vec<Write> {
        self.history
            .iter_mut()
            .filter(|(_, h)| h.unsaved)
            .map(|(class, h)| {
                h.unsaved = false;
                Write::History(class.clone(), h.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
