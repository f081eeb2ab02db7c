//! POP3 receiver on the real stack: round trips over STLS and over POP3S that delete exactly
//! the canaries, a refused login that is counted and never printed, and a mail too large to
//! judge that is skipped and never blinds the probe.
//!
//! Mailboxes: box14 (STLS), box15 (POP3S), box17 (wrong password), box34 (a hostile mail); no
//! other test uses them.

use std::time::Duration;

use base64::Engine as _;
use mailcanary::config::{Cleanup, Credentials, Endpoint, Login, Pop3Config, Secret, TlsMode};
use mailcanary::mailbox::pop3::Pop3Mailbox;

use crate::support::*;

const CLASSES: [&str; 3] = ["interpersonal", "transactional", "bulk"];

/// How a test reaches Dovecot's POP3 service.
#[derive(Clone, Copy)]
enum Pop3Port {
    /// Plain port, then STLS.
    Stls,
    /// Implicit TLS.
    Pop3s,
}

impl Pop3Port {
    fn port(self, stack: &Stack) -> u16 {
        match self {
            Pop3Port::Stls => stack.port("MAILSTACK_POP3_PORT"),
            Pop3Port::Pop3s => stack.port("MAILSTACK_POP3S_PORT"),
        }
    }

    fn tls(self) -> TlsMode {
        match self {
            Pop3Port::Stls => TlsMode::StartTls,
            Pop3Port::Pop3s => TlsMode::Tls,
        }
    }

    fn tls_key(self) -> &'static str {
        match self {
            Pop3Port::Stls => "starttls",
            Pop3Port::Pop3s => "tls",
        }
    }
}

/// `probe_section` with its `[probe.mailbox]` replaced by a POP3 one for `user`, whose
/// password comes from `password_env`.
fn pop3_section(
    stack: &Stack,
    name: &str,
    user: &str,
    via: Pop3Port,
    password_env: &str,
) -> String {
    let section = probe_section(stack, name, user, "MC_PROBE1_PASSWORD");
    let (head, _) = section
        .split_once("  [probe.mailbox]")
        .expect("probe_section has a mailbox part");
    format!(
        r#"{head}  [probe.mailbox]
  protocol = "pop3"
  host = "127.0.0.1"
  port = {port}
  tls = "{tls}"
  username = "{user}"
  password_env = "{password_env}"
  ca_file = "{ca}"
  poll_interval = "250ms"
  timeout = "5s"
"#,
        port = via.port(stack),
        tls = via.tls_key(),
        ca = stack.get("MAILSTACK_CA_FILE"),
    )
}

/// The UIDL listing of `user`'s maildrop, read with the agent's own client (which deletes
/// nothing: `uidls` ends its session with a bare QUIT).
fn uidls(stack: &Stack, user: &str, via: Pop3Port) -> Vec<(u32, String)> {
    let config = Pop3Config {
        endpoint: Endpoint {
            host: "127.0.0.1".to_string(),
            port: via.port(stack),
            tls: via.tls(),
            tls_verify: true,
            ca_file: Some(stack.get("MAILSTACK_CA_FILE").into()),
            timeout: Duration::from_secs(5),
        },
        credentials: Credentials {
            username: user.to_string(),
            login: Login::Password(Secret::new(stack.get("MAILSTACK_TEST_PASSWORD"))),
        },
        poll_interval: Duration::from_millis(250),
        cleanup: Cleanup::Keep,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut mailbox = Pop3Mailbox::new(config).expect("POP3 adapter");
        mailbox.uidls().await.expect("UIDL listing")
    })
}

/// Sends a canary of every class to `user` and reads it back over POP3 via `via`, with an
/// ordinary mail in the same box; checks the measurements and that only canaries were deleted.
fn round_trip(user: &str, name: &str, via: Pop3Port) {
    let stack = Stack::shared();
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let (_, before) = place_ordinary_mail(stack, user, name);
    // `empty_mailbox` deletes files behind Dovecot's back, and its index may list them until
    // it next rescans the Maildir: wait until POP3 shows just the ordinary mail.
    let mut uidls_before = Vec::new();
    let settled = poll_until(Duration::from_secs(10), &mut || {
        uidls_before = uidls(stack, user, via);
        uidls_before.len() == 1
    });
    assert!(settled, "not just one ordinary mail: {uidls_before:?}");

    let section = pop3_section(stack, name, user, via, "MAILSTACK_TEST_PASSWORD");
    let work = Workdir::new(&format!("it-{name}"), &section);
    let text = work.once(stack, "30s");
    for class in CLASSES {
        let labels = format!("class=\"{class}\",probe=\"{name}\"");
        let delivered = format!("mailcanary_delivered_total{{{labels},folder=\"INBOX\"}}");
        assert_eq!(metric(&text, &delivered), Some(1.0), "{text}");
        let count = format!("mailcanary_delivery_delay_seconds_count{{{labels}}}");
        assert_eq!(metric(&text, &count), Some(1.0), "{text}");
        let in_flight = format!("mailcanary_in_flight{{{labels}}}");
        assert_eq!(metric(&text, &in_flight), Some(0.0), "{text}");
    }
    let up = format!("mailcanary_mailbox_up{{probe=\"{name}\",protocol=\"pop3\"}}");
    assert_eq!(metric(&text, &up), Some(1.0), "{text}");

    assert_untouched(&maildir, name, &before);
    assert_eq!(
        uidls(stack, user, via),
        uidls_before,
        "the ordinary mail's UIDL changed, or mail is left over"
    );
}

#[test]
fn round_trip_over_pop3_with_stls_deletes_only_canaries() {
    round_trip("box14@example.test", "pop3-stls", Pop3Port::Stls);
}

#[test]
fn round_trip_over_pop3s_deletes_only_canaries() {
    round_trip("box15@example.test", "pop3s", Pop3Port::Pop3s);
}

#[test]
fn wrong_pop3_password_is_an_auth_failure_and_never_printed() {
    let stack = Stack::shared();
    let user = "box17@example.test";
    empty_mailbox(stack, user);
    let wrong = "not-the-password"; // what `Workdir::command` puts in MC_WRONG_PASSWORD
    // The AUTH PLAIN line carries the password in base64; that must not leak either.
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{wrong}"));
    let section = pop3_section(
        stack,
        "pop3-badpw",
        user,
        Pop3Port::Stls,
        "MC_WRONG_PASSWORD",
    );
    let section = with_probe_keys(&section, "classes = [\"interpersonal\"]");
    let work = Workdir::new("it-pop3-badpw", &section);
    let leaks = |out: &std::process::Output| {
        let all = output_text(out);
        all.contains(wrong) || all.contains(&plain)
    };

    let check = work.run(stack, &["check"]);
    assert_eq!(check.status.code(), Some(2), "{}", output_text(&check));
    let port = Pop3Port::Stls.port(stack);
    let stdout = String::from_utf8_lossy(&check.stdout);
    let line = format!("probe pop3-badpw pop3 127.0.0.1:{port}: FAILED auth");
    assert!(stdout.contains(&line), "{stdout}");
    assert!(!leaks(&check), "password printed:\n{}", output_text(&check));

    let textfile = work.dir.path().join("mailcanary.prom");
    let textfile_arg = textfile.to_str().expect("utf-8 path");
    let out = work.run(stack, &["once", "--wait", "2s", "--textfile", textfile_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(!leaks(&out), "password printed:\n{}", output_text(&out));
    let text = std::fs::read_to_string(&textfile).expect("textfile written");
    let errors = "mailcanary_mailbox_errors_total{probe=\"pop3-badpw\",stage=\"auth\"}";
    let auth_errors = metric(&text, errors).unwrap_or(0.0);
    assert!(auth_errors >= 1.0, "{text}");
    let up = "mailcanary_mailbox_up{probe=\"pop3-badpw\",protocol=\"pop3\"}";
    assert_eq!(metric(&text, up), Some(0.0), "{text}");
    assert!(!text.contains(wrong), "password in the textfile");
}

/// Issue 11: a mail with a 1.4 MiB header block (22,000 short `X-Pad-N:` lines) in the watched
/// POP3 box. Dovecot sends it whole for `TOP n 128` (no output limit applies); the agent reads
/// past it, skips it as unreadable (its head is over the 64 KiB bound), counts it once and
/// leaves it in place, and canaries are delivered as if it were not there, also in a second
/// run that restores what the first one judged.
///
/// Mailbox: box34; no other test uses it.
#[test]
fn a_mail_with_a_huge_head_is_skipped_once_and_never_blinds_the_probe() {
    let stack = Stack::shared();
    let user = "box34@example.test";
    let name = "pop3-hostile";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let value = "x".repeat(52);
    let pad: String = (0..22_000)
        .map(|n| format!("X-Pad-{n}: {value}\r\n"))
        .collect();
    let hostile = format!(
        "From: stranger@example.org\r\nTo: {user}\r\nMessage-ID: <huge-head-{name}@example.org>\r\n\
         {pad}Subject: padded\r\n\r\nNothing here.\r\n"
    );
    assert!(hostile.len() > 1_400_000, "{} bytes", hostile.len());
    let path = maildir.join("new/1795000000.M1P1.hostile");
    std::fs::write(&path, &hostile).expect("write the hostile mail");
    use std::os::unix::fs::MetadataExt as _;
    let vmail = std::fs::metadata(&maildir).expect("the Maildir");
    std::os::unix::fs::chown(&path, Some(vmail.uid()), Some(vmail.gid())).expect("chown");
    // `empty_mailbox` deletes files behind Dovecot's back: wait until POP3 shows just this one.
    let mut listed = Vec::new();
    let settled = poll_until(Duration::from_secs(10), &mut || {
        listed = uidls(stack, user, Pop3Port::Stls);
        listed.len() == 1
    });
    assert!(settled, "not just the hostile mail: {listed:?}");

    let section = pop3_section(stack, name, user, Pop3Port::Stls, "MAILSTACK_TEST_PASSWORD");
    let work = Workdir::new("it-pop3-hostile", &section);
    for run in 1..=2 {
        let text = work.once(stack, "30s");
        for class in CLASSES {
            let labels = format!("class=\"{class}\",probe=\"{name}\"");
            let delivered = format!("mailcanary_delivered_total{{{labels},folder=\"INBOX\"}}");
            assert_eq!(
                metric(&text, &delivered),
                Some(f64::from(run)),
                "run {run}: {text}"
            );
            let delay = format!("mailcanary_last_delivery_delay_seconds{{{labels}}}");
            let delay = metric(&text, &delay).expect("a last delay");
            assert!(delay < 5.0, "run {run}: {class} took {delay} s");
        }
        let up = format!("mailcanary_mailbox_up{{probe=\"{name}\",protocol=\"pop3\"}}");
        assert_eq!(metric(&text, &up), Some(1.0), "run {run}: {text}");
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mailcanary_mailbox_errors_total{"))
            .filter(|l| l.contains(&format!("probe=\"{name}\"")) && !l.ends_with(" 0"))
            .collect();
        assert!(errors.is_empty(), "run {run}: {errors:?}");
        let skipped = format!("mailcanary_mails_skipped_total{{probe=\"{name}\"}}");
        assert_eq!(metric(&text, &skipped), Some(1.0), "run {run}: {text}");
    }

    let left: Vec<_> = mail_files(&maildir)
        .into_iter()
        .filter(|(_, text)| text.contains("X-Mailcanary") || text.contains("huge-head-"))
        .collect();
    assert_eq!(left.len(), 1, "canaries left, or the hostile mail gone");
    assert_eq!(left[0].1, hostile, "the hostile mail changed");
    assert_eq!(
        uidls(stack, user, Pop3Port::Stls),
        listed,
        "its UIDL changed"
    );
}
