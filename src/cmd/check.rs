//! `mailcanary check`: is the config valid, and can every endpoint be logged in to?

use std::collections::HashMap;
use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use crate::config::Config;
use crate::mailbox;
use crate::send::Submitter;

/// A mailbox's login check, awaited by every probe on that mailbox.
type MailboxCheck = Shared<BoxFuture<'static, (Duration, Result<(), Arc<anyhow::Error>>)>>;

/// Logs in to every SMTP and mailbox endpoint and prints one line each.
pub async fn run(config: &Config, no_login: bool) -> Result<ExitCode, super::Error> {
    println!(
        "config {}: ok ({} probes)",
        config.path.display(),
        config.probes.len()
    );
    if no_login {
        return Ok(ExitCode::SUCCESS);
    }
    // One login per distinct mailbox, as `run` holds one connection per mailbox: probes that
    // share it get its result (a thousand logins to one account at once would be refused).
    let mut mailboxes: HashMap<(String, Option<&str>), MailboxCheck> = HashMap::new();
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

/// One endpoint's line: `ok`, or `FAILED` with the error and its causes on one line.
fn line(
    probe: &str,
    kind: &str,
    endpoint: &str,
    took: Duration,
    result: Result<(), impl Display>,
) -> (String, bool) {
    let ms = took.as_secs_f64() * 1000.0;
    match result {
        Ok(()) => (
            format!("probe {probe} {kind} {endpoint}: ok ({ms:.0} ms)"),
            true,
        ),
        Err(e) => (
            format!("probe {probe} {kind} {endpoint}: FAILED {e:#} ({ms:.0} ms)"),
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
        let (text, ok) = line("p", "imap", "h:993", Duration::ZERO, Err(e));
        assert!(!ok);
        assert!(
            text.starts_with(
                "probe p imap h:993: FAILED cannot read ca_file /etc/ca.pem: No such file ("
            ),
            "{text}"
        );
        let (text, ok) = line("p", "smtp", "h:587", Duration::ZERO, Ok::<_, String>(()));
        assert!(ok && text.starts_with("probe p smtp h:587: ok ("), "{text}");
    }
}
