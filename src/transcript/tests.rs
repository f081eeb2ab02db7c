use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

const PASSWORD: &str = "s3cret-Pa55";

/// Every form the password could leak in: as is, and base64 of SASL PLAIN and of itself.
fn leaked(lines: &[String]) -> Option<&String> {
    let forms = [
        PASSWORD.to_string(),
        BASE64.encode(format!("\0u@example.test\0{PASSWORD}")),
        BASE64.encode(PASSWORD),
        BASE64.encode(format!(
            "user=u@example.test\x01auth=Bearer {PASSWORD}\x01\x01"
        )),
    ];
    lines
        .iter()
        .find(|l| forms.iter().any(|f| l.contains(f.as_str())))
}

#[test]
fn login_commands_are_redacted_in_every_protocol() {
    let plain = BASE64.encode(format!("\0u@example.test\0{PASSWORD}"));
    let cases = [
        (
            format!("a1 LOGIN u@example.test \"{PASSWORD}\""),
            "a1 LOGIN u@example.test <redacted>".to_string(),
        ),
        (
            format!("a1 login \"u s\\\"er\" {PASSWORD}"),
            "a1 login \"u s\\\"er\" <redacted>".to_string(),
        ),
        (
            format!("a2 AUTHENTICATE PLAIN {plain}"),
            "a2 AUTHENTICATE PLAIN <redacted>".to_string(),
        ),
        (
            format!("AUTH PLAIN {plain}"),
            "AUTH PLAIN <redacted>".to_string(),
        ),
        (
            format!("AUTH XOAUTH2 {plain}"),
            "AUTH XOAUTH2 <redacted>".to_string(),
        ),
        (format!("PASS {PASSWORD}"), "PASS <redacted>".to_string()),
        (format!("pass {PASSWORD}"), "pass <redacted>".to_string()),
        (
            format!("a1 LOGIN {{11}} {PASSWORD}"),
            "a1 LOGIN <redacted>".to_string(),
        ),
    ];
    let mut t = Transcript::default();
    for (line, shown) in &cases {
        assert_eq!(redact(line), Redaction::Redacted(shown.clone()), "{line}");
        t.client(line);
    }
    assert_eq!(
        redact("a3 AUTHENTICATE XOAUTH2"),
        Redaction::Safe("a3 AUTHENTICATE XOAUTH2")
    );
    assert_eq!(
        redact("USER u@example.test"),
        Redaction::Safe("USER u@example.test")
    );
    assert_eq!(
        redact("MAIL FROM:<a@b>"),
        Redaction::Plain("MAIL FROM:<a@b>")
    );
    assert_eq!(
        redact("a4 SELECT INBOX"),
        Redaction::Plain("a4 SELECT INBOX")
    );
    let lines = t.lines();
    assert_eq!(lines.len(), cases.len());
    assert_eq!(leaked(&lines), None, "{lines:#?}");
}

#[test]
fn lines_are_cut_made_printable_and_the_oldest_dropped() {
    let mut t = Transcript::default();
    t.server("535 <script>\x07\x1b[31m");
    assert_eq!(t.lines(), ["S: 535 <script>\\x07\\x1b[31m"]);
    t.server(&"x".repeat(1024 * 1024));
    let lines = t.lines();
    assert!(lines[1].len() < MAX_LINE + 64, "{}", lines[1].len());
    assert!(lines[1].ends_with(&format!(
        " …[{} more bytes not kept]",
        1024 * 1024 - MAX_LINE
    )));
    for i in 0..200 {
        t.client(&format!("a{i} NOOP"));
    }
    let lines = t.lines();
    assert_eq!(lines.len(), MAX_LINES + 1);
    assert_eq!(
        lines[0],
        format!("-- {} earlier lines not kept", 202 - MAX_LINES)
    );
    assert_eq!(lines.last().unwrap(), "C: a199 NOOP");
    for _ in 0..100 {
        t.server(&"y".repeat(600));
    }
    let kept: usize = t.lines().iter().skip(1).map(String::len).sum();
    assert!(kept <= MAX_BYTES, "{kept}");
}

/// Feeds a client and a server side through a recorded in-memory pipe.
async fn dialogue(recorder: &Recorder, turns: &[(&str, &str)]) {
    let (ours, mut theirs) = tokio::io::duplex(4 * 1024 * 1024);
    let mut ours = Recorded::new(ours, recorder.clone());
    for (client, server) in turns {
        if !client.is_empty() {
            ours.write_all(client.as_bytes()).await.unwrap();
            let mut got = vec![0; client.len()];
            theirs.read_exact(&mut got).await.unwrap();
        }
        if !server.is_empty() {
            theirs.write_all(server.as_bytes()).await.unwrap();
            let mut got = vec![0; server.len()];
            ours.read_exact(&mut got).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_recorded_imap_login_never_shows_the_password() {
    let recorder = Recorder::default();
    let ir = BASE64.encode(format!(
        "user=u@example.test\x01auth=Bearer {PASSWORD}\x01\x01"
    ));
    let literal = format!("{PASSWORD}\r\n");
    let continuation = format!("{}\r\n", BASE64.encode(PASSWORD));
    {
        let _hidden = recorder.conceal();
        dialogue(
            &recorder,
            &[
                ("", "* OK [CAPABILITY IMAP4rev1 SASL-IR] ready\r\n"),
                (
                    &format!("a1 LOGIN u@example.test \"{PASSWORD}\"\r\n"),
                    "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
                ),
                ("a2 LOGIN u@example.test {11}\r\n", "+ go on\r\n"),
                (&literal, "a2 NO no\r\n"),
                (
                    &format!("a3 AUTHENTICATE XOAUTH2 {ir}\r\n"),
                    "+ eyJzdGF0dXMiOiI0MDEifQ==\r\n",
                ),
                ("\r\n", "a3 NO [AUTHENTICATIONFAILED] bad token\r\n"),
                ("a4 AUTHENTICATE PLAIN\r\n", "+ \r\n"),
                (&continuation, "a4 NO bad\r\n"),
            ],
        )
        .await;
    }
    let lines = recorder.take();
    assert_eq!(leaked(&lines), None, "{lines:#?}");
    assert!(
        lines.contains(&"C: a1 LOGIN u@example.test <redacted>".to_string()),
        "{lines:#?}"
    );
    assert!(lines.contains(&"S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.".to_string()));
    assert!(lines.contains(&"C: a3 AUTHENTICATE XOAUTH2 <redacted>".to_string()));
    assert!(
        lines.contains(&"C: a4 AUTHENTICATE PLAIN".to_string()),
        "{lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "C: <redacted>").count(),
        3,
        "{lines:#?}"
    );
    assert!(recorder.take().is_empty(), "taking starts a new attempt");
}

#[tokio::test]
async fn a_recorded_stream_keeps_a_long_line_cut_and_shows_what_follows() {
    let recorder = Recorder::default();
    let long = format!("* OK {}\r\n", "z".repeat(1024 * 1024));
    dialogue(
        &recorder,
        &[
            ("a1 NOOP\r\n", &long),
            ("", "a1 OK done\r\n"),
            ("a2 LOGOUT\r\n", "* BYE"),
        ],
    )
    .await;
    let lines = recorder.take();
    assert_eq!(lines[0], "C: a1 NOOP");
    assert!(
        lines[1].starts_with("S: * OK zzz") && lines[1].len() < 600,
        "{}",
        lines[1].len()
    );
    assert_eq!(lines[2..], ["S: a1 OK done", "C: a2 LOGOUT", "S: * BYE"]);
}
