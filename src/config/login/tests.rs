use std::path::Path;

use crate::config::{Config, Grant, Login, MailboxConfig, SaslMechanism, TokenSource};

/// A probe whose mailbox section gets `mailbox` (and `[defaults.mailbox]` gets `defaults`).
fn config(mailbox: &str, defaults: &str) -> String {
    format!(
        r#"
[agent]
id = "agent-1"

[defaults.mailbox]
{defaults}

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
{mailbox}
"#
    )
}

fn parse(text: &str) -> Result<Config, String> {
    // SAFETY: tests that read these variables only ever set them to the same values.
    unsafe {
        std::env::set_var("MC_LOGIN_TEST_SECRET", "client-secret");
        std::env::set_var("MC_LOGIN_TEST_PASSWORD", "pw");
    }
    Config::parse(Path::new("/etc/mc/probes.toml"), text).map_err(|e| e.to_string())
}

fn login(c: &Config) -> &Login {
    let MailboxConfig::Imap(imap) = &c.probes[0].mailbox else {
        panic!("imap expected")
    };
    &imap.credentials.login
}

const CLIENT_CREDENTIALS: &str = r#"  oauth2 = { token_url = "https://login.example/t/oauth2/v2.0/token", client_id = "app", client_secret_env = "MC_LOGIN_TEST_SECRET", scope = "https://outlook.office365.com/.default" }"#;

#[test]
fn an_oauth2_source_defaults_to_xoauth2_and_client_credentials() {
    let c = parse(&config(CLIENT_CREDENTIALS, "")).unwrap();
    let Login::Token { mechanism, source } = login(&c) else {
        panic!("token login expected")
    };
    assert_eq!(*mechanism, SaslMechanism::Xoauth2);
    let TokenSource::OAuth2(o) = source else {
        panic!("oauth2 expected")
    };
    assert_eq!(o.grant, Grant::ClientCredentials);
    assert_eq!(o.client_secret.as_ref().unwrap().expose(), "client-secret");
    assert_eq!(
        o.scope.as_deref(),
        Some("https://outlook.office365.com/.default")
    );
    assert!(
        !format!("{c:?}").contains("client-secret"),
        "secrets never print"
    );
}

#[test]
fn a_refresh_token_grant_reads_its_file_and_a_token_command_is_taken_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh");
    std::fs::write(&file, "r1\n").unwrap();
    let section = format!(
        "  mechanism = \"oauthbearer\"\n  oauth2 = {{ token_url = \"http://127.0.0.1:9/token\", client_id = \"app\", refresh_token_file = \"{}\" }}",
        file.display()
    );
    let c = parse(&config(&section, "")).unwrap();
    let Login::Token {
        mechanism,
        source: TokenSource::OAuth2(o),
    } = login(&c)
    else {
        panic!("oauth2 expected")
    };
    assert_eq!(*mechanism, SaslMechanism::OAuthBearer);
    assert_eq!(o.grant, Grant::RefreshToken { file });
    let c = parse(&config(
        r#"  token_command = ["/usr/local/bin/mail-token", "--account", "canary"]"#,
        "",
    ))
    .unwrap();
    let Login::Token {
        source: TokenSource::Command(argv),
        ..
    } = login(&c)
    else {
        panic!("command expected")
    };
    assert_eq!(argv, &["/usr/local/bin/mail-token", "--account", "canary"]);
}

#[test]
fn a_password_and_a_token_source_together_are_refused_naming_both_keys() {
    let section = format!("  password_env = \"MC_LOGIN_TEST_PASSWORD\"\n{CLIENT_CREDENTIALS}");
    let e = parse(&config(&section, "")).unwrap_err();
    assert!(e.starts_with("/etc/mc/probes.toml:"), "{e}");
    assert!(
        e.contains("probe.p1.mailbox.password_env and probe.p1.mailbox.oauth2 are both set"),
        "{e}"
    );
    let section = "  password_env = \"MC_LOGIN_TEST_PASSWORD\"\n  token_command = [\"x\"]";
    let e = parse(&config(section, "")).unwrap_err();
    assert!(
        e.contains("password_env and probe.p1.mailbox.token_command"),
        "{e}"
    );
}

#[test]
fn token_source_mistakes_are_named() {
    let cases = [
        (
            "  mechanism = \"xoauth2\"\n  password_env = \"MC_LOGIN_TEST_PASSWORD\"",
            "mailbox.mechanism: a mechanism needs a token source",
        ),
        (
            "  mechanism = \"plain\"\n  token_command = [\"x\"]",
            "unknown mechanism \"plain\"",
        ),
        (
            "  token_command = []",
            "mailbox.token_command: needs the command to run",
        ),
        (
            "  oauth2 = { client_id = \"a\", client_secret_env = \"MC_LOGIN_TEST_SECRET\" }",
            "needs token_url",
        ),
        (
            "  oauth2 = { token_url = \"http://login.example/token\", client_id = \"a\", client_secret_env = \"MC_LOGIN_TEST_SECRET\" }",
            "must be https://",
        ),
        (
            "  oauth2 = { token_url = \"https://i/t\", client_id = \"a\" }",
            "client_secret_env",
        ),
        (
            "  oauth2 = { token_url = \"https://i/t\", client_id = \"a\", grant = \"refresh_token\" }",
            "needs refresh_token_file",
        ),
        (
            "  oauth2 = { token_url = \"https://i/t\", client_id = \"a\", grant = \"password\" }",
            "unknown grant \"password\"",
        ),
        (
            "  oauth2 = { token_url = \"https://i/t\", client_id = \"a\", refresh_token_file = \"/nonexistent/rt\" }",
            "cannot read /nonexistent/rt",
        ),
        (
            "  oauth2 = { token_url = \"https://i/t\", client_id = \"a\", client_secret_env = \"MC_LOGIN_TEST_UNSET\" }",
            "MC_LOGIN_TEST_UNSET is not set",
        ),
        (
            "  oauth2 = { token_url = \"https://i/t\", client_id = \"a\", secret = \"x\" }",
            "unknown field `secret`",
        ),
        (
            "  oauth2 = { token_url = \"https://i/t\", client_id = \"a\" }\n  token_command = [\"x\"]",
            "set only one token source",
        ),
    ];
    for (section, expected) in cases {
        let e = parse(&config(section, "")).unwrap_err();
        assert!(e.contains(expected), "{section}: {e}");
        assert!(e.starts_with("/etc/mc/probes.toml:"), "{e}");
    }
}

#[test]
fn a_probe_naming_any_login_source_replaces_the_defaults_whole() {
    let defaults = "mechanism = \"oauthbearer\"\ntoken_command = [\"default-token\"]";
    let c = parse(&config("", defaults)).unwrap();
    let Login::Token { mechanism, .. } = login(&c) else {
        panic!("inherited token login expected")
    };
    assert_eq!(*mechanism, SaslMechanism::OAuthBearer);
    let c = parse(&config(
        "  password_env = \"MC_LOGIN_TEST_PASSWORD\"",
        defaults,
    ))
    .unwrap();
    assert_eq!(login(&c).password().unwrap().expose(), "pw");
}
