//! Mail classes measured separately: a receiver that holds bulk mail while personal mail flows,
//! Junk placement by folder, and a padded large class.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

fn class_series(name: &str, probe: &str, class: &str) -> String {
    format!("mailcanary_{name}{{class=\"{class}\",probe=\"{probe}\"}}")
}

fn in_folder(probe: &str, class: &str, folder: &str) -> String {
    format!("mailcanary_delivered_total{{class=\"{class}\",folder=\"{folder}\",probe=\"{probe}\"}}")
}

#[test]
fn bulk_held_by_the_provider_ages_while_other_classes_flow() {
    // A Postfix rule on the bulk template's List-Unsubscribe header holds every bulk mail: the
    // provider of this product's origin story. Its own stack, so other tests' bulk mail flows.
    let stack = StackGuard(Stack::up(
        Path::new("/tmp/mailcanary-it-classes"),
        Some(22000),
    ));
    let stack = &stack.0;
    stack.ctl("rule", &["clear"]);
    stack.ctl("rule", &["add", "/^List-Unsubscribe:/ HOLD"]);
    let user = "box02@example.test";
    empty_mailbox(stack, user);
    let section = with_probe_keys(
        &probe_section(stack, "triage", user, "MC_PROBE1_PASSWORD"),
        "late_after = \"1s\"",
    );
    let work = Workdir::new("it-classes", &section);
    let daemon = work.daemon(stack);
    let s = |name: &str, class: &str| class_series(name, "triage", class);
    for class in ["interpersonal", "transactional"] {
        daemon.wait_metric(
            &in_folder("triage", class, "INBOX"),
            1.0,
            Duration::from_secs(15),
        );
    }
    daemon.wait_metric(&s("sent_total", "bulk"), 1.0, Duration::from_secs(10));

    let first = daemon.scrape();
    assert_eq!(metric(&first, &s("in_flight", "bulk")), Some(1.0));
    let age1 = metric(&first, &s("oldest_in_flight_age_seconds", "bulk")).unwrap();
    let mut age2 = age1;
    let mut later = first.clone();
    daemon.wait_for(
        "bulk's in-flight age to grow past 2 s",
        Duration::from_secs(10),
        || {
            later = daemon.scrape();
            age2 = metric(&later, &s("oldest_in_flight_age_seconds", "bulk")).unwrap_or(0.0);
            age2 > age1 && age2 >= 2.0
        },
    );
    for scrape in [&first, &later] {
        for class in ["interpersonal", "transactional"] {
            assert_eq!(
                metric(scrape, &s("oldest_in_flight_age_seconds", class)),
                Some(0.0),
                "{class}"
            );
            assert_eq!(metric(scrape, &s("in_flight", class)), Some(0.0), "{class}");
        }
    }
    assert_eq!(
        metric(&later, &in_folder("triage", "bulk", "INBOX")),
        Some(0.0)
    );
    held_bulk_on_the_pages(stack, &daemon);

    stack.ctl("rule", &["clear"]);
    stack.ctl("release", &[]);
    daemon.wait_metric(
        &in_folder("triage", "bulk", "INBOX"),
        1.0,
        Duration::from_secs(15),
    );
    let text = daemon.scrape();
    let bulk_delay = metric(&text, &s("last_delivery_delay_seconds", "bulk")).unwrap();
    assert!(bulk_delay >= age2, "bulk delay {bulk_delay} < hold {age2}");
    for class in ["interpersonal", "transactional"] {
        let delay = metric(&text, &s("last_delivery_delay_seconds", class)).unwrap();
        assert!(
            delay < bulk_delay,
            "{class} ({delay}) was not held like bulk ({bulk_delay})"
        );
    }
}

/// The overview and the probe's page, in a real browser: bulk (held, older than `late_after`)
/// is late with its age, the other classes ok, and the held canary is listed in flight with
/// the queue id Postfix held it under.
fn held_bulk_on_the_pages(stack: &Stack, daemon: &Daemon) {
    let overview = in_chromium(&format!("http://127.0.0.1:{}/", daemon.port), "overview");
    let bulk = rows_with(&overview, ">bulk<");
    assert_eq!(bulk.len(), 1, "{overview}");
    assert!(
        bulk[0].contains("<td class=\"late\">late</td>"),
        "{}",
        bulk[0]
    );
    for class in ["interpersonal", "transactional"] {
        let row = rows_with(&overview, &format!(">{class}<"));
        assert!(row[0].contains("<td class=\"ok\">ok</td>"), "{}", row[0]);
    }
    delay_history_on_the_overview(&overview, daemon);
    let page = in_chromium(
        &format!("http://127.0.0.1:{}/probe/triage", daemon.port),
        "probe",
    );
    let in_flight = table(&page, "in-flight");
    let held = rows_with(in_flight, ">bulk<");
    assert_eq!(held.len(), 1, "{in_flight}");
    let cells: Vec<&str> = held[0]
        .split("<td>")
        .skip(1)
        .map(|c| c.split("</td>").next().unwrap_or(c))
        .collect();
    let (age, queue_id) = (cells[3], cells[4]);
    assert!(age.parse::<f64>().expect("an age") >= 1.0, "{held:?}");
    let postfix = std::fs::read_to_string(stack.get("MAILSTACK_POSTFIX_LOG")).unwrap();
    assert!(
        postfix.contains(&format!("{queue_id}: hold:")),
        "queue id {queue_id:?} is not the one Postfix held"
    );
    let deliveries = table(&page, "deliveries");
    assert_eq!(rows_with(deliveries, ">INBOX<").len(), 2, "{deliveries}");
    // Which hop held the last delivery: a delay for every hop of a class that arrived (the
    // stack's chain has at least Postfix and Dovecot), none for the held one.
    let hops = table(&page, "hops");
    let arrived = rows_with(hops, ">interpersonal<");
    let delays = arrived[0].matches("<td>").count() - 1;
    assert!(delays >= 2 && !arrived[0].contains("<td>-</td>"), "{hops}");
    assert_eq!(
        rows_with(hops, ">bulk<")[0].matches("<td>-</td>").count(),
        delays,
        "{hops}"
    );
}

/// The delay chart and the 24 h median and p95: a point for each half hour with deliveries of
/// a class that flows (the canaries of this test fall in one, or two across a boundary), none
/// for the held bulk class; `/api/status` says the same.
fn delay_history_on_the_overview(overview: &str, daemon: &Daemon) {
    let row = rows_with(overview, ">interpersonal<")[0];
    let points = row.matches("class=\"point\"").count();
    assert!((1..=2).contains(&points), "{points} points: {row}");
    assert!(
        row.contains(" deliveries, "),
        "each point says its delay: {row}"
    );
    assert_eq!(
        row.matches(">≈&nbsp;").count(),
        2,
        "a median and a p95: {row}"
    );
    let bulk = rows_with(overview, ">bulk<")[0];
    assert!(bulk.contains("<svg"), "{bulk}");
    assert_eq!(bulk.matches("class=\"point\"").count(), 0, "{bulk}");
    assert!(bulk.contains("no deliveries"), "{bulk}");

    let (_, body) = http_get(daemon.port, "/api/status").expect("/api/status answers");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let classes = status["probes"][0]["classes"].as_array().expect("classes");
    let class = |name: &str| {
        classes
            .iter()
            .find(|c| c["class"] == name)
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    let flowing = class("interpersonal");
    let median = flowing["median_delay_24h_seconds"]
        .as_f64()
        .expect("a median");
    let p95 = flowing["p95_delay_24h_seconds"].as_f64().expect("a p95");
    assert!(0.0 < median && median <= p95 && p95 < 60.0, "{flowing}");
    let history = flowing["history"].as_array().expect("history");
    let delivered: u64 = history.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert!(
        delivered >= 1 && (1..=2).contains(&history.len()),
        "{flowing}"
    );
    let held = class("bulk");
    assert!(held["median_delay_24h_seconds"].is_null(), "{held}");
    assert_eq!(held["history"], serde_json::json!([]), "{held}");
}

#[test]
fn a_spam_flagged_class_is_counted_in_junk() {
    let stack = Stack::shared();
    let user = "box12@example.test";
    empty_mailbox(stack, user);
    let section = with_probe_keys(
        &probe_section(stack, "junk", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"spammy\"]",
    );
    let config = format!(
        "{section}\n[class.spammy]\ntemplate = \"bulk\"\nheaders = {{ \"X-Spam-Flag\" = \"YES\" }}\n"
    );
    let work = Workdir::new("it-junk", &config);
    let text = work.once(stack, "20s");
    assert_eq!(
        metric(&text, &in_folder("junk", "spammy", "Junk")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &in_folder("junk", "spammy", "INBOX")),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            &class_series("delivery_delay_seconds_count", "junk", "spammy")
        ),
        Some(1.0)
    );
}

#[test]
fn a_large_class_is_two_mebibytes_on_the_wire_and_measured() {
    let stack = Stack::shared();
    let user = "box13@example.test";
    empty_mailbox(stack, user);
    let section = with_probe_keys(
        &probe_section(stack, "big", user, "MC_PROBE1_PASSWORD"),
        "classes = [\"large\"]",
    );
    // Kept in the mailbox so the delivered file can be weighed.
    let config = format!(
        "{section}  cleanup = \"keep\"\n\n[class.large]\ntemplate = \"interpersonal\"\nsize = \"2MiB\"\nlost_after = \"6h\"\n"
    );
    let work = Workdir::new("it-large", &config);
    let text = work.once(stack, "30s");
    assert_eq!(
        metric(&text, &in_folder("big", "large", "INBOX")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &class_series("delivery_delay_seconds_count", "big", "large")
        ),
        Some(1.0)
    );

    let files = mail_files(&stack.maildir(user));
    let (_, mail) = files
        .iter()
        .find(|(_, t)| t.contains("X-Mailcanary"))
        .expect("the kept canary");
    let target = 2.0 * 1024.0 * 1024.0;
    let size = mail.len() as f64;
    assert!(
        (size - target).abs() / target <= 0.05,
        "{size} bytes is not 2 MiB ± 5 %"
    );
}
