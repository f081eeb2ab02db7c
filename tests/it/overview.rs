//! The overview (issue 15, first part): `/api/status` and the status page judge every probe ×
//! class into one state, from the same books.

use std::time::Duration;

use crate::support::*;

/// A probe sending as probe1 (with the password in `smtp_password_env`) to probe2's mailbox.
fn probe_to_probe2(stack: &Stack, name: &str, smtp_password_env: &str) -> String {
    probe_section(stack, name, "probe2@example.test", smtp_password_env).replace(
        "password_env = \"MAILSTACK_TEST_PASSWORD\"",
        "password_env = \"MC_PROBE2_PASSWORD\"",
    )
}

/// The states of `probe`'s classes, by class.
fn states(status: &serde_json::Value, probe: &str) -> Vec<(String, String)> {
    let p = status_of(status, probe);
    p["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| {
            let class = c["class"].as_str().unwrap().to_string();
            (class, c["state"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_class_gets_one_state_from_the_books_in_the_json_and_on_the_page() {
    let stack = Stack::shared();
    let probes = probe_to_probe2(stack, "overview-ok", "MC_PROBE1_PASSWORD")
        + &probe_to_probe2(stack, "overview-failing", "MC_WRONG_PASSWORD");
    let work = Workdir::new("it-overview", &probes);
    let daemon = work.daemon(stack);
    daemon.wait_for(
        "every class of overview-ok delivered",
        Duration::from_secs(30),
        || {
            probe_total(
                &daemon.scrape(),
                "mailcanary_delivered_total",
                "overview-ok",
            ) >= 3.0
        },
    );
    daemon.wait_for(
        "the failing probe's sends failed",
        Duration::from_secs(30),
        || {
            probe_total(
                &daemon.scrape(),
                "mailcanary_send_failures_total",
                "overview-failing",
            ) >= 3.0
        },
    );
    let status = api_status(&daemon);
    assert_eq!(status["agent"], "it-overview");
    let ok = states(&status, "overview-ok");
    assert_eq!(ok.len(), 3, "{status}");
    assert!(ok.iter().all(|(_, s)| s == "ok"), "{status}");
    let failing = states(&status, "overview-failing");
    assert!(failing.iter().all(|(_, s)| s == "send_failing"), "{status}");
    let ok_probe = &status["probes"][0];
    assert_eq!(ok_probe["mailbox_up"], true);
    assert!(
        ok_probe["classes"][0]["last_delay_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(ok_probe["classes"][0]["in_flight"], 0);
    // How long the last look's steps took: a connection was opened, mail was read and removed.
    let text = daemon.scrape();
    for step in ["connect", "tls", "greeting", "login", "scan", "cleanup"] {
        let series = format!(
            "mailcanary_mailbox_step_duration_seconds{{probe=\"overview-ok\",protocol=\"imap\",step=\"{step}\"}}"
        );
        let took = metric(&text, &series).unwrap_or_else(|| panic!("no {series}"));
        assert!(took > 0.0 && took < 10.0, "{series} = {took}");
    }
    let probe_page = http_get(daemon.port, "/probe/overview-ok")
        .expect("probe page")
        .1;
    assert!(probe_page.contains("id=\"steps\"") && probe_page.contains("login (ms)"));
    // The page says the same, in words and colours.
    let page = http_get(daemon.port, "/").expect("page").1;
    assert_eq!(
        page.matches("<td class=\"ok\">ok</td>").count(),
        3,
        "{page}"
    );
    assert_eq!(
        page.matches("<td class=\"send_failing\">send_failing</td>")
            .count(),
        3,
        "{page}"
    );
}
