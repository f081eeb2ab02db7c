//! `mailcanary check`: is the config valid, and can every endpoint be logged in to?

mod limits;

use std::collections::HashMap;
use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use crate::config::{Config, MailboxConfig, SmtpConfig};
use crate::mailbox;
use crate::send::Submitter;

/// A mailbox's login check, awaited by every probe on that mailbox.
type MailboxCheck = Shared<BoxFuture<'static, (Duration, Result<(), Arc<anyhow::Error>>)>>;

/// Logs in to every SMTP and mailbox endpoint and prints one line each, after warnings about
/// schedules over a provider's sending limit (printed even with `no_login`: they need no
/// network). Warnings never change the exit code.
pub async fn run(config: &Config, no_login: bool) -> Result<ExitCode, super::Error> {
    println!(
        "config {}: ok ({} probes)",
        config.path.display(),
        config.probes.len()
    );
    print_sending_limit_warnings(config);
    if no_login {
        return Ok(ExitCode::SUCCESS);
    }
    // One login per distinct mailbox, as `run` holds one connection per mailbox: probes that
    // share it get its result (a thousand logins to one account at once would be refused).
    let mut mailboxes: HashMap<(String, Option<String>), MailboxCheck> = HashMap::new();
    for probe in &config.probes {
        let config = probe.mailbox.clone();
        mailboxes
            .entry(probe.mailbox.share_key())
            .or_insert_with(|| {
                async move {
                    let start = Instant::now();
                    let result = match mailbox::open(&config) {
                        Ok(mut m) => m.check_login().await.map_err(anyhow::Error::new),
                        Err(e) => Err(anyhow::Error::new(e)),
                    };
                    (start.elapsed(), result.map_err(Arc::new))
                }
                .boxed()
                .shared()
            });
    }
    let mailboxes = &mailboxes;
    let checks = config.probes.iter().map(|probe| async move {
        let smtp = async {
            let start = Instant::now();
            let result = match Submitter::new(&probe.smtp) {
                Ok(s) => s.check_login().await.map_err(anyhow::Error::new),
                Err(e) => Err(anyhow::Error::new(e)),
            };
            line(
                &probe.name,
                "smtp",
                &probe.smtp.endpoint.to_string(),
                Some(smtp_mechanism(&probe.smtp)),
                start.elapsed(),
                result,
            )
        };
        let mailbox = async {
            let (took, result) = mailboxes[&probe.mailbox.share_key()].clone().await;
            line(
                &probe.name,
                probe.mailbox.protocol(),
                &probe.mailbox.location(),
                mailbox_mechanism(&probe.mailbox),
                took,
                result,
            )
        };
        let (a, b) = tokio::join!(smtp, mailbox);
        [a, b]
    });
    let mut failed = false;
    for (text, ok) in futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
    {
        println!("{text}");
        failed |= !ok;
    }
    Ok(super::exit_code(failed))
}

/// Warns about probes whose schedule would exceed the daily sending limit of a provider
/// recognised by the SMTP host: the provider would stop the account sending for up to a day,
/// which the monitor would report as an outage of its own making. A warning, not a failure:
/// the account may have a higher limit than the documented one.
fn print_sending_limit_warnings(config: &Config) {
    for probe in &config.probes {
        let host = &probe.smtp.endpoint.host;
        if let Some(text) = limits::warning(&probe.name, host, probe.classes.len(), probe.interval)
        {
            println!("warning: {text}");
        }
    }
}

/// How the SMTP endpoint logs in, as its line names it: a token's SASL mechanism,
/// `password`, or `no auth` when no username is configured.
fn smtp_mechanism(smtp: &SmtpConfig) -> &'static str {
    smtp.credentials
        .as_ref()
        .map_or("no auth", |c| c.login.mechanism_name())
}

/// How the mailbox logs in, as its line names it; `None` for a Maildir, which has no login.
fn mailbox_mechanism(mailbox: &MailboxConfig) -> Option<&'static str> {
    match mailbox {
        MailboxConfig::Imap(imap) => Some(imap.credentials.login.mechanism_name()),
        MailboxConfig::Pop3(pop3) => Some(pop3.credentials.login.mechanism_name()),
        MailboxConfig::Maildir(_) => None,
    }
}

/// One endpoint's line: `ok`, or `FAILED` with the error and its causes on one line. The
/// parenthesis names the configured login mechanism (never a secret) before the time, so a
/// password left where a token was meant, or the wrong SASL mechanism, is seen at a glance.
fn line(
    probe: &str,
    kind: &str,
    endpoint: &str,
    mechanism: Option<&str>,
    took: Duration,
    result: Result<(), impl Display>,
) -> (String, bool) {
    let ms = took.as_secs_f64() * 1000.0;
    let how = match mechanism {
        Some(m) => format!("({m}, {ms:.0} ms)"),
        None => format!("({ms:.0} ms)"),
    };
    match result {
        Ok(()) => (format!("probe {probe} {kind} {endpoint}: ok {how}"), true),
        Err(e) => (
            format!("probe {probe} {kind} {endpoint}: FAILED {e:#} {how}"),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_line_shows_the_error_with_its_causes() {
        let cause = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = crate::setup::SetupError::ReadCa {
            path: "/etc/ca.pem".into(),
            source: cause,
        };
        let e = anyhow::Error::from(e);
        let (text, ok) = line(
            "p",
            "imap",
            "h:993",
            Some("password"),
            Duration::ZERO,
            Err(e),
        );
        assert!(!ok);
        assert_eq!(
            text,
            "probe p imap h:993: FAILED cannot read ca_file /etc/ca.pem: No such file \
             (password, 0 ms)"
        );
        let ok_line = |mechanism| {
            let took = Duration::from_millis(12);
            line("p", "smtp", "h:587", mechanism, took, Ok::<_, String>(()))
        };
        assert_eq!(
            ok_line(Some("XOAUTH2")),
            ("probe p smtp h:587: ok (XOAUTH2, 12 ms)".to_string(), true)
        );
        assert_eq!(
            ok_line(None),
            ("probe p smtp h:587: ok (12 ms)".to_string(), true)
        );
    }

    #[test]
    fn lines_name_how_each_endpoint_logs_in() {
        let maildir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(maildir.path().join(sub)).unwrap();
        }
        let text = r#"
[agent]
id = "a"
state_dir = "/nonexistent"
secret_env = "UNUSED"

[[probe]]
name = "token"
from = "a@example.test"
to = "b@example.test"
  [probe.smtp]
  host = "smtp.example.test"
  username = "a@example.test"
  token_command = ["/usr/local/bin/mail-token"]
  [probe.mailbox]
  protocol = "pop3"
  host = "pop.example.test"
  username = "b@example.test"
  mechanism = "oauthbearer"
  token_command = ["/usr/local/bin/mail-token"]

[[probe]]
name = "password"
from = "a@example.test"
to = "b@example.test"
  [probe.smtp]
  host = "127.0.0.1"
  tls = "none"
  [probe.mailbox]
  protocol = "imap"
  host = "127.0.0.1"
  username = "b@example.test"
  password = "unused"

[[probe]]
name = "maildir"
from = "a@example.test"
to = "b@example.test"
  [probe.smtp]
  host = "127.0.0.1"
  tls = "none"
  username = "a@example.test"
  password = "unused"
  [probe.mailbox]
  protocol = "maildir"
  path = "MAILDIR"
"#
        .replace("MAILDIR", &maildir.path().display().to_string());
        let config = Config::parse(std::path::Path::new("/t/probes.toml"), &text).unwrap();
        let how: Vec<_> = config
            .probes
            .iter()
            .map(|p| (smtp_mechanism(&p.smtp), mailbox_mechanism(&p.mailbox)))
            .collect();
        assert_eq!(
            how,
            [
                ("XOAUTH2", Some("OAUTHBEARER")),
                ("no auth", Some("password")),
                ("password", None),
            ]
        );
    }
}
