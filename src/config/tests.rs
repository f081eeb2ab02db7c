use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[agent]
id = "agent-1"

[[probe]]
name = "p1"
from = "a@example.test"
to = "b@example.test"
  [probe.smtp]
  host = "127.0.0.1"
  [probe.mailbox]
  protocol = "imap"
  host = "127.0.0.1"
  username = "b@example.test"
  password_env = "MC_CONFIG_TEST_PASSWORD"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    // SAFETY: tests that read this variable only ever set it to the same value.
    unsafe { std::env::set_var("MC_CONFIG_TEST_PASSWORD", "hunter2") };
    Config::parse(Path::new("/etc/mc/probes.toml"), text)
}

fn error(text: &str) -> String {
    parse(text).expect_err("config must be refused").to_string()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.agent.id, "agent-1");
    assert_eq!(c.agent.state_dir, Path::new("/etc/mc/state"));
    assert_eq!(
        c.agent.secret,
        SecretSource::File("/etc/mc/canary.key".into())
    );
    let p = &c.probes[0];
    assert_eq!(p.interval, Duration::from_secs(60));
    assert_eq!(p.lost_after, Duration::from_secs(7200));
    let names: Vec<_> = p.classes.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["interpersonal", "transactional", "bulk"]);
    assert_eq!(p.smtp.endpoint.tls, TlsMode::StartTls);
    assert_eq!(p.smtp.endpoint.port, 587);
    assert!(p.smtp.endpoint.tls_verify);
    assert!(p.smtp.credentials.is_none());
    let MailboxConfig::Imap(imap) = &p.mailbox else {
        panic!("imap expected")
    };
    assert_eq!(imap.endpoint.port, 993);
    assert_eq!(imap.endpoint.tls, TlsMode::Tls);
    assert_eq!(imap.folders, ["INBOX"]);
    assert_eq!(imap.cleanup, Cleanup::Delete);
    assert_eq!(
        imap.credentials.login.password().unwrap().expose(),
        "hunter2"
    );
    assert!(c.warnings.is_empty());
}

#[test]
fn shipped_demo_config_is_valid() {
    // SAFETY: the demo config's variables are only set by tests, to these values.
    unsafe {
        std::env::set_var("MC_PROBE1_PASSWORD", "x");
        std::env::set_var("MC_PROBE2_PASSWORD", "y");
    }
    let text = include_str!("../../probes.toml");
    let c = Config::parse(Path::new("probes.toml"), text).unwrap();
    assert_eq!(c.probes.len(), 1);
    assert_eq!(c.probes[0].classes.len(), 3);
    assert_eq!(c.probes[0].smtp.endpoint.port, 10587);
}

#[test]
fn defaults_fill_probe_sections() {
    let text = r#"
[defaults]
interval = "5m"
classes = ["bulk"]
  [defaults.smtp]
  host = "smtp.example.test"
  tls = "tls"
  timeout = "7s"
  [defaults.mailbox]
  protocol = "imap"
  host = "imap.example.test"
  username = "b@example.test"
  password_env = "MC_CONFIG_TEST_PASSWORD"

[[probe]]
name = "p1"
from = "a@example.test"
to = "b@example.test"
  [probe.smtp]
  port = 2465

[[probe]]
name = "p2"
from = "a@example.test"
to = "b@example.test"
interval = "30s"
"#;
    let c = parse(text).unwrap();
    let (p1, p2) = (&c.probes[0], &c.probes[1]);
    assert_eq!(p1.interval, Duration::from_secs(300));
    assert_eq!(p2.interval, Duration::from_secs(30));
    assert_eq!(p1.classes.len(), 1);
    assert_eq!(p1.smtp.endpoint.host, "smtp.example.test");
    assert_eq!(p1.smtp.endpoint.port, 2465);
    assert_eq!(p2.smtp.endpoint.port, 465);
    assert_eq!(p1.smtp.endpoint.timeout, Duration::from_secs(7));
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let text = MINIMAL.replace(
        "to = \"b@example.test\"",
        "to = \"b@example.test\"\nintervall = \"5s\"",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.position, Some((9, 1)), "{e}");
    let shown = e.to_string();
    assert!(shown.starts_with("/etc/mc/probes.toml:9:1: "), "{shown}");
    assert!(shown.contains("intervall"), "{shown}");
}

#[test]
fn unknown_key_in_a_nested_section_is_refused() {
    let text = MINIMAL.replace(
        "host = \"127.0.0.1\"\n  [probe.mailbox]",
        "host = \"127.0.0.1\"\n  passwrd = \"x\"\n  [probe.mailbox]",
    );
    let shown = error(&text);
    assert!(
        shown.contains(":11:3:") && shown.contains("passwrd"),
        "{shown}"
    );
}

#[test]
fn semantic_errors_point_at_the_value() {
    let cases = [
        (
            "name = \"p1\"",
            "name = \"P 1\"",
            ":6:8: probe[0].name: must match",
        ),
        (
            "to = \"b@example.test\"",
            "to = \"nobody\"",
            ":8:6: probe.p1.to: expected an address",
        ),
        (
            "  [probe.smtp]\n  host = \"127.0.0.1\"",
            "  [probe.smtp]\n  host = \"127.0.0.1\"\n  timeout = \"soon\"",
            ":11:13: probe.p1.smtp.timeout:",
        ),
        (
            "  [probe.smtp]\n  host = \"127.0.0.1\"",
            "  [probe.smtp]\n  host = \"127.0.0.1\"\n  tls = \"ssl\"",
            ":11:9: probe.p1.smtp.tls: unknown value \"ssl\"",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"imap4\"",
            "probe.p1.mailbox.protocol: unknown protocol \"imap4\"",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"imap\"\n  cleanup = \"shred\"",
            "probe.p1.mailbox.cleanup: unknown value \"shred\"",
        ),
        (
            "[agent]\nid = \"agent-1\"",
            "[agent]\nid = \"agent-1\"\n[defaults]\nclasses = [\"bulk\", \"spam\"]",
            "probe.p1.classes: unknown class \"spam\"",
        ),
        (
            "[agent]\nid = \"agent-1\"",
            "[agent]\nid = \"agent 1\"",
            ":3:6: agent.id: must match",
        ),
        (
            "[agent]\nid = \"agent-1\"",
            "[agent]\nid = \"agent-1\"\n[class.unknown]\ntemplate = \"bulk\"",
            ":4:1: class.unknown: \"unknown\" is reserved",
        ),
        (
            "to = \"b@example.test\"",
            "to = \"b@example.test\"\nclasses = [\"bulk\", \"unknown\"]",
            ":9:11: probe.p1.classes: \"unknown\" is reserved",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"imap\"\n  folders = [\"INBOX\", \"Junk\"]\n  cleanup = \"move:Junk\"",
            ":14:13: probe.p1.mailbox.cleanup: \"Junk\" is a watched folder",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"imap\"\n  cleanup = \"move:inbox\"",
            ":13:13: probe.p1.mailbox.cleanup: \"inbox\" is a watched folder",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"imap\"\n  folders = [\"INBOX\", \"Junk\"]\n  forged = \"move:Junk\"",
            ":14:12: probe.p1.mailbox.forged: \"Junk\" is a watched folder",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"imap\"\n  forged = \"delete\"",
            ":13:12: probe.p1.mailbox.forged: unknown value \"delete\"",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"pop3\"\n  forged = \"move:Quarantine\"",
            ":13:12: probe.p1.mailbox.forged: POP3 has no folders",
        ),
    ];
    for (from, to, want) in cases {
        let text = MINIMAL.replace(from, to);
        assert_ne!(text, MINIMAL, "{from:?} not in MINIMAL");
        let shown = error(&text);
        assert!(shown.contains(want), "want {want:?} in {shown:?}");
        assert!(shown.starts_with("/etc/mc/probes.toml:"), "{shown}");
    }
}

#[test]
fn wrong_type_names_the_key() {
    let text = MINIMAL.replace(
        "  host = \"127.0.0.1\"\n  [probe.mailbox]",
        "  host = \"127.0.0.1\"\n  port = \"submission\"\n  [probe.mailbox]",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("port"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(11), "{e}");
}

#[test]
fn missing_password_variable_is_named() {
    let text = MINIMAL.replace("MC_CONFIG_TEST_PASSWORD", "MC_CONFIG_TEST_UNSET_VARIABLE");
    let shown = error(&text);
    assert!(shown.contains("probe.p1.mailbox.password_env"), "{shown}");
    assert!(
        shown.contains("MC_CONFIG_TEST_UNSET_VARIABLE is not set"),
        "{shown}"
    );
}

#[test]
fn missing_sections_and_duplicates_are_refused() {
    let no_smtp = MINIMAL.replace("  [probe.smtp]\n  host = \"127.0.0.1\"\n", "");
    assert!(error(&no_smtp).contains("probe.p1.smtp: missing required key"));
    let no_probe = "[agent]\nid = \"a\"\n";
    assert!(error(no_probe).contains("no [[probe]]"));
    let twice = format!(
        "{MINIMAL}\n{}",
        &MINIMAL[MINIMAL.find("[[probe]]").unwrap()..]
    );
    assert!(error(&twice).contains("duplicate probe name \"p1\""));
}

#[test]
fn password_sources_are_exclusive_and_literal_is_warned() {
    let both = MINIMAL.replace(
        "password_env = \"MC_CONFIG_TEST_PASSWORD\"",
        "password_env = \"MC_CONFIG_TEST_PASSWORD\"\n  password = \"x\"",
    );
    assert!(error(&both).contains("set only one of"));
    let literal = MINIMAL.replace(
        "password_env = \"MC_CONFIG_TEST_PASSWORD\"",
        "password = \"s3cret\"",
    );
    let c = parse(&literal).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("probe.p1.mailbox.password"));
    assert!(!c.warnings[0].contains("s3cret"));
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must redact the password"
    );
}

#[test]
fn password_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
    let text = MINIMAL.replace(
        "password_env = \"MC_CONFIG_TEST_PASSWORD\"",
        "password_file = \"pw\"",
    );
    let c = Config::parse(&dir.path().join("probes.toml"), &text).unwrap();
    let MailboxConfig::Imap(imap) = &c.probes[0].mailbox else {
        panic!("imap expected")
    };
    assert_eq!(
        imap.credentials.login.password().unwrap().expose(),
        "from-file"
    );
    let missing = MINIMAL.replace(
        "password_env = \"MC_CONFIG_TEST_PASSWORD\"",
        "password_file = \"nope\"",
    );
    let e = Config::parse(&dir.path().join("probes.toml"), &missing).unwrap_err();
    assert!(e.to_string().contains("password_file: cannot read"), "{e}");
}

#[test]
fn tls_verify_is_off_only_when_written() {
    let text = MINIMAL.replace(
        "  [probe.smtp]\n  host = \"127.0.0.1\"",
        "  [probe.smtp]\n  host = \"127.0.0.1\"\n  tls_verify = false",
    );
    let c = parse(&text).unwrap();
    assert!(!c.probes[0].smtp.endpoint.tls_verify);
}

#[test]
fn signing_key_file_is_created_private_and_stable() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/canary.key");
    let source = SecretSource::File(path.clone());
    let first = load_signing_key(&source).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let second = load_signing_key(&source).unwrap();
    let canary = crate::canary::Canary {
        id: "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C".into(),
        probe: "p".into(),
        class: "bulk".into(),
        seq: 1,
        sent_ms: 1,
        agent: "a".into(),
    };
    assert_eq!(canary.header_value(&first), canary.header_value(&second));
    assert!(load_signing_key(&SecretSource::Env("MC_CONFIG_TEST_NO_KEY".into())).is_err());
}

const CUSTOM: &str = r#"
[class.large]
template = "interpersonal"
size = "2MiB"
lost_after = "6h"
subject = "Big attachment"
headers = { "X-Priority" = "3" }

[class.spam]
template = "bulk"
headers = { "X-Spam-Flag" = "YES" }
"#;

fn with_classes(classes_line: &str, custom: &str) -> String {
    MINIMAL
        .replace("[[probe]]", &format!("{custom}\n[[probe]]"))
        .replace(
            "to = \"b@example.test\"",
            &format!("to = \"b@example.test\"\n{classes_line}"),
        )
}

#[test]
fn custom_classes_start_from_a_template() {
    let text = with_classes(
        "classes = [\"bulk\", \"large\", \"spam\"]\nlost_after = \"1h\"\njitter = \"0s\"",
        CUSTOM,
    );
    let c = parse(&text).unwrap();
    let p = &c.probes[0];
    let names: Vec<_> = p.classes.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["bulk", "large", "spam"]);
    let large = &p.classes[1];
    assert_eq!(large.spec.template, crate::class::Template::Interpersonal);
    assert_eq!(large.spec.size, Some(2 * 1024 * 1024));
    assert_eq!(large.spec.subject.as_deref(), Some("Big attachment"));
    assert_eq!(
        large.spec.headers,
        vec![("X-Priority".to_string(), "3".to_string())]
    );
    assert_eq!(p.lost_after_for("large"), Duration::from_secs(6 * 3600));
    assert_eq!(p.lost_after_for("bulk"), Duration::from_secs(3600));
    assert_eq!(p.lost_after_for("spam"), Duration::from_secs(3600));
    assert_eq!(p.jitter, Duration::ZERO);
}

#[test]
fn custom_class_mistakes_are_named() {
    let cases = [
        (
            "template = \"interpersonal\"",
            "template = \"memo\"",
            "class.large.template: unknown template \"memo\"",
        ),
        (
            "\"X-Priority\" = \"3\"",
            "\"X-Mailcanary\" = \"v=1\"",
            "class.large.headers.X-Mailcanary: X-Mailcanary is reserved",
        ),
        (
            "\"X-Priority\" = \"3\"",
            "\"From\" = \"ceo@example.org\"",
            "class.large.headers.From: From is reserved",
        ),
        (
            "size = \"2MiB\"",
            "size = \"200MiB\"",
            "class.large.size: 209715200 bytes is outside",
        ),
        (
            "size = \"2MiB\"",
            "size = 12",
            "class.large.size: 12 bytes is outside",
        ),
        (
            "size = \"2MiB\"",
            "size = \"2 lightyears\"",
            "class.large.size: unknown size unit",
        ),
        (
            "lost_after = \"6h\"",
            "lost_after = \"soon\"",
            "class.large.lost_after:",
        ),
        (
            "[class.spam]",
            "[class.bulk]",
            "class.bulk: \"bulk\" is a built-in class",
        ),
        (
            "[class.spam]",
            "[class.Spam]",
            "class.Spam: class names must match",
        ),
        (
            "template = \"bulk\"",
            "",
            "class.spam.template: missing required key",
        ),
    ];
    for (from, to, want) in cases {
        let custom = CUSTOM.replace(from, to);
        assert_ne!(custom, CUSTOM, "{from:?}");
        let shown = error(&with_classes("classes = [\"bulk\"]", &custom));
        assert!(shown.contains(want), "want {want:?} in {shown:?}");
        assert!(shown.starts_with("/etc/mc/probes.toml:"), "{shown}");
    }
    let unknown = error(&with_classes("classes = [\"bulk\", \"huge\"]", CUSTOM));
    assert!(
        unknown.contains(
            "unknown class \"huge\"; known classes: interpersonal, transactional, bulk, large, spam"
        ),
        "{unknown}"
    );
    let both = CUSTOM.replace("\"X-Priority\" = \"3\"", "\"Subject\" = \"x\"");
    assert!(error(&with_classes("classes = [\"large\"]", &both)).contains("not both"));
    let unknown_key = CUSTOM.replace("size = \"2MiB\"", "sise = \"2MiB\"");
    assert!(error(&with_classes("classes = [\"large\"]", &unknown_key)).contains("sise"));
}

#[test]
fn agent_section_alone_needs_no_secrets_but_valid_toml() {
    let text = MINIMAL.replace("MC_CONFIG_TEST_PASSWORD", "MC_CONFIG_TEST_NEVER_SET");
    let path = Path::new("/etc/mc/probes.toml");
    assert!(Config::parse(path, &text).is_err());
    let agent = AgentConfig::parse(path, &text).unwrap();
    assert_eq!(agent.id, "agent-1");
    assert_eq!(agent.state_dir, Path::new("/etc/mc/state"));
    let typo = text.replace("id = ", "idd = ");
    assert_eq!(
        AgentConfig::parse(path, &typo).unwrap_err().to_string(),
        "/etc/mc/probes.toml:3:1: idd: unknown field `idd`, expected one of `id`, `state_dir`, `forget_after`, `secret_file`, `secret_env`"
    );
}

#[test]
fn forged_mail_is_kept_unless_a_quarantine_folder_is_named() {
    let c = parse(MINIMAL).unwrap();
    let MailboxConfig::Imap(imap) = &c.probes[0].mailbox else {
        panic!("imap expected")
    };
    assert_eq!(imap.forged, None);
    let text = MINIMAL.replace(
        "protocol = \"imap\"",
        "protocol = \"imap\"\n  forged = \"move:Quarantine\"",
    );
    let c = parse(&text).unwrap();
    let MailboxConfig::Imap(imap) = &c.probes[0].mailbox else {
        panic!("imap expected")
    };
    assert_eq!(imap.forged.as_deref(), Some("Quarantine"));
}

#[test]
fn probes_on_one_mailbox_share_it_and_must_configure_it_alike() {
    let second = |extra: &str| {
        let p2 = MINIMAL
            .split_once("[[probe]]")
            .unwrap()
            .1
            .replace("name = \"p1\"", "name = \"p2\"");
        format!("{MINIMAL}\n[[probe]]{p2}{extra}\n")
    };
    let c = parse(&second("")).unwrap();
    assert_eq!(
        c.probes[0].mailbox.identity(),
        c.probes[1].mailbox.identity()
    );
    let other_user = second("").replacen(
        "username = \"b@example.test\"",
        "username = \"c@example.test\"",
        2,
    );
    let c = parse(&other_user.replacen("c@example.test", "b@example.test", 1)).unwrap();
    assert_ne!(
        c.probes[0].mailbox.identity(),
        c.probes[1].mailbox.identity()
    );
    let e = error(&second("  cleanup = \"keep\""));
    assert!(e.contains("probe[1].mailbox"), "{e}");
    assert!(e.contains("\"p1\" and \"p2\""), "{e}");
    assert!(e.contains("same mailbox"), "{e}");
    // Another password (one of them wrong): not shared, so free to differ.
    let other_password = second("  cleanup = \"keep\"").replacen(
        "password_env = \"MC_CONFIG_TEST_PASSWORD\"",
        "password = \"another\"",
        2,
    );
    let other_password = other_password.replacen(
        "password = \"another\"",
        "password_env = \"MC_CONFIG_TEST_PASSWORD\"",
        1,
    );
    let c = parse(&other_password).unwrap();
    assert_ne!(
        c.probes[0].mailbox.share_key(),
        c.probes[1].mailbox.share_key()
    );
}

#[test]
fn a_bounce_mailbox_takes_the_mailbox_keys_and_must_agree_with_a_shared_one() {
    let with_bounces = format!(
        "{MINIMAL}  [probe.bounces]\n  protocol = \"imap\"\n  host = \"127.0.0.1\"\n  \
         username = \"a@example.test\"\n  password_env = \"MC_CONFIG_TEST_PASSWORD\"\n"
    );
    let c = parse(&with_bounces).unwrap();
    let Some(MailboxConfig::Imap(b)) = &c.probes[0].bounces else {
        panic!("an IMAP bounce mailbox expected")
    };
    assert_eq!(b.credentials.username, "a@example.test");
    assert_eq!(c.probes[0].watched().count(), 2);
    assert!(parse(MINIMAL).unwrap().probes[0].bounces.is_none());
    // The bounce mailbox is the receiving one, watched differently: refused.
    let clash = with_bounces
        .replace(
            "a@example.test\"\n  password_env",
            "b@example.test\"\n  password_env",
        )
        .replace(
            "[probe.bounces]\n",
            "[probe.bounces]\n  poll_interval = \"1s\"\n",
        );
    let e = error(&clash);
    assert!(
        e.contains("watch the same mailbox") && e.contains("poll_interval"),
        "{e}"
    );
    let typo = with_bounces.replace("protocol = \"imap\"\n  host", "protocol = \"imap\"\n  hots");
    assert!(error(&typo).contains("unknown field `hots`"));
}
