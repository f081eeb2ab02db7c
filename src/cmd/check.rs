//! `mailcanary check`: is the config valid, and can every endpoint be logged in to?

use std::process::ExitCode;
use std::time::Instant;

use crate::config::Config;
use crate::mailbox;
use crate::send::Submitter;

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
                start,
                result,
            )
        };
        let mailbox = async {
            let start = Instant::now();
            let endpoint = probe.mailbox.location();
            let result = match mailbox::open(&probe.mailbox) {
                Ok(mut m) => m.check_login().await.map_err(anyhow::Error::new),
                Err(e) => Err(anyhow::Error::new(e)),
            };
            line(
                &probe.name,
                probe.mailbox.protocol(),
                &endpoint,
                start,
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
    start: Instant,
    result: anyhow::Result<()>,
) -> (String, bool) {
    let ms = start.elapsed().as_secs_f64() * 1000.0;
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
        let (text, ok) = line("p", "imap", "h:993", Instant::now(), Err(e.into()));
        assert!(!ok);
        assert!(
            text.starts_with(
                "probe p imap h:993: FAILED cannot read ca_file /etc/ca.pem: No such file ("
            ),
            "{text}"
        );
        let (text, ok) = line("p", "smtp", "h:587", Instant::now(), Ok(()));
        assert!(ok && text.starts_with("probe p smtp h:587: ok ("), "{text}");
    }
}
