//! Finding the junk folder by what the server calls it (RFC 6154 SPECIAL-USE), so that
//! placement works without a `folders` setting: Gmail's is `[Gmail]/Spam`, Microsoft 365's
//! `Junk Email`, Dovecot's whatever its admin named it; all of them mark it `\Junk` in `LIST`.

use async_imap::error::Error as ImapError;
use async_imap::imap_proto::NameAttribute;
use futures::TryStreamExt as _;

use super::ImapSession;
use crate::config::Endpoint;
use crate::mailbox::tls;
use crate::mailbox::{MailboxError, MailboxStage};

/// Longest folder name taken from a server: longer is not a folder anyone files mail into,
/// and the name becomes a label value.
const MAX_NAME: usize = 200;

/// The first folder the server marks `\Junk`, unless it is one of `not`. A server that refuses
/// `LIST` (or lists no such folder) has none; only a broken or silent connection is an error.
///
/// The whole answer is read (async-imap must see the tagged end of it), but only within the
/// endpoint's timeout and without keeping any name but the one found.
pub async fn junk_folder(
    session: &mut ImapSession,
    endpoint: &Endpoint,
    not: &[&str],
) -> Result<Option<String>, MailboxError> {
    let listing = async {
        let mut names = session.list(Some(""), Some("*")).await?;
        let mut found = None;
        while let Some(name) = names.try_next().await? {
            if found.is_none()
                && name.attributes().contains(&NameAttribute::Junk)
                && is_usable(name.name(), not)
            {
                found = Some(name.name().to_string());
            }
        }
        Ok::<_, ImapError>(found)
    };
    match tokio::time::timeout(endpoint.timeout, listing).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(ImapError::No(_) | ImapError::Bad(_))) => Ok(None),
        Ok(Err(e)) => Err(MailboxError::new(
            MailboxStage::Select,
            format!("{endpoint}: LIST: {e}"),
        )),
        Err(_) => Err(tls::timed_out(endpoint, "LIST", endpoint.timeout)),
    }
}

/// A name that can be watched: not INBOX, not a folder canaries are moved into (it would be
/// read and counted again), printable and of sane length.
fn is_usable(name: &str, not: &[&str]) -> bool {
    !name.eq_ignore_ascii_case("INBOX")
        && !not.contains(&name)
        && !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_name_that_is_not_watched_otherwise_is_taken() {
        assert!(is_usable("Junk", &[]));
        assert!(is_usable("[Gmail]/Spam", &["Archive"]));
        assert!(!is_usable("INBOX", &[]));
        assert!(!is_usable("inbox", &[]));
        assert!(!is_usable("Junk", &["Junk"]));
        assert!(!is_usable("", &[]));
        assert!(!is_usable("Ju\nnk", &[]));
        assert!(!is_usable(&"J".repeat(MAX_NAME + 1), &[]));
    }
}
