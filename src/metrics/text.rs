//! The text exposition format 0.0.4, written straight into one `String`.
//!
//! Every line is appended to the one buffer: label values are escaped in place and numbers
//! formatted into it, so a series costs no allocation of its own, whatever the
//! number of probes. Values print as the prometheus crate's encoder printed them (Rust's
//! shortest round-trip decimal, never an exponent), integers as integers, and the special
//! values as the format spells them: `+Inf`, `-Inf`, `NaN`.

use std::fmt::Write as _;

use crate::ledger::Histogram;

/// The metric type of a family, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label names and (unescaped) values of one series, in the order written.
pub(super) type Labels<'a> = [(&'a str, &'a str)];

/// Bucket bounds with their `le` label values, spelled once rather than formatted per series.
pub(super) struct Buckets {
    /// The upper bounds, as the books keep the histogram.
    pub(super) bounds: &'static [f64],
    /// `bounds` as `le` values (`bounds[i].to_string()`; a unit test holds them together).
    pub(super) le: &'static [&'static str],
}

/// The body being written, and the family whose series are being written.
pub(super) struct Text {
    out: String,
    /// `mailcanary_` and the current family's name.
    name: &'static str,
    /// Where the current family's header starts and ends in `out`: a family that wrote no
    /// series is cut off again (the format leaves empty families out). `None` once its
    /// series were handed out ([`Text::take_ready`]): the header went with them.
    header: Option<(usize, usize)>,
}

impl Text {
    /// An empty body with room for `capacity` bytes.
    pub(super) fn with_capacity(capacity: usize) -> Text {
        Text {
            out: String::with_capacity(capacity),
            name: "",
            header: None,
        }
    }

    /// How much text is waiting to be handed out.
    pub(super) fn len(&self) -> usize {
        self.out.len()
    }

    /// Hands out what is written so far (for a body sent in pieces), keeping only a header
    /// whose family has no series yet, since an empty family is left out after all. The next
    /// piece is written into a buffer of `capacity`.
    pub(super) fn take_ready(&mut self, capacity: usize) -> String {
        let keep = match self.header {
            Some((start, end)) if end == self.out.len() => start,
            _ => self.out.len(),
        };
        let mut next = String::with_capacity(capacity.max(self.out.len() - keep));
        next.push_str(&self.out[keep..]);
        if let Some((start, end)) = self.header {
            self.header = (end == self.out.len()).then(|| (0, end - start));
        }
        let mut ready = std::mem::replace(&mut self.out, next);
        ready.truncate(keep);
        ready
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. `name` is the full metric name.
    pub(super) fn family(&mut self, name: &'static str, kind: Kind, help: &str) {
        self.end_family();
        self.name = name;
        let start = self.out.len();
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape(&mut self.out, help, false);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
        self.header = Some((start, self.out.len()));
    }

    /// Ends the current family, leaving it out if it wrote no series.
    fn end_family(&mut self) {
        if let Some((start, end)) = self.header.take()
            && end == self.out.len()
        {
            self.out.truncate(start);
        }
    }

    /// The finished body.
    pub(super) fn finish(mut self) -> String {
        self.end_family();
        self.out
    }

    /// A counter sample.
    pub(super) fn counter(&mut self, labels: &Labels<'_>, value: u64) {
        self.head("", labels, None);
        integer(&mut self.out, value);
    }

    /// A gauge sample.
    pub(super) fn gauge(&mut self, labels: &Labels<'_>, value: f64) {
        self.head("", labels, None);
        float(&mut self.out, value);
        self.out.push('\n');
    }

    /// A histogram's `_bucket` lines (cumulative, `+Inf` last), `_sum` and `_count`. Counts
    /// kept over other bounds than `buckets` (books of another version not yet re-bucketed)
    /// are never put under the wrong `le`: they all show in `+Inf`.
    pub(super) fn histogram(&mut self, labels: &Labels<'_>, h: &Histogram, buckets: &Buckets) {
        let fits = h.counts.len() == buckets.bounds.len() + 1;
        let mut cumulative = 0;
        for (i, le) in buckets.le.iter().enumerate() {
            if fits {
                cumulative += h.counts[i];
            }
            self.head("_bucket", labels, Some(le));
            integer(&mut self.out, cumulative);
        }
        let count = h.count();
        self.head("_bucket", labels, Some("+Inf"));
        integer(&mut self.out, count);
        self.head("_sum", labels, None);
        float(&mut self.out, h.sum);
        self.out.push('\n');
        self.head("_count", labels, None);
        integer(&mut self.out, count);
    }

    /// Name, suffix, labels (and `le`) and the space before the value.
    fn head(&mut self, suffix: &str, labels: &Labels<'_>, le: Option<&str>) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        let mut sep = '{';
        for (name, value) in labels {
            self.out.push(sep);
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape(&mut self.out, value, true);
            self.out.push('"');
            sep = ',';
        }
        if let Some(le) = le {
            self.out.push(sep);
            self.out.push_str("le=\"");
            self.out.push_str(le);
            self.out.push('"');
            sep = ',';
        }
        if sep == ',' {
            self.out.push('}');
        }
        self.out.push(' ');
    }
}

/// Appends `value` escaped as the format wants: `\` and newline always, `"` in label values.
fn escape(out: &mut String, value: &str, quote: bool) {
    let special = |b: &u8| *b == b'\\' || *b == b'\n' || (quote && *b == b'"');
    if !value.as_bytes().iter().any(special) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends a count and the line's end. Digits by hand: most samples are counts (most of them
/// 0), and the formatting machinery was a tenth of the render time.
fn integer(out: &mut String, mut n: u64) {
    let mut digits = [b'\n'; 21];
    let mut start = digits.len() - 1;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits and a newline: always UTF-8, the fallback is never taken.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or("NaN\n"));
}

/// Appends a sample value: `+Inf`, `-Inf` and `NaN` as the format spells them, anything else
/// as Rust's shortest round-trip decimal (what the prometheus crate's encoder printed).
fn float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(write: impl FnOnce(&mut Text)) -> String {
        let mut t = Text::with_capacity(0);
        t.family(
            "m",
            Kind::Gauge,
            "Help with a \\ and a\nnewline, \"quoted\".",
        );
        write(&mut t);
        t.finish()
    }

    #[test]
    fn label_values_are_escaped() {
        let folder = "In \"box\"\\new\nline";
        let text = body(|t| t.gauge(&[("probe", "p"), ("folder", folder)], 1.0));
        assert_eq!(
            text.lines().nth(2),
            Some(r#"m{probe="p",folder="In \"box\"\\new\nline"} 1"#),
            "{text}"
        );
        assert_eq!(
            text.lines().next(),
            Some(r#"# HELP m Help with a \\ and a\nnewline, "quoted"."#),
            "help escapes backslash and newline, not quotes"
        );
    }

    #[test]
    fn values_print_as_the_format_and_the_old_encoder_did() {
        let cases = [
            (1.0, "1"),
            (0.5, "0.5"),
            (-0.25, "-0.25"),
            (1_700_000_000.123, "1700000000.123"),
            (1e21, "1000000000000000000000"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, want) in cases {
            let text = body(|t| t.gauge(&[], value));
            assert_eq!(text.lines().nth(2), Some(format!("m {want}").as_str()));
        }
    }

    #[test]
    fn counts_print_exactly() {
        for (value, want) in [
            (0, "0"),
            (7, "7"),
            (1_000, "1000"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let text = body(|t| t.counter(&[("a", "b")], value));
            assert_eq!(
                text.lines().nth(2),
                Some(format!("m{{a=\"b\"}} {want}").as_str())
            );
        }
    }

    #[test]
    fn a_family_without_series_is_left_out() {
        let mut t = Text::with_capacity(0);
        t.family("a", Kind::Counter, "A.");
        t.family("b", Kind::Counter, "B.");
        t.counter(&[], 2);
        t.family("c", Kind::Counter, "C.");
        assert_eq!(t.finish(), "# HELP b B.\n# TYPE b counter\nb 2\n");
    }

    #[test]
    fn histograms_are_cumulative_and_never_mislabel_other_buckets() {
        const B: Buckets = Buckets {
            bounds: &[1.0, 5.0],
            le: &["1", "5"],
        };
        let mut h = Histogram::new(B.bounds);
        for v in [0.5, 3.0, 3.0, 9.0] {
            h.observe(B.bounds, v);
        }
        let mut t = Text::with_capacity(0);
        t.family("h", Kind::Histogram, "H.");
        t.histogram(&[("probe", "p")], &h, &B);
        let other = Histogram {
            counts: vec![1, 1, 1, 1],
            sum: 2.5,
        };
        t.histogram(&[], &other, &B);
        let text = t.finish();
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                r#"h_bucket{probe="p",le="1"} 1"#,
                r#"h_bucket{probe="p",le="5"} 3"#,
                r#"h_bucket{probe="p",le="+Inf"} 4"#,
                r#"h_sum{probe="p"} 15.5"#,
                r#"h_count{probe="p"} 4"#,
                r#"h_bucket{le="1"} 0"#,
                r#"h_bucket{le="5"} 0"#,
                r#"h_bucket{le="+Inf"} 4"#,
                "h_sum 2.5",
                "h_count 4",
            ]
        );
    }
}
