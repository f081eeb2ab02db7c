//! The POP3 dialogue of an attempt, recorded at our level for failure transcripts: each
//! command in its `Debug` form, which never shows a password or token (`PASS <redacted>`,
//! `AUTH PLAIN <user, redacted>`), and each reply's status line. Recorded here rather than on
//! the stream because the client is ours: the redacted form is what is handed to the recorder,
//! so the secret never is. A multi-line body (a listing, a mail's head) is summed up by its
//! size, not kept.

use tokio::time::error::Elapsed;

use super::ReadError;
use super::proto::{Command, Reply};
use crate::transcript::Recorder;

/// Records a command as about to be sent.
pub(super) fn said(recorder: &Recorder, command: &Command<'_>) {
    recorder.client(&format!("{command:?}"));
}

/// Records what a read came to: the status line, the size of a body, or why there was none.
pub(super) fn heard(recorder: &Recorder, result: &Result<Result<Reply, ReadError>, Elapsed>) {
    match result {
        Ok(Ok(reply)) => {
            let status = if reply.ok { "+OK" } else { "-ERR" };
            recorder.server(&format!("{status} {}", reply.text));
            if !reply.body.is_empty() {
                recorder.note(&format!("{} bytes of the reply not kept", reply.body.len()));
            }
        }
        Ok(Err(e)) => recorder.note(&e.to_string()),
        Err(_) => recorder.note("no answer in time"),
    }
}
