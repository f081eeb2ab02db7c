//! The status page's delay chart: the last 48 h of one probe × class as a small inline SVG,
//! written on the server (no script, no external asset, so it renders offline and in a
//! screenshot).
//!
//! x is time, one 2-pixel column per half hour ([`SLOT_MS`]), now at the right edge. y is the
//! delivery delay on a log scale from 10 ms up to 1 min, 1 h, 1 d or 2 d, whichever is the
//! first to hold the longest delay shown: a held mail stretches the axis to hours and the
//! seconds of normal traffic still take a third of the height, where a linear axis would flatten
//! them onto the baseline. Each half hour with deliveries is a bar from its shortest to its
//! longest delay and a point (`<circle class="point">`, with a `<title>` saying when, how
//! many and how long) at their geometric mean. Delays beyond the axis are drawn on its edge;
//! the title still says how long they were.
//!
//! A chart with all 96 half hours is about 14 KB of HTML, most of it the points' titles.
//!
//! Every number written here is computed, nothing comes from outside: nothing needs escaping.

use std::fmt::Write as _;

use crate::ledger::HistoryPoint;
use crate::ledger::history::{SLOT_MS, SLOTS};

/// Width of a half hour, pixels.
const SLOT_W: u32 = 2;
/// Left margin, for the y labels.
const LEFT: u32 = 22;
/// Plot area: x from [`LEFT`], y from [`TOP`] to [`BOTTOM`].
const TOP: f64 = 3.0;
const BOTTOM: f64 = 53.0;
/// Whole picture.
const WIDTH: u32 = LEFT + SLOT_W * SLOTS as u32 + 2;
const HEIGHT: u32 = 56;
/// The bottom of the y axis, seconds: local delivery takes tens of milliseconds.
const FLOOR_S: f64 = 0.01;
/// Gridlines and the tops the axis can have, seconds, with their labels.
const MARKS: [(f64, &str); 4] = [(1.0, "1s"), (60.0, "1m"), (3600.0, "1h"), (86400.0, "1d")];
/// Tops the axis can have, seconds, with their names: the first that holds the longest delay.
const TOPS: [(f64, &str); 4] = [
    (60.0, "1 min"),
    (3600.0, "1 h"),
    (86400.0, "1 d"),
    (172_800.0, "2 d"),
];

/// The y axis: where a delay is drawn.
#[derive(Clone, Copy)]
struct Axis {
    top_s: f64,
    top_name: &'static str,
}

impl Axis {
    fn for_points(points: &[HistoryPoint]) -> Axis {
        let longest = points.iter().map(|p| p.max_seconds).fold(0.0, f64::max);
        let (top_s, top_name) = TOPS
            .into_iter()
            .find(|(t, _)| longest <= *t)
            .unwrap_or(TOPS[TOPS.len() - 1]);
        Axis { top_s, top_name }
    }

    fn y(self, seconds: f64) -> f64 {
        let span = (self.top_s / FLOOR_S).log10();
        let at = (seconds.clamp(FLOOR_S, self.top_s) / FLOOR_S).log10() / span;
        BOTTOM - at * (BOTTOM - TOP)
    }
}

/// A delay as people say it: `850ms`, `2.1s`, `3.5min`, `2.0h`.
pub(super) fn human(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1}s")
    } else if seconds < 7200.0 {
        format!("{:.1}min", seconds / 60.0)
    } else {
        format!("{:.1}h", seconds / 3600.0)
    }
}

/// When a half hour began, for a point's title: `Nov 30 05:30 UTC`.
fn when(start_s: u64) -> String {
    super::utc(start_s.saturating_mul(1000), "%b %d %H:%M UTC")
}

/// The chart of `points` (the non-empty half hours of the last 48 h, oldest first) at
/// `now_ms`.
pub(super) fn delay_chart(points: &[HistoryPoint], now_ms: u64) -> String {
    let axis = Axis::for_points(points);
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         font-family=\"sans-serif\" font-size=\"8\"><title>delivery delay over the last 48 h, \
         log scale up to {}; {} half hours with deliveries</title>",
        axis.top_name,
        points.len()
    );
    let right = WIDTH - 2;
    for (seconds, label) in MARKS.into_iter().filter(|(s, _)| *s <= axis.top_s) {
        let y = axis.y(seconds);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ccc\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            LEFT - 2,
            (y + 3.0).max(8.0)
        );
    }
    let _ = write!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" \
         stroke=\"#999\"/>",
        right - LEFT,
        BOTTOM - TOP
    );
    if points.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"30\" text-anchor=\"middle\" fill=\"#666\">no deliveries</text>",
            (LEFT + right) / 2
        );
    }
    let first_slot = (now_ms / SLOT_MS + 1).saturating_sub(SLOTS as u64);
    let x_of = |p: &HistoryPoint| {
        let slot = (p.start * 1000 / SLOT_MS).saturating_sub(first_slot);
        LEFT + SLOT_W * u32::try_from(slot).unwrap_or(0).min(SLOTS as u32 - 1) + SLOT_W / 2
    };
    let mut bars = String::new();
    for p in points {
        let _ = write!(
            bars,
            "M{} {:.1}V{:.1}",
            x_of(p),
            axis.y(p.max_seconds),
            axis.y(p.min_seconds)
        );
    }
    if !bars.is_empty() {
        let _ = write!(
            svg,
            "<path d=\"{bars}\" stroke=\"#68a\" stroke-width=\"1\"/>"
        );
    }
    // One fill for all points: a full chart has 96, and 1,000 probes' page 3,000 charts.
    svg.push_str("<g fill=\"#135\">");
    for p in points {
        let _ = write!(
            svg,
            "<circle class=\"point\" cx=\"{}\" cy=\"{:.1}\" r=\"1.5\">\
             <title>{}: {} deliveries, {} ({}–{})</title></circle>",
            x_of(p),
            axis.y(p.mean_seconds),
            when(p.start),
            p.count,
            human(p.mean_seconds),
            human(p.min_seconds),
            human(p.max_seconds),
        );
    }
    svg.push_str("</g></svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_795_996_800_000;

    fn point(hours_ago: u64, min: f64, max: f64) -> HistoryPoint {
        let start = (NOW_MS - hours_ago * 3_600_000) / SLOT_MS * SLOT_MS / 1000;
        HistoryPoint {
            start,
            count: 3,
            min_seconds: min,
            max_seconds: max,
            mean_seconds: (min * max).sqrt(),
        }
    }

    fn circles(svg: &str) -> Vec<&str> {
        svg.split("<circle class=\"point\"").skip(1).collect()
    }

    #[test]
    fn one_point_per_half_hour_with_its_delay_in_the_title() {
        let svg = delay_chart(&[point(47, 1.0, 4.0), point(0, 2.0, 2.0)], NOW_MS);
        let points = circles(&svg);
        assert_eq!(points.len(), 2);
        assert!(
            points[0].contains("3 deliveries, 2.0s (1.0s–4.0s)"),
            "{svg}"
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains(">1s</text>") && !svg.contains(">1h<"),
            "axis to 1 min"
        );
        // The oldest at the left, the newest at the right edge.
        let cx = |p: &str| -> u32 { p.split('"').nth(1).unwrap().parse().unwrap() };
        assert!(
            cx(points[0]) < LEFT + 10 && cx(points[1]) > WIDTH - 6,
            "{svg}"
        );
    }

    #[test]
    fn hours_of_delay_stretch_the_axis_and_seconds_stay_apart_from_the_floor() {
        let svg = delay_chart(&[point(5, 2.0, 2.0), point(1, 5400.0, 5400.0)], NOW_MS);
        assert!(
            svg.contains(">1h</text>") && svg.contains("up to 1 d;"),
            "{svg}"
        );
        let axis = Axis {
            top_s: 86400.0,
            top_name: "1 d",
        };
        let (floor, two_s, top) = (axis.y(FLOOR_S), axis.y(2.0), axis.y(86400.0));
        assert!(
            floor - two_s > 0.2 * (floor - top),
            "2 s is well above the floor"
        );
        assert_eq!(axis.y(1e9), top, "beyond the axis: on its edge");
    }

    #[test]
    fn no_deliveries_is_said_not_drawn() {
        let svg = delay_chart(&[], NOW_MS);
        assert!(circles(&svg).is_empty());
        assert!(svg.contains("no deliveries") && svg.contains("<title>"));
    }

    #[test]
    fn delays_read_as_people_say_them() {
        assert_eq!(human(0.85), "850ms");
        assert_eq!(human(2.14), "2.1s");
        assert_eq!(human(210.0), "3.5min");
        assert_eq!(human(7200.0), "2.0h");
    }
}
