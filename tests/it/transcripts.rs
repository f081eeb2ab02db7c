//! Failure transcripts (issue 15, second part): a failed send or mailbox check is kept with
//! what was said on the wire, shown on `/probe/NAME` and in `/api/status`, with credentials
//! redacted and a hostile server's words rendered as text.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::support::*;

/// What `Workdir::command` puts in `MC_WRONG_PASSWORD`.
const WRONG: &str = "not-the-password";

/// The `last_failures` of `probe` on `side`, newest first.
fn failures(status: &serde_json::Value, probe: &str, side: &str) -> Vec<serde_json::Value> {
    let p = status_of(status, probe);
    p["last_failures"]
        .as_array()
        .expect("last_failures")
        .iter()
        .filter(|f| f["side"] == side)
        .cloned()
        .collect()
}

fn transcript(failure: &serde_json::Value) -> Vec<String> {
    failure["transcript"]
        .as_array()
        .expect("transcript")
        .iter()
        .map(|l| l.as_str().expect("a line").to_string())
        .collect()
}

/// The wrong password and what SASL PLAIN and LOGIN would make of it.
fn secret_forms(users: &[&str]) -> Vec<String> {
    let mut forms = vec![WRONG.to_string(), STANDARD.encode(WRONG)];
    for user in users {
        forms.push(STANDARD.encode(format!("\0{user}\0{WRONG}")));
    }
    forms
}

/// Two probes: one sending with a wrong SMTP password, one reading with a wrong password.
fn refused_logins(stack: &Stack) -> String {
    // Sends with a wrong SMTP password to probe2's mailbox, which it reads as overview's do.
    let send = probe_section(
        stack,
        "transcript-send",
        "probe2@example.test",
        "MC_WRONG_PASSWORD",
    )
    .replace(
        "password_env = \"MAILSTACK_TEST_PASSWORD\"",
        "password_env = \"MC_PROBE2_PASSWORD\"",
    );
    // Reads box06 with a wrong password, as check's test does (and sends nothing there).
    let read = probe_section(
        stack,
        "transcript-read",
        "box06@example.test",
        "MC_WRONG_PASSWORD",
    )
    .replace(
        "password_env = \"MAILSTACK_TEST_PASSWORD\"",
        "password_env = \"MC_WRONG_PASSWORD\"",
    );
    send + &read
}

#[test]
fn a_refused_login_is_kept_with_its_transcript_on_the_page_and_in_the_json() {
    let stack = Stack::shared();
    let work = Workdir::new("it-transcripts", &refused_logins(stack));
    let mut daemon = work.daemon(stack);
    let limit = Duration::from_secs(30);
    daemon.wait_for("a send failure with its transcript", limit, || {
        !failures(&api_status(&daemon), "transcript-send", "smtp").is_empty()
    });
    daemon.wait_for("a mailbox failure with its transcript", limit, || {
        !failures(&api_status(&daemon), "transcript-read", "imap").is_empty()
    });
    let json = http_get(daemon.port, "/api/status").expect("status").1;
    let first: serde_json::Value = serde_json::from_str(&json).unwrap();

    let sent = &failures(&first, "transcript-send", "smtp")[0];
    assert_eq!(sent["stage"], "auth", "{sent}");
    let lines = transcript(sent);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("C: AUTH PLAIN <redacted>")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("S: 535 ")), "{lines:#?}");
    let read = &failures(&first, "transcript-read", "imap")[0];
    assert_eq!(read["stage"], "auth", "{read}");
    let lines = transcript(read);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" LOGIN \"box06@example.test\" <redacted>")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("S: ") && l.contains(" NO ")),
        "{lines:#?}"
    );

    let send_page = http_get(daemon.port, "/probe/transcript-send")
        .expect("page")
        .1;
    assert!(send_page.contains("<h2>Last failures</h2>"), "{send_page}");
    assert!(send_page.contains("S: 535 "), "{send_page}");
    assert!(
        send_page.contains("C: AUTH PLAIN &lt;redacted&gt;"),
        "{send_page}"
    );
    let read_page = http_get(daemon.port, "/probe/transcript-read")
        .expect("page")
        .1;
    assert!(
        read_page.contains("&lt;redacted&gt;") && read_page.contains(" NO "),
        "{read_page}"
    );

    // Kept in the books: after a restart they are there before any new attempt could fail.
    let before: Vec<f64> = failures(&first, "transcript-send", "smtp")
        .iter()
        .map(|f| f["at"].as_f64().unwrap())
        .collect();
    daemon.terminate();
    let log = daemon.log_text();
    let daemon = work.daemon(stack);
    let after = api_status(&daemon);
    let kept = failures(&after, "transcript-send", "smtp");
    assert!(
        kept.iter()
            .any(|f| before.contains(&f["at"].as_f64().unwrap())),
        "{before:?} {after}"
    );
    let everything = [json, send_page, read_page, log, daemon.log_text()].concat();
    for form in secret_forms(&["probe1@example.test", "box06@example.test"]) {
        assert!(!everything.contains(&form), "a secret leaked: {form:?}");
    }
}

/// A scripted IMAP server on loopback, for every connection: greets, then answers the first
/// command (the login) with a megabyte-long untagged line and a refusal carrying markup,
/// quotes and a control character, and closes.
fn hostile_imap() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = stream.write_all(b"* OK [CAPABILITY IMAP4rev1] fake ready\r\n");
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let tag = line.split(' ').next().unwrap_or("*").to_string();
            let long = format!("* OK {}\r\n", "M".repeat(1024 * 1024));
            let refusal = format!("{tag} NO <script>alert(1)</script> \"quoted\" \x07\r\n");
            let _ = stream.write_all(long.as_bytes());
            let _ = stream.write_all(refusal.as_bytes());
        }
    });
    port
}

#[test]
fn a_hostile_servers_reply_renders_as_text_and_a_long_line_is_kept_cut() {
    let stack = Stack::shared();
    let port = hostile_imap();
    let section = probe_section(
        stack,
        "transcript-hostile",
        "box06@example.test",
        "MC_WRONG_PASSWORD",
    );
    let section = via_plain_imap(stack, &section, port).replace(
        "  folders = [\"INBOX\", \"Junk\"]\n",
        "  folders = [\"INBOX\"]\n",
    );
    let section = with_probe_keys(&section, "classes = [\"interpersonal\"]");
    let work = Workdir::new("it-transcripts-hostile", &section);
    let daemon = work.daemon(stack);
    daemon.wait_for(
        "the hostile server's refusal kept",
        Duration::from_secs(30),
        || !failures(&api_status(&daemon), "transcript-hostile", "imap").is_empty(),
    );
    let now = api_status(&daemon);
    let failure = &failures(&now, "transcript-hostile", "imap")[0];
    let lines = transcript(failure);
    let long = lines
        .iter()
        .find(|l| l.starts_with("S: * OK MMM"))
        .expect("the long line");
    assert!(
        long.len() < 1024 && long.ends_with(" more bytes not kept]"),
        "{}",
        long.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" NO <script>alert(1)</script> \"quoted\" \\x07")),
        "{lines:#?}"
    );

    let url = format!("http://127.0.0.1:{}/probe/transcript-hostile", daemon.port);
    let html = http_get(daemon.port, "/probe/transcript-hostile")
        .expect("page")
        .1;
    assert!(
        html.len() < 200 * 1024,
        "the page stays small: {} bytes",
        html.len()
    );
    assert!(
        html.contains("NO &lt;script&gt;alert(1)&lt;/script&gt; &quot;quoted&quot; \\x07"),
        "{html}"
    );
    assert!(!html.contains("<script"), "no script element in the HTML");
    let dom = in_chromium(&url, "transcript-hostile");
    assert!(!dom.contains("<script"), "no script element in the DOM");
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "shown as text"
    );
}
