//! Secrets stay secret, and the HTTP endpoints can require TLS and basic auth.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::support::*;

/// `curl` against the agent; returns the HTTP status (0 when no HTTP answer).
fn curl(stack: &Stack, url: &str, user: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--max-time",
        "5",
        "--cacert",
    ])
    .arg(stack.get("MAILSTACK_CA_FILE"))
    .arg(url);
    if let Some(user) = user {
        cmd.args(["-u", user]);
    }
    let out = cmd
        .output()
        .expect("curl is installed (scripts/mailstack install --all)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn endpoints_can_require_tls_and_basic_auth() {
    let stack = Stack::shared();
    let section = with_probe_keys(
        &probe_section(stack, "guarded", "box22@example.test", "MC_PROBE1_PASSWORD"),
        "classes = [\"interpersonal\"]",
    );
    let work = Workdir::new("it-web", &section);
    let hash = bcrypt::hash("scrape-pass", 4).unwrap();
    let tls = stack.dir.join("tls");
    let web = work.dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {hash}\n",
            tls.join("server.pem").display(),
            tls.join("server.key").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let daemon = work.spawn_daemon(stack, port, &["--web.config.file", web.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{port}/metrics");
    daemon.wait_for("the HTTPS endpoint", Duration::from_secs(10), || {
        curl(stack, &url, None).0 == 401
    });
    let (status, body) = curl(stack, &url, Some("prometheus:scrape-pass"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("mailcanary_build_info"), "{body}");
    assert_eq!(curl(stack, &url, Some("prometheus:wrong")).0, 401);
    assert_eq!(curl(stack, &url, Some("intruder:scrape-pass")).0, 401);
    assert_eq!(
        curl(stack, &format!("https://127.0.0.1:{port}/-/healthy"), None).0,
        401
    );
    assert!(
        http_get(port, "/metrics").is_none_or(|(s, _)| s != 200),
        "plain HTTP must not be served"
    );

    let broken = work.dir.path().join("broken.yml");
    std::fs::write(&broken, "basic_auth_users:\n  prometheus: not-a-hash\n").unwrap();
    let out = work.run(
        stack,
        &["run", "--web.config.file", broken.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("broken.yml: basic_auth_users.prometheus: not a bcrypt hash")
    );
}

/// Every form a secret could leak in: as is, and base64 of SASL PLAIN / basic-auth strings.
fn forms(secrets: &[String], users: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for secret in secrets {
        out.push(secret.clone());
        for user in users {
            out.push(STANDARD.encode(format!("\0{user}\0{secret}")));
            out.push(STANDARD.encode(format!("{user}:{secret}")));
        }
    }
    out
}

#[test]
fn no_password_or_key_appears_in_logs_metrics_or_check_output() {
    let stack = Stack::shared();
    let user = "box23@example.test";
    empty_mailbox(stack, user);
    let pop3 = probe_section(stack, "secret-pop3", user, "MC_PROBE1_PASSWORD")
        .replace(
            &format!(
                "port = {}\n  tls = \"tls\"",
                stack.port("MAILSTACK_IMAPS_PORT")
            ),
            &format!(
                "port = {}\n  tls = \"tls\"",
                stack.port("MAILSTACK_POP3S_PORT")
            ),
        )
        .replace("protocol = \"imap\"", "protocol = \"pop3\"")
        .replace("  folders = [\"INBOX\", \"Junk\"]\n", "");
    let probes = probe_section(stack, "secret-imap", user, "MC_PROBE1_PASSWORD") + &pop3;
    let work = Workdir::new("it-secrets", &probes);
    let mut logs = String::new();

    let out = work.run(stack, &["--log-level", "trace", "once", "--wait", "20s"]);
    assert!(out.status.success(), "{}", output_text(&out));
    logs.push_str(&output_text(&out));
    let out = work.run(stack, &["--log-level", "debug", "check"]);
    logs.push_str(&output_text(&out));
    let daemon = work.daemon(stack);
    logs.push_str(&daemon.scrape());
    logs.push_str(&http_get(daemon.port, "/").expect("status page").1);
    drop(daemon);
    logs.push_str(&std::fs::read_to_string(work.dir.path().join("daemon.log")).unwrap());
    // Failures print server replies and errors and keep their transcripts for the pages: make
    // some, with a wrong password for submission, for IMAP and for POP3.
    let wrong_login = |section: String| {
        section.replace(
            "password_env = \"MAILSTACK_TEST_PASSWORD\"",
            "password_env = \"MC_WRONG_PASSWORD\"",
        )
    };
    let wrong = probe_section(stack, "secret-wrong", user, "MC_WRONG_PASSWORD")
        + &wrong_login(probe_section(
            stack,
            "secret-wrong-imap",
            user,
            "MC_PROBE1_PASSWORD",
        ))
        + &wrong_login(pop3.replace("secret-pop3", "secret-wrong-pop3"));
    let bad = Workdir::new("it-secrets-wrong", &wrong);
    let out = bad.run(stack, &["--log-level", "trace", "once", "--wait", "2s"]);
    logs.push_str(&output_text(&out));
    let out = bad.run(stack, &["--log-level", "debug", "check"]);
    logs.push_str(&output_text(&out));
    // The pages and the JSON, with the failures' transcripts the store kept.
    let daemon = bad.daemon(stack);
    let mut pages = String::new();
    for path in [
        "/",
        "/api/status",
        "/probe/secret-wrong",
        "/probe/secret-wrong-imap",
        "/probe/secret-wrong-pop3",
    ] {
        pages.push_str(&http_get(daemon.port, path).expect("a page").1);
    }
    drop(daemon);
    let imap_login = format!("LOGIN &quot;{user}&quot; &lt;redacted&gt;");
    for login in [
        "AUTH PLAIN &lt;redacted&gt;",
        imap_login.as_str(),
        "S: -ERR [AUTH] Authentication failed.",
    ] {
        assert!(
            pages.contains(login),
            "a transcript with {login:?}: {pages}"
        );
    }
    logs.push_str(&pages);

    let key = std::fs::read_to_string(work.dir.path().join("canary.key")).unwrap();
    let secrets = vec![
        stack.get("MC_PROBE1_PASSWORD").to_string(),
        stack.get("MAILSTACK_TEST_PASSWORD").to_string(),
        "not-the-password".to_string(),
        key.trim().to_string(),
    ];
    assert!(
        logs.contains("canary sent") && logs.contains("FAILED auth"),
        "the runs did happen"
    );
    for form in forms(&secrets, &["probe1@example.test", user]) {
        assert!(!logs.contains(&form), "a secret leaked: {form:?}");
    }
}
