//! The alert rules: valid, unit-tested with promtool for every alert, and proven end to end by
//! a real Prometheus scraping a real agent and a real Alertmanager receiving the page. Also runs
//! every query of the Grafana dashboard against that Prometheus.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool is installed (scripts/mailstack install --all)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}",
        output_text(&out)
    );
}

#[test]
fn rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "alerts/mailcanary.rules.yml"]);
    promtool(&["test", "rules", "alerts/tests/mailcanary.test.yml"]);
}

/// promtool evaluates the rule groups of a test in a random order on every run (Prometheus runs
/// groups independently), so a rule reading another group's output passes most runs and fails
/// some. Fifty clean runs in a row make such a flake very unlikely to hide (the cross-group read
/// issue 10 was about failed about one run in six).
#[test]
fn rule_unit_tests_pass_50_runs_in_a_row() {
    for run in 1..=50 {
        let out = Command::new("promtool")
            .args(["test", "rules", "alerts/tests/mailcanary.test.yml"])
            .current_dir(root())
            .output()
            .expect("promtool is installed (scripts/mailstack install --all)");
        assert!(
            out.status.success(),
            "run {run} of 50 failed: {}",
            output_text(&out)
        );
    }
}

/// Names that `rules` reads from a recording rule of another group, or of a later place in its
/// own group: those it sees one evaluation late, or late at random. Empty when every rule reads
/// only recordings made before it in its own group (the rules of one group run in order, each
/// seeing what the earlier ones wrote at the same timestamp).
fn recordings_read_out_of_order(rules: &str) -> Vec<String> {
    let doc: yaml_serde::Value = yaml_serde::from_str(rules).expect("the rules are YAML");
    let groups = doc["groups"].as_sequence().expect("a list of groups");
    // (group index, rule index, recorded name)
    let mut recorded = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for (r, rule) in group["rules"].as_sequence().unwrap().iter().enumerate() {
            if let Some(name) = rule["record"].as_str() {
                recorded.push((g, r, name.to_string()));
            }
        }
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let reads = |expr: &str, name: &str| {
        expr.match_indices(name).any(|(at, _)| {
            let before = expr[..at].chars().next_back();
            let after = expr[at + name.len()..].chars().next();
            !before.is_some_and(name_char) && !after.is_some_and(name_char)
        })
    };
    let mut wrong = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for (r, rule) in group["rules"].as_sequence().unwrap().iter().enumerate() {
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            let this = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            for (rg, rr, name) in &recorded {
                if reads(expr, name) && !(*rg == g && *rr < r) {
                    wrong.push(format!("{this} reads {name}"));
                }
            }
        }
    }
    wrong
}

#[test]
fn rules_read_recordings_only_from_earlier_in_their_own_group() {
    let rules = std::fs::read_to_string(root().join("alerts/mailcanary.rules.yml")).unwrap();
    assert_eq!(recordings_read_out_of_order(&rules), Vec::<String>::new());
    // The check itself finds the shapes it is there for.
    let split = "groups:\n\
        - name: r\n  rules:\n\
        \x20 - record: a:b:c\n    expr: x\n\
        \x20 - record: a:b:late\n    expr: a:b:c2 + a:b:c\n\
        \x20 - record: a:b:c2\n    expr: y\n\
        - name: a\n  rules:\n\
        \x20 - alert: A\n    expr: a:b:c > 1\n";
    assert_eq!(
        recordings_read_out_of_order(split),
        vec!["a:b:late reads a:b:c2", "A reads a:b:c"]
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let rules = std::fs::read_to_string(root().join("alerts/mailcanary.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(root().join("alerts/tests/mailcanary.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in alerts {
        let cases: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {alert}"))
            .map(|w| w[1])
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "{alert} has no case where it must stay quiet"
        );
        assert!(
            cases.contains(&"exp_alerts:"),
            "{alert} has no case where it fires"
        );
    }
}

/// A change to the shipped rules that makes `alert` page earlier than it should: the quiet cases
/// of the unit tests sit just on the quiet side of each threshold and `for:`, so every one of
/// these must make a quiet case of `alert` fire.
struct Mutant {
    alert: &'static str,
    what: &'static str,
    /// Occurs exactly once in the shipped rules.
    from: &'static str,
    to: &'static str,
}

const fn mutant(
    alert: &'static str,
    what: &'static str,
    from: &'static str,
    to: &'static str,
) -> Mutant {
    Mutant {
        alert,
        what,
        from,
        to,
    }
}

const MUTANTS: &[Mutant] = &[
    mutant(
        "MailDeliveryDelayed",
        "threshold 900 -> 899",
        "(mailcanary_oldest_in_flight_age_seconds) > 900",
        "(mailcanary_oldest_in_flight_age_seconds) > 899",
    ),
    mutant(
        "MailDeliveryDelayed",
        "threshold removed",
        "(mailcanary_oldest_in_flight_age_seconds) > 900",
        "(mailcanary_oldest_in_flight_age_seconds)",
    ),
    mutant(
        "MailDeliveryDelayed",
        "for 2m -> 1m",
        "> 900\n        for: 2m\n",
        "> 900\n        for: 1m\n",
    ),
    mutant(
        "MailDeliveryDelayed",
        "for removed",
        "> 900\n        for: 2m\n",
        "> 900\n",
    ),
    mutant(
        "MailDeliveryDelayedCritical",
        "threshold 3600 -> 3599",
        "(mailcanary_oldest_in_flight_age_seconds) > 3600",
        "(mailcanary_oldest_in_flight_age_seconds) > 3599",
    ),
    mutant(
        "MailDeliveryDelayedCritical",
        "threshold removed",
        "(mailcanary_oldest_in_flight_age_seconds) > 3600",
        "(mailcanary_oldest_in_flight_age_seconds)",
    ),
    mutant(
        "MailDeliveryDelayedCritical",
        "for 5m -> 4m",
        "> 3600\n        for: 5m\n",
        "> 3600\n        for: 4m\n",
    ),
    mutant(
        "MailDeliveryDelayedCritical",
        "for removed",
        "> 3600\n        for: 5m\n",
        "> 3600\n",
    ),
    mutant(
        "MailCanaryLost",
        "threshold removed",
        "(increase(mailcanary_lost_total[1h])) > 0",
        "(increase(mailcanary_lost_total[1h]))",
    ),
    mutant(
        "MailCanaryLost",
        "window 1h -> 61m",
        "mailcanary_lost_total[1h]",
        "mailcanary_lost_total[61m]",
    ),
    mutant(
        "MailCanaryBounced",
        "threshold removed",
        "increase(mailcanary_bounced_total[1h])\n          ) > 0\n",
        "increase(mailcanary_bounced_total[1h])\n          )\n",
    ),
    mutant(
        "MailCanaryBounced",
        "window 1h -> 61m",
        "mailcanary_bounced_total[1h]",
        "mailcanary_bounced_total[61m]",
    ),
    mutant(
        "MailCanaryBounced",
        "first-bounce window 1h -> 61m",
        "[1d] offset 1h)",
        "[1d] offset 61m)",
    ),
    mutant(
        "MailCanaryBounced",
        "first-bounce look-back of a day removed",
        "last_over_time(mailcanary_bounced_total[1d] offset 1h)",
        "mailcanary_bounced_total offset 1h",
    ),
    mutant(
        "MailClassDeprioritised",
        "lateness threshold 600 -> 599",
        "{class!=\"interpersonal\"} > 600",
        "{class!=\"interpersonal\"} > 599",
    ),
    mutant(
        "MailClassDeprioritised",
        "lateness threshold removed",
        "          mailcanary:class_lateness:seconds{class!=\"interpersonal\"} > 600\n          and\n",
        "",
    ),
    mutant(
        "MailClassDeprioritised",
        "ratio 4 -> 3.99",
        "4 * mailcanary:class_lateness:seconds",
        "3.99 * mailcanary:class_lateness:seconds",
    ),
    mutant(
        "MailClassDeprioritised",
        "ratio removed",
        "          and\n          mailcanary:class_lateness:seconds{class!=\"interpersonal\"}\n            \
         > ignoring(class) group_left\n            4 * mailcanary:class_lateness:seconds{class=\"interpersonal\"}\n",
        "",
    ),
    mutant(
        "MailClassDeprioritised",
        "for 30m -> 29m",
        "        for: 30m\n",
        "        for: 29m\n",
    ),
    mutant(
        "MailClassDeprioritised",
        "for removed",
        "        for: 30m\n",
        "",
    ),
    mutant(
        "MailSendFailing",
        "threshold 2 -> 1",
        "(increase(mailcanary_send_failures_total[10m])) >= 2",
        "(increase(mailcanary_send_failures_total[10m])) >= 1",
    ),
    mutant(
        "MailSendFailing",
        "threshold removed",
        "(increase(mailcanary_send_failures_total[10m])) >= 2",
        "(increase(mailcanary_send_failures_total[10m]))",
    ),
    mutant(
        "MailSendFailing",
        "for 5m -> 4m",
        ">= 2\n        for: 5m\n",
        ">= 2\n        for: 4m\n",
    ),
    mutant(
        "MailSendFailing",
        "for removed",
        ">= 2\n        for: 5m\n",
        ">= 2\n",
    ),
    mutant(
        "MailboxDown",
        "threshold removed",
        "(mailcanary_mailbox_up) == 0",
        "(mailcanary_mailbox_up)",
    ),
    mutant(
        "MailboxDown",
        "for 5m -> 4m",
        "(mailcanary_mailbox_up) == 0\n        for: 5m\n",
        "(mailcanary_mailbox_up) == 0\n        for: 4m\n",
    ),
    mutant(
        "MailboxDown",
        "for removed",
        "(mailcanary_mailbox_up) == 0\n        for: 5m\n",
        "(mailcanary_mailbox_up) == 0\n",
    ),
    mutant(
        "MailboxLoginSlow",
        "threshold 5 -> 4.99",
        "_seconds{step=\"login\"}[10m]) > 5\n",
        "_seconds{step=\"login\"}[10m]) > 4.99\n",
    ),
    mutant(
        "MailboxLoginSlow",
        "threshold removed",
        "_seconds{step=\"login\"}[10m]) > 5\n",
        "_seconds{step=\"login\"}[10m])\n",
    ),
    mutant(
        "MailboxLoginSlow",
        "window 10m -> 9m",
        "avg_over_time(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[10m])",
        "avg_over_time(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[9m])",
    ),
    mutant(
        "MailboxLoginSlow",
        "window 10m -> 11m",
        "avg_over_time(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[10m])",
        "avg_over_time(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[11m])",
    ),
    mutant(
        "MailboxLoginSlow",
        "for 10m -> 9m",
        "[10m]) > 0\n          )\n        for: 10m\n",
        "[10m]) > 0\n          )\n        for: 9m\n",
    ),
    mutant(
        "MailboxLoginSlow",
        "for removed",
        "[10m]) > 0\n          )\n        for: 10m\n",
        "[10m]) > 0\n          )\n",
    ),
    mutant(
        "MailboxLoginSlow",
        "guard (a login measured in the window) removed",
        "            and\n            changes(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[10m]) > 0\n",
        "",
    ),
    // 12m still passes: the guard has to outlast `for:` by the 2 minutes the average of the
    // quiet case takes to rise.
    mutant(
        "MailboxLoginSlow",
        "guard window 10m -> 13m",
        "changes(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[10m])",
        "changes(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[13m])",
    ),
    mutant(
        "MailboxLoginSlow",
        "step filter removed",
        "_seconds{step=\"login\"}[10m]) > 5\n            and\n            \
         changes(mailcanary_mailbox_step_duration_seconds{step=\"login\"}[10m])",
        "_seconds[10m]) > 5\n            and\n            \
         changes(mailcanary_mailbox_step_duration_seconds[10m])",
    ),
    mutant(
        "MailLandingInJunk",
        "threshold removed",
        "{folder!=\"INBOX\"}[1h])) > 0",
        "{folder!=\"INBOX\"}[1h]))",
    ),
    mutant(
        "MailLandingInJunk",
        "INBOX no longer excluded",
        "mailcanary_delivered_total{folder!=\"INBOX\"}",
        "mailcanary_delivered_total",
    ),
    mutant(
        "MailLandingInJunk",
        "window 1h -> 61m",
        "{folder!=\"INBOX\"}[1h]",
        "{folder!=\"INBOX\"}[61m]",
    ),
    mutant(
        "MailCanaryForged",
        "threshold removed",
        "(increase(mailcanary_forged_total[1h])) > 0",
        "(increase(mailcanary_forged_total[1h]))",
    ),
    mutant(
        "MailCanaryForged",
        "window 1h -> 61m",
        "mailcanary_forged_total[1h]",
        "mailcanary_forged_total[61m]",
    ),
    mutant(
        "MailProbeStale",
        "threshold 3 h -> 3 h - 1 s",
        "> 3 * 3600\n",
        "> 3 * 3600 - 1\n",
    ),
    mutant(
        "MailProbeStale",
        "threshold removed",
        "(mailcanary_last_delivery_timestamp_seconds) > 3 * 3600\n",
        "(mailcanary_last_delivery_timestamp_seconds)\n",
    ),
    mutant(
        "MailProbeStale",
        "for 10m -> 9m",
        "> 3 * 3600\n        for: 10m\n",
        "> 3 * 3600\n        for: 9m\n",
    ),
    mutant(
        "MailProbeStale",
        "for removed",
        "> 3 * 3600\n        for: 10m\n",
        "> 3 * 3600\n",
    ),
    mutant(
        "MailcanaryAbsent",
        "for 5m -> 4m",
        "absent(mailcanary_build_info)\n        for: 5m\n",
        "absent(mailcanary_build_info)\n        for: 4m\n",
    ),
    mutant(
        "MailcanaryAbsent",
        "for removed",
        "absent(mailcanary_build_info)\n        for: 5m\n",
        "absent(mailcanary_build_info)\n",
    ),
    mutant(
        "MailSubmissionCertificateExpiring",
        "threshold 14 d -> 14 d + 1 s",
        "_seconds > 0) - time() < 14 * 86400\n",
        "_seconds > 0) - time() < 14 * 86400 + 1\n",
    ),
    mutant(
        "MailSubmissionCertificateExpiring",
        "threshold removed",
        "_seconds > 0) - time() < 14 * 86400\n",
        "_seconds > 0) - time()\n",
    ),
    mutant(
        "MailSubmissionCertificateExpiring",
        "guard against a gauge at 0 removed",
        "min by (probe) (mailcanary_smtp_certificate_expiry_timestamp_seconds > 0) - time() < 14 * 86400",
        "min by (probe) (mailcanary_smtp_certificate_expiry_timestamp_seconds) - time() < 14 * 86400",
    ),
    mutant(
        "MailSubmissionCertificateExpiringCritical",
        "threshold 3 d -> 3 d + 1 s",
        "_seconds > 0) - time() < 3 * 86400\n",
        "_seconds > 0) - time() < 3 * 86400 + 1\n",
    ),
    mutant(
        "MailSubmissionCertificateExpiringCritical",
        "threshold removed",
        "_seconds > 0) - time() < 3 * 86400\n",
        "_seconds > 0) - time()\n",
    ),
    mutant(
        "MailSubmissionCertificateExpiringCritical",
        "guard against a gauge at 0 removed",
        "min by (probe) (mailcanary_smtp_certificate_expiry_timestamp_seconds > 0) - time() < 3 * 86400",
        "min by (probe) (mailcanary_smtp_certificate_expiry_timestamp_seconds) - time() < 3 * 86400",
    ),
    mutant(
        "MailAuthenticationFailing",
        "count threshold 2 -> 1",
        "          ) >= 2\n",
        "          ) >= 1\n",
    ),
    mutant(
        "MailAuthenticationFailing",
        "count threshold removed",
        "          ) >= 2\n",
        "          )\n",
    ),
    mutant(
        "MailAuthenticationFailing",
        "share 0.1 -> 0.099",
        "> 0.1 * sum by (probe, class, method)",
        "> 0.099 * sum by (probe, class, method)",
    ),
    mutant(
        "MailAuthenticationFailing",
        "share removed",
        "\n              > 0.1 * sum by (probe, class, method) (mailcanary:auth_results_1h:canaries)\n",
        "\n",
    ),
    mutant(
        "MailAuthenticationFailing",
        "method filter removed",
        "canaries{method=~\"dkim|dmarc\", result!=\"pass\"}",
        "canaries{result!=\"pass\"}",
    ),
    mutant(
        "MailAuthenticationFailing",
        "window 1h -> 61m",
        "increase(mailcanary_auth_results_total[1h])",
        "increase(mailcanary_auth_results_total[61m])",
    ),
    mutant(
        "MailAuthenticationFailing",
        "first-count window 1h -> 61m",
        "mailcanary_auth_results_total[24h] offset 1h)",
        "mailcanary_auth_results_total[24h] offset 61m)",
    ),
    mutant(
        "MailClassJudgedSpam",
        "threshold removed",
        "{verdict=\"spam\"}) > 0",
        "{verdict=\"spam\"})",
    ),
    mutant(
        "MailClassJudgedSpam",
        "ham counted too",
        "canaries{verdict=\"spam\"}",
        "canaries",
    ),
    mutant(
        "MailClassJudgedSpam",
        "window 1h -> 61m",
        "increase(mailcanary_spam_verdicts_total[1h])",
        "increase(mailcanary_spam_verdicts_total[61m])",
    ),
    mutant(
        "MailClassJudgedSpam",
        "first-count window 1h -> 61m",
        "mailcanary_spam_verdicts_total[24h] offset 1h)",
        "mailcanary_spam_verdicts_total[24h] offset 61m)",
    ),
];

/// Writes `rules` and a copy of the unit tests pointing at it into `dir`, runs promtool on them.
fn promtool_test_copy(dir: &Path, rules: &str) -> std::process::Output {
    let tests = std::fs::read_to_string(root().join("alerts/tests/mailcanary.test.yml")).unwrap();
    let shipped = "rule_files:\n  - ../mailcanary.rules.yml\n";
    assert_eq!(
        tests.matches(shipped).count(),
        1,
        "rule_files changed shape"
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("mailcanary.rules.yml"), rules).unwrap();
    std::fs::write(
        dir.join("mailcanary.test.yml"),
        tests.replace(shipped, "rule_files:\n  - mailcanary.rules.yml\n"),
    )
    .unwrap();
    Command::new("promtool")
        .args(["test", "rules", "mailcanary.test.yml"])
        .current_dir(dir)
        .output()
        .expect("promtool is installed (scripts/mailstack install --all)")
}

/// The quiet cases ("test name @ eval time") in which promtool reports `alert` firing.
fn quiet_cases_that_fired(promtool_output: &str, alert: &str) -> Vec<String> {
    let head = format!("alertname: {alert}, time: ");
    let mut name = "";
    let mut fired = Vec::new();
    let lines: Vec<&str> = promtool_output.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(n) = line.strip_prefix("name: ") {
            name = n.trim_end_matches(',');
        } else if let Some(time) = line.strip_prefix(&head)
            && lines.get(i + 1) == Some(&"exp:[],")
        {
            fired.push(format!("{name} @ {}", time.trim_end_matches([',', ' '])));
        }
    }
    fired
}

#[test]
fn loosening_any_alert_makes_one_of_its_quiet_cases_fire() {
    let rules = std::fs::read_to_string(root().join("alerts/mailcanary.rules.yml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    let out = promtool_test_copy(&tmp.path().join("unmutated"), &rules);
    assert!(
        out.status.success(),
        "the unmutated copy passes: {}",
        output_text(&out)
    );

    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for alert in &alerts {
        assert!(
            MUTANTS.iter().any(|m| m.alert == *alert),
            "{alert} has no mutant"
        );
    }
    let mut survivors = Vec::new();
    for (i, m) in MUTANTS.iter().enumerate() {
        assert!(alerts.contains(&m.alert), "{} is not an alert", m.alert);
        assert_eq!(
            rules.matches(m.from).count(),
            1,
            "{} ({}): the rule changed shape, {:?} is not in it once",
            m.alert,
            m.what,
            m.from
        );
        let mutated = rules.replacen(m.from, m.to, 1);
        let out = promtool_test_copy(&tmp.path().join(format!("mutant-{i}")), &mutated);
        let text = output_text(&out);
        let fired = quiet_cases_that_fired(&text, m.alert);
        eprintln!(
            "{} ({}): fires in the quiet case at {fired:?}",
            m.alert, m.what
        );
        if out.status.success() || fired.is_empty() {
            survivors.push(format!(
                "{} ({}): exit {:?}, {text}",
                m.alert,
                m.what,
                out.status.code()
            ));
        }
    }
    assert!(
        survivors.is_empty(),
        "mutants no quiet case caught:\n{}",
        survivors.join("\n")
    );
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn json(port: u16, path: &str) -> Value {
    let (status, body) = http_get(port, path).unwrap_or_else(|| panic!("GET {path}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Active alerts in Alertmanager named `name`, as their `class` labels.
fn paging(alertmanager: u16, name: &str) -> Vec<String> {
    let alerts = json(
        alertmanager,
        "/api/v2/alerts?active=true&silenced=false&inhibited=false",
    );
    alerts
        .as_array()
        .expect("an alert list")
        .iter()
        .filter(|a| a["labels"]["alertname"] == name && a["status"]["state"] == "active")
        .map(|a| {
            a["labels"]["class"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The shipped rules with the delay threshold scaled from minutes to seconds for the test.
fn rules_in_seconds() -> String {
    let rules = std::fs::read_to_string(root().join("alerts/mailcanary.rules.yml")).unwrap();
    let minutes = "(mailcanary_oldest_in_flight_age_seconds) > 900\n        for: 2m";
    assert!(
        rules.contains(minutes),
        "the MailDeliveryDelayed rule changed shape"
    );
    rules.replace(
        minutes,
        "(mailcanary_oldest_in_flight_age_seconds) > 5\n        for: 1s",
    )
}

#[test]
fn held_bulk_mail_pages_through_prometheus_and_alertmanager_then_resolves() {
    let stack = StackGuard(Stack::up(
        Path::new("/tmp/mailcanary-it-alerts"),
        Some(24000),
    ));
    let stack = &stack.0;
    stack.ctl("rule", &["clear"]);
    stack.ctl("rule", &["add", "/^List-Unsubscribe:/ HOLD"]);
    let user = "box03@example.test";
    empty_mailbox(stack, user);
    let work = Workdir::new(
        "it-alerts",
        &probe_section(stack, "paged", user, "MC_PROBE1_PASSWORD"),
    );
    let dir = work.dir.path();
    let agent_port = free_port();

    std::fs::write(dir.join("rules.yml"), rules_in_seconds()).unwrap();
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: blackhole\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let alertmanager = Service::start(
        "prometheus-alertmanager",
        &[
            &format!("--config.file={}", dir.join("alertmanager.yml").display()),
            &format!("--storage.path={}", dir.join("am-data").display()),
            "--cluster.listen-address=",
        ],
    );
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{}']\n\
             scrape_configs:\n  - job_name: mailcanary\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n",
            dir.join("rules.yml").display(),
            alertmanager.port
        ),
    )
    .unwrap();
    let prometheus = Service::start(
        "prometheus",
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        ],
    );

    // The canaries are sent as the agent starts; bulk is held. Threshold 5 s + 5 s.
    let agent = work.daemon_on(stack, agent_port);
    agent.wait_for(
        "the delay alert for bulk in Alertmanager",
        Duration::from_secs(10),
        || paging(alertmanager.port, "MailDeliveryDelayed").contains(&"bulk".to_string()),
    );
    let paged = paging(alertmanager.port, "MailDeliveryDelayed");
    assert_eq!(paged, vec!["bulk".to_string()], "only bulk is late");
    let bulk_in_flight = metric(
        &agent.scrape(),
        "mailcanary_in_flight{class=\"bulk\",probe=\"paged\"}",
    );
    assert_eq!(bulk_in_flight, Some(1.0));

    stack.ctl("rule", &["clear"]);
    stack.ctl("release", &[]);
    agent.wait_for("the bulk alert to resolve", Duration::from_secs(20), || {
        paging(alertmanager.port, "MailDeliveryDelayed").is_empty()
    });
    let firing = json(prometheus.port, "/api/v1/alerts");
    let still: Vec<&Value> = firing["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "MailDeliveryDelayed")
        .collect();
    assert!(still.is_empty(), "Prometheus still has {still:?}");

    dashboard_queries_run(prometheus.port);
}

/// Every PromQL query of the dashboard, with Grafana's variables filled in, executes without
/// error against the real Prometheus that scraped the agent.
fn dashboard_queries_run(prometheus: u16) {
    let text = std::fs::read_to_string(root().join("dashboards/mailcanary.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "probe"),
        "a probe variable"
    );
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has a PromQL expr")
                .to_string()
        })
        .collect();
    // The variable's own query, in PromQL terms.
    queries.push("group by (probe) (mailcanary_sent_total)".to_string());
    assert!(queries.len() >= 12, "{queries:?}");
    let mut with_data = 0;
    for q in &queries {
        let promql = q
            .replace("$probe", ".*")
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "15s");
        let answer = json(
            prometheus,
            &format!("/api/v1/query?query={}", encode(&promql)),
        );
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        if answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            with_data += 1;
        }
    }
    assert!(
        with_data * 2 >= queries.len(),
        "most panels show data ({with_data}/{})",
        queries.len()
    );
}
