//! The "Last failures" section of `/probe/NAME`: each failed attempt the books keep, with the
//! protocol transcript of that attempt, so the person on call reads what the server said.
//!
//! Every message and transcript line is a server's words (anyone's, for a hostile server or a
//! man in the middle): all of it goes through [`escape`], inside a `<pre>` so it reads as the
//! dialogue it was.

use std::fmt::Write as _;

use super::escape;
use crate::overview::FailureStatus;

/// Appends the section for `failures` (newest first) to `page`.
pub(super) fn section(page: &mut String, failures: &[FailureStatus]) {
    page.push_str("<h2>Last failures</h2>");
    if failures.is_empty() {
        page.push_str("<p id=\"failures\">none kept</p>");
        return;
    }
    page.push_str("<div id=\"failures\">");
    for f in failures {
        let at = super::utc((f.at * 1000.0) as u64, super::WHEN);
        let _ = write!(
            page,
            "<div class=\"failure\"><h3>{} · {} · {}</h3><p>{}</p><pre>",
            escape(&at),
            escape(&f.side),
            escape(&f.stage),
            escape(&f.message),
        );
        for line in &f.transcript {
            page.push_str(&escape(line));
            page.push('\n');
        }
        page.push_str("</pre></div>");
    }
    page.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_markup_renders_as_text() {
        let failure = FailureStatus {
            at: 1_764_000_000.0,
            side: "smtp".into(),
            stage: "auth".into(),
            message: "auth: permanent error (535): <b>no</b>".into(),
            transcript: vec![
                "C: AUTH PLAIN <redacted>".into(),
                "S: 535 <script>alert(1)</script> \"quoted\" \\x07".into(),
            ],
        };
        let mut page = String::new();
        section(&mut page, &[failure]);
        assert!(
            !page.contains("<script>") && !page.contains("<b>"),
            "{page}"
        );
        assert!(page.contains("S: 535 &lt;script&gt;alert(1)&lt;/script&gt; &quot;quoted&quot;"));
        assert!(page.contains("C: AUTH PLAIN &lt;redacted&gt;\n"), "{page}");
        assert!(
            page.contains("2025-11-24 16:00:00 UTC · smtp · auth"),
            "{page}"
        );
        let mut empty = String::new();
        section(&mut empty, &[]);
        assert!(empty.contains("none kept"));
    }
}
