//! `token_command`: a program whose standard output is the access token, as isync's `PassCmd`
//! or msmtp's `passwordeval` run one. It covers every identity provider and token helper
//! mailcanary does not speak to itself.
//!
//! The program runs without a shell (the argument list as written), with no input, and is
//! killed if the caller gives up (timeout or shutdown). Its output is read up to a bound, and
//! only its first line of standard error is quoted: a broken helper is diagnosed, and a chatty
//! one cannot flood the log.

use std::process::Stdio;

use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use super::{Issued, accept};

/// Most bytes read from the command's standard output or error.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Longest piece of standard error quoted.
const MAX_QUOTED: usize = 200;

/// Runs `argv` and takes its trimmed standard output as the token.
pub(super) async fn run(argv: &[String]) -> Result<Issued, String> {
    let (program, args) = argv.split_first().ok_or("no command configured")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stdout = child
        .stdout
        .take()
        .expect("stdout is piped")
        .take(MAX_OUTPUT);
    let mut stderr = child
        .stderr
        .take()
        .expect("stderr is piped")
        .take(MAX_OUTPUT);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (read_out, _) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    read_out.map_err(|e| format!("reading the output of {program}: {e}"))?;
    // Output beyond the bound is not waited for: the pipes close here.
    drop((stdout, stderr));
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    if !status.success() {
        return Err(format!("{program} failed ({status}){}", first_line(&err)));
    }
    let token = String::from_utf8(out)
        .map_err(|_| format!("{program} printed something that is not text"))?;
    Ok(Issued {
        token: accept(token.trim().to_string())?,
        expires_in: None,
    })
}

/// `: <first non-empty line>` of standard error, printable and bounded, or nothing.
fn first_line(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    crate::text::first_line(&text).map_or(String::new(), |line| {
        format!(": {}", crate::text::printable(line, MAX_QUOTED))
    })
}
