//! Waiting for news with IMAP IDLE (RFC 2177).
//!
//! IDLE covers one folder, the first configured (where mail is expected); the others are found
//! by the regular looks every poll interval. IDLE is re-issued at least every 10 minutes (servers
//! drop idlers after 30) and every step has a timeout, DONE included; any error drops the
//! session so the next look reconnects.

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;

use super::{Connected, select_as};
use crate::config::ImapConfig;
use crate::mailbox::{MailboxError, MailboxStage, tls};

/// Longest single IDLE before it is re-issued.
pub const MAX_IDLE: Duration = Duration::from_secs(10 * 60);

/// Idles on the first folder until the server reports a change or `max` passes.
pub(super) async fn wait(
    mut conn: Connected,
    config: &ImapConfig,
    max: Duration,
) -> Result<Connected, MailboxError> {
    let endpoint = &config.endpoint;
    let folder = &config.folders[0];
    // Mail delivered after the last scan but before IDLE starts would never be announced,
    // unless the server already did (an EXISTS in a command's answer). With the folder still
    // selected since a scan that caught up and no such news, there is none: no SELECT is
    // needed to find out (at 50 canaries a second that SELECT was one round trip in eight).
    let quiet =
        conn.selected.as_ref().is_some_and(|(f, _)| f == folder) && conn.caught_up && !conn.news;
    if !quiet {
        let selected = select_as(&mut conn, endpoint, folder, MailboxStage::Idle).await?;
        if selected.uid_next > conn.scanned_uid_next {
            return Ok(conn);
        }
    }
    let mut handle = conn.session.idle();
    match tokio::time::timeout(endpoint.timeout, handle.init()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(MailboxError::new(
                MailboxStage::Idle,
                format!("{endpoint}: IDLE: {e}"),
            ));
        }
        Err(_) => return Err(tls::timed_out(endpoint, "IDLE", endpoint.timeout)),
    }
    tracing::debug!(%endpoint, %folder, "IDLE: waiting for news");
    let limit = max.min(MAX_IDLE);
    let outcome = {
        // The crate's own timeout restarts on every keepalive; ours bounds the whole wait.
        let (news, _stop) = handle.wait_with_timeout(limit);
        tokio::time::timeout(limit, news).await
    };
    match outcome {
        Ok(Err(e)) => {
            return Err(MailboxError::new(
                MailboxStage::Idle,
                format!("{endpoint}: IDLE: {e}"),
            ));
        }
        Ok(Ok(IdleResponse::NewData(_))) => {
            tracing::debug!(%endpoint, %folder, "IDLE: the server reports news");
        }
        Ok(Ok(_)) | Err(_) => {}
    }
    conn.session = match tokio::time::timeout(endpoint.timeout, handle.done()).await {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            return Err(MailboxError::new(
                MailboxStage::Idle,
                format!("{endpoint}: DONE: {e}"),
            ));
        }
        Err(_) => return Err(tls::timed_out(endpoint, "DONE", endpoint.timeout)),
    };
    Ok(conn)
}
