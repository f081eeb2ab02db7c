//! Reloading the config of a running daemon (issue 15): `SIGHUP`, and `POST /-/reload` with
//! `--web.enable-lifecycle`. Probes are added, kept and removed without any probe losing its
//! books or its canaries in flight.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// A probe sending as probe1 to probe2's mailbox, read over IMAP: its canaries are delivered.
fn delivering(stack: &Stack, name: &str) -> String {
    probe_section(stack, name, "probe2@example.test", "MC_PROBE1_PASSWORD").replace(
        "password_env = \"MAILSTACK_TEST_PASSWORD\"",
        "password_env = \"MC_PROBE2_PASSWORD\"",
    )
}

/// A probe sending to probe2's mailbox but reading an empty Maildir of its own: its canaries
/// stay in flight (for `lost_after`, an hour by default), so a test can see whether a reload
/// keeps them.
fn never_receiving(stack: &Stack, name: &str, maildir: &Path) -> String {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("an empty Maildir");
    }
    let section = delivering(stack, name);
    let (sending, _imap) = section
        .split_once("  [probe.mailbox]")
        .expect("probe_section has a mailbox part");
    format!(
        "{sending}  [probe.mailbox]\n  protocol = \"maildir\"\n  path = \"{}\"\n  \
         poll_interval = \"250ms\"\n",
        maildir.display()
    )
}

/// The ids in the in-flight table of `/probe/NAME`, sorted.
fn in_flight_ids(daemon: &Daemon, probe: &str) -> Vec<String> {
    let (code, page) = http_get(daemon.port, &format!("/probe/{probe}")).expect("probe page");
    assert_eq!(code, 200, "{page}");
    let mut ids: Vec<String> = rows_with(table(&page, "in-flight"), "<td>")
        .iter()
        .filter_map(|row| row.split("<td>").nth(1)?.split("</td>").next())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// The probe names `/api/status` lists.
fn probe_names(daemon: &Daemon) -> Vec<String> {
    api_status(daemon)["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect()
}

/// Sends `method` to `path` with an empty body; the status code and body.
fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_string())
}

#[test]
fn sighup_adds_and_removes_probes_and_the_kept_ones_keep_their_canaries_and_counters() {
    let stack = Stack::shared();
    let spare = tempfile::tempdir().expect("tempdir");
    let kept = never_receiving(stack, "reload-kept", &spare.path().join("Maildir"));
    let work = Workdir::new(
        "it-reload",
        &(kept.clone() + &delivering(stack, "reload-removed")),
    );
    let daemon = work.daemon_with(stack, &["--web.enable-lifecycle"]);
    let sent = |probe: &str| probe_total(&daemon.scrape(), "mailcanary_sent_total", probe);
    let delivered =
        |probe: &str| probe_total(&daemon.scrape(), "mailcanary_delivered_total", probe);
    daemon.wait_for(
        "every class of both probes sent and delivered",
        Duration::from_secs(30),
        || sent("reload-kept") >= 3.0 && delivered("reload-removed") >= 3.0,
    );
    let canaries = in_flight_ids(&daemon, "reload-kept");
    assert_eq!(canaries.len(), 3, "one canary of each class in flight");

    // One removed, one added, one kept as it was.
    work.rewrite("it-reload", &(kept + &delivering(stack, "reload-added")));
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    daemon.wait_for("the new config applied", Duration::from_secs(30), || {
        probe_names(&daemon) == ["reload-kept", "reload-added"]
    });
    daemon.wait_for("the added probe delivered", Duration::from_secs(30), || {
        delivered("reload-added") >= 3.0
    });
    let log = daemon.log_text();
    assert!(
        log.contains("config reloaded")
            && log.contains("added reload-added; removed reload-removed"),
        "{log}"
    );
    // The kept probe: the same canaries in flight, its counters continued, and no extra round
    // (its interval is an hour: the reload keeps its place in the schedule).
    assert_eq!(in_flight_ids(&daemon, "reload-kept"), canaries);
    assert_eq!(sent("reload-kept"), 3.0, "{}", daemon.scrape());
    assert!(
        !daemon.scrape().contains("probe=\"reload-removed\""),
        "a removed probe is no longer reported"
    );

    // A config that does not load changes nothing, and says where it is wrong.
    let good = std::fs::read_to_string(work.config()).expect("config");
    std::fs::write(work.config(), format!("{good}\n[[probe]]\nname = 7\n")).expect("write");
    let (code, body) = request(daemon.port, "POST", "/-/reload");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("probes.toml:"), "names file:line: {body}");
    assert_eq!(probe_names(&daemon), ["reload-kept", "reload-added"]);
    assert_eq!(in_flight_ids(&daemon, "reload-kept"), canaries);
    // Put right, the same request applies it (nothing changed: no probe restarts sending).
    std::fs::write(work.config(), &good).expect("write");
    let (code, body) = request(daemon.port, "POST", "/-/reload");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.trim(), "2 probes");
    let (code, _) = request(daemon.port, "GET", "/-/reload");
    assert_eq!(code, 405);
    assert_eq!(sent("reload-kept"), 3.0);

    // The removed probe's books stayed in the store.
    let mut daemon = daemon;
    assert!(daemon.terminate().success());
    let status = output_text(&work.run(stack, &["status"]));
    assert!(
        status.lines().any(|l| l.starts_with("reload-removed ")),
        "{status}"
    );
}

#[test]
fn the_reload_endpoint_is_refused_without_the_lifecycle_flag() {
    let stack = Stack::shared();
    let spare = tempfile::tempdir().expect("tempdir");
    let work = Workdir::new(
        "it-reload-off",
        &never_receiving(stack, "reload-off", &spare.path().join("Maildir")),
    );
    let daemon = work.daemon(stack);
    let (code, body) = request(daemon.port, "POST", "/-/reload");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--web.enable-lifecycle"), "{body}");
    assert!(!daemon.log_text().contains("reloading the config"));
}
