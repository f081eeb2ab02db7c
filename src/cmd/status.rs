//! `mailcanary status`: the books, as a table, straight from the state store.
//!
//! The store is opened read-only in redb's single-writer mode, so this works while `run` is
//! writing to it, without asking the daemon (whose address `status` would not know).
//!
//! Only `[agent]` of the config is read: the operator asking for the books need not hold the
//! daemon's passwords or signing key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::{ExitAs as _, Failure};
use crate::clock;
use crate::config::AgentConfig;
use crate::ledger::Ledger;
use crate::state;

/// Prints the in-flight canaries and each probe×class's last results.
pub fn run(config: &Path) -> Result<ExitCode, super::Error> {
    let agent = AgentConfig::load(config).exit_as(Failure::Config)?;
    let ledgers = state::read(&agent.state_dir).exit_as(Failure::State)?;
    print!("{}", render(&ledgers, clock::now_ms()));
    Ok(ExitCode::SUCCESS)
}

/// The two tables as text. Pure.
pub fn render(ledgers: &BTreeMap<String, Ledger>, now_ms: u64) -> String {
    let age = |since_ms: u64| {
        let secs = now_ms.saturating_sub(since_ms) / 1000;
        humantime::format_duration(Duration::from_secs(secs)).to_string()
    };
    let mut in_flight = vec![row(["PROBE", "CLASS", "SEQ", "AGE", "QUEUE ID", "ID"])];
    let mut results = vec![row([
        "PROBE",
        "CLASS",
        "SENT",
        "DELIVERED",
        "IN FLIGHT",
        "LOST",
        "LATE",
        "LAST DELAY",
        "LAST SEEN",
    ])];
    for (probe, ledger) in ledgers {
        let mut canaries: Vec<_> = ledger.in_flight().values().collect();
        canaries.sort_by_key(|c| (c.sent_ms, c.class.clone()));
        for c in canaries {
            in_flight.push(row([
                probe.as_str(),
                &c.class,
                &c.seq.to_string(),
                &age(c.sent_ms),
                c.queue_id.as_deref().unwrap_or("-"),
                &c.id,
            ]));
        }
        for (class, t) in &ledger.classes {
            let flying = ledger.in_flight_count(class);
            results.push(row([
                probe.as_str(),
                class,
                &t.sent.to_string(),
                &t.delivered.values().sum::<u64>().to_string(),
                &flying.to_string(),
                &t.lost.to_string(),
                &t.late.to_string(),
                &t.last_delay_s.map_or("-".into(), |d| format!("{d:.3}s")),
                &t.last_delivery_ms
                    .map_or("-".into(), |ms| format!("{} ago", age(ms))),
            ]));
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "In flight:");
    out.push_str(&table(&in_flight));
    let _ = writeln!(out, "\nLast results:");
    out.push_str(&table(&results));
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::Canary;

    #[test]
    fn tables_show_in_flight_canaries_and_results() {
        let mut l = Ledger::default();
        l.begin_send("01AAAAAAAAAAAAAAAAAAAAAAAA", "bulk", 1_000);
        l.accepted(
            "01AAAAAAAAAAAAAAAAAAAAAAAA",
            1_100,
            Some("4XyZ".into()),
            0.1,
        );
        l.begin_send("01BBBBBBBBBBBBBBBBBBBBBBBB", "interpersonal", 2_000);
        let c = Canary {
            id: "01BBBBBBBBBBBBBBBBBBBBBBBB".into(),
            probe: "p1".into(),
            class: "interpersonal".into(),
            seq: 1,
            sent_ms: 2_000,
            agent: "a".into(),
        };
        l.arrived_at(&c, "INBOX", "INBOX/1.1", 4_500);
        let text = render(&BTreeMap::from([("p1".to_string(), l)]), 62_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "In flight:");
        assert!(lines[1].starts_with("PROBE  CLASS  SEQ  AGE"), "{text}");
        assert!(
            lines[2].starts_with("p1     bulk   1    1m 1s  4XyZ"),
            "{text}"
        );
        let results = &lines[lines.iter().position(|l| *l == "Last results:").unwrap()..];
        let bulk = results.iter().find(|l| l.contains(" bulk ")).unwrap();
        assert!(
            bulk.split_whitespace()
                .eq(["p1", "bulk", "1", "0", "1", "0", "0", "-", "-"]),
            "{text}"
        );
        let personal = results
            .iter()
            .find(|l| l.contains("interpersonal"))
            .unwrap();
        assert!(
            personal.contains("2.500s") && personal.contains("57s ago"),
            "{text}"
        );
    }
}
