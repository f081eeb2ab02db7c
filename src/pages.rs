//! The status pages: `/`, every probe × class with its state, its 24 h median and p95 delay and
//! a chart of the last 48 h ([`chart`]) (from [`crate::overview`], as `/api/status`), and `/probe/NAME`, how long the last look's steps took, the canaries in
//! flight with their queue ids and the recent deliveries with their delays.
//!
//! Plain HTML written on the server, no script and no external asset: it renders offline, in
//! a locked-down browser and in a screenshot. Everything that came from a server or a mailbox
//! (a bounce's diagnostic, a folder name) is escaped, and so is everything else, by habit.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::ledger::Quantile;
use crate::overview::{self, ClassState, ProbeStatus};
use crate::probe::Probe;

mod chart;
mod failures;

/// Deliveries listed on a probe's page, newest first.
const RECENT_SHOWN: usize = 32;

const HEAD: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>mailcanary</title>\
     <style>body{font-family:sans-serif}td,th{padding:2px 8px}.ok{background:#cfc}\
     .late{background:#fe9}.lost,.send_failing,.mailbox_down{background:#f99}\
     .unknown{background:#ddd}</style></head><body>";

/// The table of probe × class rows ([`class_rows`]), opened with its header row.
const CLASS_TABLE: &str = "<table border=\"1\"><tr><th>probe</th><th>class</th><th>state</th>\
     <th>in flight</th><th>oldest in flight (s)</th><th>last delay (s)</th>\
     <th>median 24h (s)</th><th>p95 24h (s)</th><th>delay, last 48 h</th><th>sent</th>\
     <th>delivered</th><th>lost</th><th>bounced</th><th>last bounce or delay notice</th></tr>";

/// Probes on one page of `/`. Each row carries a 48 h chart (up to ~13 KB of SVG), so 1,000
/// probes × 3 classes on one page would be ~40 MB of HTML: too much for a browser on call.
pub const PROBES_PER_PAGE: usize = 50;

/// `/?page=N` (from 1): a row per probe × class with its state as a colour and a word; the
/// probes needing attention first (worst state first, then config order), 50 probes a page.
pub fn overview(probes: &[Arc<Probe>], page: usize, now_ms: u64) -> String {
    let agent = probes.first().map_or("", |p| p.agent());
    // Ranked by state alone; the full status (histories for the charts, transcripts) is built
    // for the page's 50 only, not for every probe at every look at the page.
    let mut order: Vec<(ClassState, &Arc<Probe>)> = probes
        .iter()
        .map(|p| (overview::worst_state(p, now_ms), p))
        .collect();
    order.sort_by_key(|(state, _)| *state);
    let attention = order.iter().filter(|(s, _)| *s < ClassState::Ok).count();
    let pages = order.len().div_ceil(PROBES_PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    let first = (page - 1) * PROBES_PER_PAGE;
    let shown: Vec<Arc<Probe>> = order[first..(first + PROBES_PER_PAGE).min(order.len())]
        .iter()
        .map(|(_, p)| Arc::clone(p))
        .collect();
    let status = overview::status(agent, &shown, now_ms);
    let mut html = format!(
        "{HEAD}<h1>mailcanary {}</h1><p><a href=\"/metrics\">metrics</a> · \
         <a href=\"/api/status\">status as JSON</a></p><p id=\"summary\">{} probes, \
         {attention} needing attention (listed first); page {page} of {pages}",
        escape(agent),
        order.len()
    );
    if page > 1 {
        let _ = write!(html, " · <a href=\"/?page={}\">previous</a>", page - 1);
    }
    if page < pages {
        let _ = write!(html, " · <a href=\"/?page={}\">next</a>", page + 1);
    }
    html.push_str("</p>");
    html.push_str(CLASS_TABLE);
    for probe in &status.probes {
        class_rows(&mut html, probe, now_ms);
    }
    html.push_str("</table></body></html>\n");
    html
}

fn class_rows(page: &mut String, probe: &ProbeStatus, now_ms: u64) {
    let name = escape(&probe.name);
    for c in &probe.classes {
        let state = c.state.as_str();
        let _ = write!(
            page,
            "<tr><td><a href=\"/probe/{name}\">{name}</a></td><td>{}</td>\
             <td class=\"{state}\">{state}</td><td>{}</td><td>{:.1}</td><td>{}</td>{}{}\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.class),
            c.in_flight,
            c.oldest_in_flight_age_seconds,
            c.last_delay_seconds
                .map_or("-".to_string(), |d| format!("{d:.3}")),
            quantile_cell(c.quantiles_24h.map(|(median, _)| median)),
            quantile_cell(c.quantiles_24h.map(|(_, p95)| p95)),
            chart::delay_chart(&c.history, now_ms),
            c.sent,
            c.delivered,
            c.lost,
            c.bounced,
            c.last_bounce.as_deref().map_or("-".to_string(), escape),
        );
    }
}

/// A 24 h quantile's cell: `≈` the estimate, with the range that certainly holds the true
/// value as its title (see [`crate::ledger::DelayHistory`]).
fn quantile_cell(q: Option<Quantile>) -> String {
    match q {
        Some(q) => format!(
            "<td title=\"between {} and {}\">≈&nbsp;{:.3}</td>",
            chart::human(q.low),
            chart::human(q.high),
            q.estimate
        ),
        None => "<td>-</td>".to_string(),
    }
}

/// `/probe/NAME`: its classes' states, the canaries in flight and the recent deliveries;
/// `None` for a probe that is not configured.
pub fn probe(probes: &[Arc<Probe>], name: &str, now_ms: u64) -> Option<String> {
    let probe = probes.iter().find(|p| p.config().name == name)?;
    let status = overview::status(probe.agent(), std::slice::from_ref(probe), now_ms);
    let mut page = format!(
        "{HEAD}<h1>probe {}</h1><p><a href=\"/\">all probes</a> · mailbox {} {}</p>{CLASS_TABLE}",
        escape(name),
        escape(status.probes[0].protocol),
        if status.probes[0].mailbox_up {
            "up"
        } else {
            "down"
        },
    );
    class_rows(&mut page, &status.probes[0], now_ms);
    page.push_str("</table><h2>Last look at the mailbox</h2><table border=\"1\" id=\"steps\"><tr>");
    let steps = probe.mailbox_steps();
    for step in crate::mailbox::Step::ALL {
        let _ = write!(page, "<th>{} (ms)</th>", step.as_str());
    }
    page.push_str("</tr><tr>");
    for step in crate::mailbox::Step::ALL {
        let took = steps.get(step).map_or("-".to_string(), |d| {
            format!("{:.1}", d.as_secs_f64() * 1000.0)
        });
        let _ = write!(page, "<td>{took}</td>");
    }
    page.push_str("</tr></table>");
    probe.read_ledger(|ledger| {
        page.push_str(
            "<h2>In flight</h2><table border=\"1\" id=\"in-flight\"><tr><th>canary</th>\
             <th>class</th><th>seq</th><th>age (s)</th><th>queue id</th></tr>",
        );
        let mut in_flight: Vec<_> = ledger.in_flight().values().collect();
        in_flight.sort_by_key(|c| c.sent_ms);
        for c in in_flight {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
                escape(&c.id),
                escape(&c.class),
                c.seq,
                now_ms.saturating_sub(c.sent_ms) as f64 / 1000.0,
                escape(c.queue_id.as_deref().unwrap_or("-")),
            );
        }
        page.push_str(
            "</table><h2>Recent deliveries</h2><table border=\"1\" id=\"deliveries\"><tr>\
             <th>canary</th><th>class</th><th>folder</th><th>delivery delay (s)</th>\
             <th>server delay (s)</th></tr>",
        );
        let mut seen: Vec<_> = ledger.seen.iter().collect();
        seen.sort_by_key(|(_, s)| std::cmp::Reverse(s.seen_ms));
        for (id, s) in seen.into_iter().take(RECENT_SHOWN) {
            let folder = s.mail.rsplit_once('/').map_or(s.mail.as_str(), |(f, _)| f);
            let delay = |at: u64| at.saturating_sub(s.sent_ms) as f64 / 1000.0;
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
                escape(id),
                escape(&s.class),
                escape(folder),
                delay(s.seen_ms),
                s.server_ms
                    .map_or("-".to_string(), |ms| format!("{:.3}", delay(ms))),
            );
        }
        page.push_str("</table>");
        hops_table(&mut page, ledger);
    });
    failures::section(&mut page, &status.probes[0].last_failures);
    forged_section(&mut page, status.probes[0].last_forged.as_ref());
    page.push_str("</body></html>\n");
    Some(page)
}

/// "Where the last delivery spent its time": per class, the hop delays of its most recent
/// delivery with a `Received:` chain (oldest hop first; the last column sums the deeper hops),
/// so the hop holding a class's mail is read at a glance.
fn hops_table(page: &mut String, ledger: &crate::ledger::Ledger) {
    let hops = ledger
        .classes
        .values()
        .map(|t| t.last_hop_delay_s.len())
        .max()
        .unwrap_or(0);
    page.push_str(
        "<h2>Where the last delivery spent its time</h2><table border=\"1\" id=\"hops\"><tr>\
         <th>class</th>",
    );
    for hop in 1..=hops {
        let _ = write!(page, "<th>hop {hop} (s)</th>");
    }
    page.push_str("</tr>");
    for (class, t) in &ledger.classes {
        let _ = write!(page, "<tr><td>{}</td>", escape(class));
        for hop in 0..hops {
            match t.last_hop_delay_s.get(hop) {
                Some(d) => {
                    let _ = write!(page, "<td>{d:.3}</td>");
                }
                None => page.push_str("<td>-</td>"),
            }
        }
        page.push_str("</tr>");
    }
    page.push_str("</table>");
}

/// "Last forged mail": where the last mail forging this probe's canaries is, and its From and
/// Subject as the forger wrote them (escaped, like everything else).
fn forged_section(page: &mut String, forged: Option<&crate::ledger::ForgedMail>) {
    page.push_str("<h2>Last forged mail</h2>");
    let Some(f) = forged else {
        page.push_str("<p id=\"forged\">none seen</p>");
        return;
    };
    let at = utc(f.seen_ms, WHEN);
    let _ = write!(
        page,
        "<table border=\"1\" id=\"forged\"><tr><th>seen</th><th>mail</th><th>From</th>\
         <th>Subject</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        escape(&at),
        escape(&f.mail),
        escape(f.from.as_deref().unwrap_or("-")),
        escape(f.subject.as_deref().unwrap_or("-")),
    );
}

/// How the pages write a moment.
const WHEN: &str = "%Y-%m-%d %H:%M:%S UTC";

/// `ms` (Unix) in UTC as `format` (chrono's) says; the number itself if chrono cannot place it.
fn utc(ms: u64, format: &str) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| ms.to_string(), |t| t.format(format).to_string())
}

/// Text for HTML: the markup characters and quotes as entities, control characters as
/// spaces (a server's reply may carry any byte).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::SendStage;
    use crate::state::Store;
    use crate::testing::{FakeServer, Fault, probe_named};

    #[tokio::test]
    async fn the_overview_pages_fifty_probes_at_a_time_those_needing_attention_first() {
        let (server, store) = (FakeServer::default(), Store::acknowledging());
        let mut probes: Vec<Arc<Probe>> = (0..119)
            .map(|i| probe_named(&format!("p{i:03}"), &server, &store, "\"bulk\"", "1h"))
            .collect();
        for probe in &probes {
            probe.open_books().await;
        }
        let refusing = FakeServer::default();
        refusing.fail_send(&[Fault::Send(SendStage::Auth)]);
        let failing = probe_named("zz-failing", &refusing, &store, "\"bulk\"", "1h");
        failing
            .send_round(&tokio_util::sync::CancellationToken::new())
            .await;
        probes.push(failing);
        let rows = |page: &str| page.matches("<tr><td><a href=\"/probe/").count();
        let first = overview(&probes, 1, 0);
        assert!(first.contains("120 probes, 1 needing attention (listed first); page 1 of 3"));
        assert_eq!(rows(&first), 50);
        let first_row = first.split("<tr><td>").nth(1).expect("a row");
        assert!(first_row.contains("zz-failing") && first_row.contains("send_failing"));
        assert!(first.contains("<a href=\"/?page=2\">next</a>") && !first.contains("previous"));
        let last = overview(&probes, 3, 0);
        assert_eq!(rows(&last), 20);
        assert!(last.contains("<a href=\"/?page=2\">previous</a>") && !last.contains("next"));
        assert!(last.contains("p118") && !last.contains("zz-failing"));
        assert_eq!(
            overview(&probes, 99, 0),
            last,
            "past the end: the last page"
        );
        assert_eq!(overview(&probes, 0, 0), first);
    }

    #[test]
    fn a_24h_quantile_shows_as_an_estimate_with_its_bracket() {
        let q = Quantile {
            estimate: 2.25,
            low: 2.0,
            high: 2.5,
        };
        assert_eq!(
            quantile_cell(Some(q)),
            "<td title=\"between 2.0s and 2.5s\">≈&nbsp;2.250</td>"
        );
        assert_eq!(quantile_cell(None), "<td>-</td>");
    }

    #[test]
    fn markup_quotes_and_control_characters_render_as_text() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>&'\u{7}\r\n"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;   "
        );
    }
}
