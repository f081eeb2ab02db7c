//! Probes that log in with OAuth2 tokens (issue 13), against the stack's real Postfix and
//! Dovecot, which check every token at the stack's token endpoint (a stand-in for Microsoft's
//! or Google's identity provider). The token-only user has no password, so nothing here can
//! pass on a password.
//!
//! The endpoint's knobs (expiry, failure, revocation, rotation) are global to the stack, so
//! every test that uses the endpoint holds [`IDP`] and sets the knobs it relies on.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::oauth2::post;
use crate::support::*;

/// Serialises the tests that use the stack's token endpoint.
pub static IDP: Mutex<()> = Mutex::new(());

/// Takes the endpoint and puts its knobs back to normal.
pub fn take_idp(stack: &Stack) -> MutexGuard<'static, ()> {
    let guard = IDP.lock().unwrap_or_else(|p| p.into_inner());
    for knob in ["fail?status=0", "expires_in?seconds=3600", "rotate?on=0"] {
        admin(stack, knob);
    }
    guard
}

/// `POST /admin/KNOB` on the stack's token endpoint.
fn admin(stack: &Stack, knob: &str) {
    let url = format!("{}/{knob}", stack.get("MAILSTACK_OAUTH_ADMIN_URL"));
    let (status, body) = post(&url, "");
    assert_eq!(status, 200, "{knob}: {body}");
}

/// A counter from the endpoint's `/admin/stats`.
fn stat(stack: &Stack, name: &str) -> u64 {
    let url = format!("{}/stats", stack.get("MAILSTACK_OAUTH_ADMIN_URL"));
    let (status, body) = get(&url);
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
    stats[name].as_u64().expect("a counter")
}

/// Every access token the endpoint issued so far.
fn issued(stack: &Stack) -> Vec<String> {
    let url = format!("{}/issued", stack.get("MAILSTACK_OAUTH_ADMIN_URL"));
    let (_, body) = get(&url);
    serde_json::from_str(&body).expect("a list of tokens")
}

fn get(url: &str) -> (u16, String) {
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a loopback URL with a port");
    let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    http_get(port, &path).expect("the token endpoint answers")
}

/// `oauth2 = { … }` for the stack's endpoint: client credentials, or the refresh-token grant
/// with the refresh token in `refresh_file`.
fn oauth2(stack: &Stack, refresh_file: Option<&Path>) -> String {
    let grant = match refresh_file {
        Some(file) => format!(", refresh_token_file = \"{}\"", file.display()),
        None => String::new(),
    };
    format!(
        "oauth2 = {{ token_url = \"{}\", client_id = \"{}\", client_secret_env = \
         \"MAILSTACK_OAUTH_CLIENT_SECRET\", scope = \"{}\"{grant} }}",
        stack.get("MAILSTACK_OAUTH_TOKEN_URL"),
        stack.get("MAILSTACK_OAUTH_CLIENT_ID"),
        stack.get("MAILSTACK_OAUTH_SCOPE"),
    )
}

/// A copy of the stack's refresh token in `dir` (a test may see it rotated).
fn refresh_token_copy(stack: &Stack, dir: &Path) -> std::path::PathBuf {
    let file = dir.join("refresh-token");
    std::fs::copy(stack.get("MAILSTACK_OAUTH_REFRESH_TOKEN_FILE"), &file).expect("copy");
    file
}

/// A probe sending as the token-only user with XOAUTH2 (client credentials) to itself, read
/// over IMAPS with XOAUTH2 too.
fn imap_token_probe(stack: &Stack, name: &str) -> String {
    let user = stack.get("MAILSTACK_OAUTH_USER");
    let login = oauth2(stack, None);
    format!(
        r#"
[[probe]]
name = "{name}"
from = "{user}"
to = "{user}"
jitter = "100ms"
  [probe.smtp]
  host = "127.0.0.1"
  port = {submission}
  tls = "starttls"
  username = "{user}"
  {login}
  ca_file = "{ca}"
  timeout = "10s"
  [probe.mailbox]
  protocol = "imap"
  host = "127.0.0.1"
  port = {imaps}
  tls = "tls"
  username = "{user}"
  {login}
  ca_file = "{ca}"
  folders = ["INBOX"]
  poll_interval = "250ms"
  timeout = "5s"
"#,
        submission = stack.port("MAILSTACK_SUBMISSION_PORT"),
        imaps = stack.port("MAILSTACK_IMAPS_PORT"),
        ca = stack.get("MAILSTACK_CA_FILE"),
    )
}

/// A probe sending as probe1 (password) to the token-only user, read over POP3S with
/// OAUTHBEARER and the refresh-token grant.
fn pop3_token_probe(stack: &Stack, name: &str, refresh_file: &Path) -> String {
    let user = stack.get("MAILSTACK_OAUTH_USER");
    let login = oauth2(stack, Some(refresh_file));
    format!(
        r#"
[[probe]]
name = "{name}"
from = "probe1@example.test"
to = "{user}"
jitter = "100ms"
  [probe.smtp]
  host = "127.0.0.1"
  port = {submission}
  tls = "starttls"
  username = "probe1@example.test"
  password_env = "MC_PROBE1_PASSWORD"
  ca_file = "{ca}"
  timeout = "10s"
  [probe.mailbox]
  protocol = "pop3"
  host = "127.0.0.1"
  port = {pop3s}
  tls = "tls"
  username = "{user}"
  mechanism = "oauthbearer"
  {login}
  ca_file = "{ca}"
  poll_interval = "250ms"
  timeout = "5s"
"#,
        submission = stack.port("MAILSTACK_SUBMISSION_PORT"),
        pop3s = stack.port("MAILSTACK_POP3S_PORT"),
        ca = stack.get("MAILSTACK_CA_FILE"),
    )
}

/// Every form an access token, the client secret or a refresh token could leak in.
fn secret_forms(stack: &Stack, refresh_tokens: &[String]) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let user = stack.get("MAILSTACK_OAUTH_USER");
    let mut forms = vec![stack.get("MAILSTACK_OAUTH_CLIENT_SECRET").to_string()];
    forms.extend(refresh_tokens.iter().cloned());
    for token in issued(stack) {
        forms.push(STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01")));
        forms.push(format!("Bearer {token}"));
        forms.push(token);
    }
    forms
}

#[test]
fn probes_log_in_with_tokens_over_smtp_imap_and_pop3_and_deliver_every_class() {
    let stack = Stack::shared();
    let _idp = take_idp(stack);
    let user = stack.get("MAILSTACK_OAUTH_USER").to_string();
    empty_mailbox(stack, &user);
    let dir = tempfile::tempdir().unwrap();
    let refresh = refresh_token_copy(stack, dir.path());
    let probes =
        imap_token_probe(stack, "token-imap") + &pop3_token_probe(stack, "token-pop3", &refresh);
    let work = Workdir::new("it-tokens", &probes);
    let mut logs = String::new();

    let out = work.run(stack, &["--log-level", "trace", "check"]);
    let check = output_text(&out);
    assert!(out.status.success(), "{check}");
    assert!(
        check.contains("XOAUTH2") && check.contains("OAUTHBEARER"),
        "{check}"
    );
    logs.push_str(&check);
    let textfile = work.dir.path().join("out.prom");
    let out = work.run(
        stack,
        &[
            "--log-level",
            "trace",
            "once",
            "--wait",
            "30s",
            "--textfile",
            textfile.to_str().unwrap(),
        ],
    );
    logs.push_str(&output_text(&out));
    assert!(out.status.success(), "{}", output_text(&out));
    let text = std::fs::read_to_string(&textfile).unwrap();
    for probe in ["token-imap", "token-pop3"] {
        assert_eq!(
            probe_total(&text, "mailcanary_delivered_total", probe),
            3.0,
            "{probe}\n{text}"
        );
        assert_eq!(
            probe_total(&text, "mailcanary_send_failures_total", probe),
            0.0,
            "{probe}"
        );
        assert_eq!(
            probe_total(&text, "mailcanary_mailbox_errors_total", probe),
            0.0,
            "{probe}"
        );
    }
    logs.push_str(&text);
    let out = work.run(stack, &["status"]);
    logs.push_str(&output_text(&out));
    let daemon = work.daemon(stack);
    logs.push_str(&daemon.scrape());
    logs.push_str(&http_get(daemon.port, "/").expect("status page").1);
    drop(daemon);
    logs.push_str(&std::fs::read_to_string(work.dir.path().join("daemon.log")).unwrap());

    // The same user with the stack's test password instead: Dovecot refuses it.
    let password = probes.replacen(
        &oauth2(stack, None),
        "password_env = \"MAILSTACK_TEST_PASSWORD\"",
        2,
    );
    let bad = Workdir::new("it-tokens-password", &password);
    let out = bad.run(stack, &["--log-level", "trace", "check"]);
    assert!(
        !out.status.success(),
        "a password must not open the token-only user"
    );
    assert!(
        output_text(&out).contains("FAILED auth"),
        "{}",
        output_text(&out)
    );
    logs.push_str(&output_text(&out));

    let refresh_tokens = vec![
        std::fs::read_to_string(&refresh)
            .unwrap()
            .trim()
            .to_string(),
    ];
    for form in secret_forms(stack, &refresh_tokens) {
        assert!(!logs.contains(&form), "a secret leaked: {form:?}");
    }
    assert!(
        logs.contains("new access token"),
        "the trace-level runs did fetch tokens"
    );
    empty_mailbox(stack, &user);
}

#[test]
fn an_expiring_token_is_renewed_before_use_and_a_revoked_one_recovers_without_restart() {
    let stack = Stack::shared();
    let _idp = take_idp(stack);
    let user = stack.get("MAILSTACK_OAUTH_USER").to_string();
    empty_mailbox(stack, &user);
    admin(stack, "expires_in?seconds=3");
    let probe = with_probe_keys(
        // OAUTHBEARER on both ends here (XOAUTH2 is the first test's).
        &imap_token_probe(stack, "token-expiry").replace(
            "  oauth2 = {",
            "  mechanism = \"oauthbearer\"\n  oauth2 = {",
        ),
        "interval = \"4s\"",
    );
    let work = Workdir::new("it-tokens-expiry", &probe);
    let (granted, inactive) = (stat(stack, "client_credentials"), stat(stack, "inactive"));
    let daemon = work.daemon_with(stack, &["--log-level", "debug"]);
    let delivered = || {
        probe_total(
            &daemon.scrape(),
            "mailcanary_delivered_total",
            "token-expiry",
        )
    };
    // Tokens live 3 s (used for 2.7 s); a round every 4 s opens a new submission session
    // (kept ones are closed after 2 s idle), so every round logs in after the last token expired.
    daemon.wait_for(
        "deliveries across several token lifetimes",
        Duration::from_secs(60),
        || delivered() >= 9.0 && stat(stack, "client_credentials") >= granted + 3,
    );
    let text = daemon.scrape();
    assert_eq!(
        probe_total(&text, "mailcanary_send_failures_total", "token-expiry"),
        0.0
    );
    assert_eq!(
        probe_total(&text, "mailcanary_mailbox_errors_total", "token-expiry"),
        0.0
    );
    assert_eq!(
        stat(stack, "inactive"),
        inactive,
        "no expired token was ever presented"
    );

    // Revoked, and the endpoint stops issuing: one renewal, then auth failures naming it.
    // A long-lived token in the cache first, so the revocation meets a token still in use.
    admin(stack, "expires_in?seconds=3600");
    let granted = stat(stack, "client_credentials");
    daemon.wait_for("a long-lived token", Duration::from_secs(20), || {
        stat(stack, "client_credentials") > granted
    });
    admin(stack, "fail?status=503");
    admin(stack, "revoke");
    let auth_failures = || {
        metric(
            &daemon.scrape(),
            "mailcanary_send_failures_total{class=\"interpersonal\",probe=\"token-expiry\",stage=\"auth\"}",
        )
        .unwrap_or(0.0)
    };
    daemon.wait_for("auth failures", Duration::from_secs(30), || {
        auth_failures() >= 2.0
    });
    let log = daemon.log_text();
    assert!(
        log.contains("token refused; fetching a new one and trying once more"),
        "{log}"
    );
    let url = stack.get("MAILSTACK_OAUTH_TOKEN_URL");
    assert!(
        log.lines()
            .any(|l| l.contains("canary not sent") && l.contains(url) && l.contains("HTTP 503")),
        "the runbook's line names the endpoint and its status:\n{log}"
    );
    // Issuing again: deliveries resume without a restart.
    admin(stack, "fail?status=0");
    let before = delivered();
    daemon.wait_for("deliveries resume", Duration::from_secs(30), || {
        delivered() >= before + 3.0
    });
    drop(daemon);
    admin(stack, "expires_in?seconds=3600");
    empty_mailbox(stack, &user);
}

#[test]
fn a_rotated_refresh_token_is_written_back_and_used_after_a_restart() {
    let stack = Stack::shared();
    let _idp = take_idp(stack);
    let user = stack.get("MAILSTACK_OAUTH_USER").to_string();
    empty_mailbox(stack, &user);
    admin(stack, "rotate?on=1");
    let dir = tempfile::tempdir().unwrap();
    let refresh = refresh_token_copy(stack, dir.path());
    let first = std::fs::read_to_string(&refresh).unwrap();
    let probe = with_probe_keys(
        // XOAUTH2 on POP3 here (OAUTHBEARER is the first test's).
        &pop3_token_probe(stack, "token-rotate", &refresh)
            .replace("  mechanism = \"oauthbearer\"\n", ""),
        "classes = [\"transactional\"]",
    );
    let work = Workdir::new("it-tokens-rotate", &probe);
    let text = work.once(stack, "30s");
    assert_eq!(
        probe_total(&text, "mailcanary_delivered_total", "token-rotate"),
        1.0,
        "{text}"
    );
    let second = std::fs::read_to_string(&refresh).unwrap();
    assert_ne!(second, first, "the rotated refresh token was written back");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&refresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // A restart: the old refresh token is retired at the endpoint, so only the new one works.
    let refused = stat(stack, "refused");
    let text = work.once(stack, "30s");
    assert_eq!(
        probe_total(&text, "mailcanary_delivered_total", "token-rotate"),
        2.0,
        "{text}"
    );
    assert_eq!(
        stat(stack, "refused"),
        refused,
        "no retired refresh token was presented"
    );
    admin(stack, "rotate?on=0");
    empty_mailbox(stack, &user);
}
