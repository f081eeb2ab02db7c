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
                Ok(s) => s.check_login().await.map_err(|e| e.to_string()),
                Err(e) => Err(crate::setup::chain(&e)),
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
                Ok(mut m) => m.check_login().await.map_err(|e| e.to_string()),
                Err(e) => Err(crate::setup::chain(&e)),
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

fn line(
    probe: &str,
    kind: &str,
    endpoint: &str,
    start: Instant,
    result: Result<(), String>,
) -> (String, bool) {
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => (
            format!("probe {probe} {kind} {endpoint}: ok ({ms:.0} ms)"),
            true,
        ),
        Err(e) => (
            format!("probe {probe} {kind} {endpoint}: FAILED {e} ({ms:.0} ms)"),
            false,
        ),
    }
}
