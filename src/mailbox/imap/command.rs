//! The IMAP commands a look relies on, read up to their own tagged `OK`.
//!
//! async-imap's FETCH, SEARCH, STORE and EXPUNGE answers end at the command's tagged
//! completion *or wherever the connection ends*, and never look at the completion's status: a
//! session cut between a command and its answer, or a `NO`, reads as a complete, shorter answer.
//! A look that then moves its memory past the mails it was told about loses those canaries for
//! good (seen in CI: a connection cut right after `UID FETCH` skipped two canaries, which stayed
//! "in flight" forever). So these commands are sent here and their answer only counts once the
//! server completed it with `OK`; a cut connection, `NO` or `BAD` is an error, the look fails
//! or reads again, and nothing is skipped.

use async_imap::error::{Error, Result};
use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, MessageSection, Response, SectionPath, Status,
};

use super::ImapSession;
use super::scan::{self, Fetched};

/// Answers kept per `UID FETCH`: a chunk's mails, with room for unsolicited flag updates.
const MAX_FETCH_ANSWERS: usize = 4 * scan::FETCH_CHUNK;

/// INTERNALDATE's form (RFC 3501 `date-time`).
const DATE_TIME: &str = "%d-%b-%Y %H:%M:%S %z";

/// Sends `command` and hands every untagged answer to `each` until the command's own tagged
/// completion; `Ok` only if that completion is `OK`. An `EXISTS` among the answers (new mail,
/// which the server reports at the end of whatever command runs when it arrives) sets `news`.
async fn answered(
    session: &mut ImapSession,
    news: &mut bool,
    command: &str,
    mut each: impl FnMut(&Response<'_>),
) -> Result<()> {
    let tag = session.run_command(command).await?;
    loop {
        let Some(answer) = session.read_response().await? else {
            return Err(Error::ConnectionLost);
        };
        match answer.parsed() {
            Response::Done {
                tag: done,
                status,
                outcome,
            } if *done == tag => {
                let said = outcome.information.as_deref().unwrap_or_default();
                return match status {
                    Status::Ok => Ok(()),
                    Status::No => Err(Error::No(said.to_string())),
                    other => Err(Error::Bad(format!("{other:?} {said}"))),
                };
            }
            Response::MailboxData(MailboxDatum::Exists(_)) => *news = true,
            other => each(other),
        }
    }
}

/// `UID SEARCH criteria`: the UIDs found, at most [`scan::SEARCH_SPAN`] (a window's width: a
/// server that names more is not believed beyond that, and memory stays bounded).
pub(super) async fn uid_search(
    session: &mut ImapSession,
    news: &mut bool,
    criteria: &str,
) -> Result<Vec<u32>> {
    let mut found = Vec::new();
    let most = scan::SEARCH_SPAN as usize;
    answered(session, news, &format!("UID SEARCH {criteria}"), |answer| {
        if let Response::MailboxData(MailboxDatum::Search(uids)) = answer {
            let room = most.saturating_sub(found.len());
            found.extend(uids.iter().take(room));
        }
    })
    .await?;
    Ok(found)
}

/// `UID FETCH set` of the look's bounded items ([`scan::fetch_items`]), one [`Fetched`] per
/// answer (unsolicited ones included: [`scan::sort_out`] tells them apart), at most
/// [`MAX_FETCH_ANSWERS`]: a server that keeps sending is read to its completion (or the
/// timeout) without the answers piling up.
pub(super) async fn uid_fetch(
    session: &mut ImapSession,
    news: &mut bool,
    set: &str,
) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    let command = format!("UID FETCH {set} {}", scan::fetch_items());
    answered(session, news, &command, |answer| {
        if let Response::Fetch(_, attributes) = answer
            && out.len() < MAX_FETCH_ANSWERS
        {
            out.push(fetched(attributes));
        }
    })
    .await?;
    Ok(out)
}

/// The items of one FETCH answer that a look reads.
fn fetched(attributes: &[AttributeValue<'_>]) -> Fetched {
    let mut f = Fetched::default();
    for a in attributes {
        match a {
            AttributeValue::Uid(uid) => f.uid = Some(*uid),
            AttributeValue::InternalDate(date) => {
                f.server_ms = chrono::DateTime::parse_from_str(date, DATE_TIME)
                    .ok()
                    .and_then(|d| u64::try_from(d.timestamp_millis()).ok());
            }
            AttributeValue::BodySection {
                section: Some(SectionPath::Full(MessageSection::Header)),
                data: Some(data),
                ..
            }
            | AttributeValue::Rfc822Header(Some(data)) => f.header = Some(data.to_vec()),
            AttributeValue::BodySection {
                section: Some(SectionPath::Full(MessageSection::Text)),
                data: Some(data),
                ..
            } => f.text = Some(data.to_vec()),
            _ => {}
        }
    }
    f
}

/// A command whose answer the look does not need (`UID STORE … .SILENT`, `UID EXPUNGE`), done
/// only when the server says `OK`.
pub(super) async fn done(session: &mut ImapSession, news: &mut bool, command: &str) -> Result<()> {
    answered(session, news, command, |_| {}).await
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::TcpListener;

    use async_imap::Client;

    use super::*;
    use crate::mailbox::tls::MailStream;

    /// A scripted IMAP server on a loopback port: greets, accepts LOGIN, then answers the next
    /// command with `answer` (`{tag}` replaced by the command's tag) and closes.
    fn server(answer: impl Into<String>) -> u16 {
        let answer = answer.into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            stream.write_all(b"* OK ready\r\n").unwrap();
            for reply in ["OK LOGIN done", ""] {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let tag = line.split(' ').next().unwrap_or_default().to_string();
                let text = if reply.is_empty() {
                    answer.replace("{tag}", &tag)
                } else {
                    format!("{tag} {reply}\r\n")
                };
                stream.write_all(text.as_bytes()).unwrap();
            }
        });
        port
    }

    async fn session(port: u16) -> ImapSession {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let stream = crate::transcript::Recorded::new(MailStream::Plain(tcp), Default::default());
        let mut client = Client::new(stream);
        client.read_response().await.unwrap();
        client.login("u", "p").await.map_err(|(e, _)| e).unwrap()
    }

    const MAIL: &str = "* 1 FETCH (UID 7 INTERNALDATE \"28-Nov-2026 13:02:07 +0000\" \
                        BODY[HEADER.FIELDS (X-MAILCANARY RECEIVED)]<0> {17}\r\nX-Mailcanary: v\r\n \
                        BODY[TEXT]<0> {4}\r\nbody)\r\n";

    #[tokio::test]
    async fn a_completed_fetch_is_read_whole() {
        let port = server(format!("{MAIL}{{tag}} OK done\r\n"));
        let fetched = uid_fetch(&mut session(port).await, &mut false, "7")
            .await
            .unwrap();
        assert_eq!(fetched.len(), 1);
        let f = &fetched[0];
        assert_eq!(f.uid, Some(7));
        assert_eq!(f.header.as_deref(), Some(&b"X-Mailcanary: v\r\n"[..]));
        assert_eq!(f.text.as_deref(), Some(&b"body"[..]));
        assert_eq!(f.server_ms, Some(1_795_870_927_000));
    }

    #[tokio::test]
    async fn a_fetch_cut_off_before_its_completion_is_an_error() {
        // Nothing at all, and a whole mail but no completion: neither is an answer.
        for answer in ["", MAIL] {
            let port = server(answer);
            let result = uid_fetch(&mut session(port).await, &mut false, "7").await;
            assert!(
                matches!(result, Err(Error::ConnectionLost)),
                "{answer:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_command_is_an_error_not_an_empty_answer() {
        let port = server("* SEARCH 3\r\n{tag} NO [SERVERBUG] try again\r\n");
        let result = uid_search(&mut session(port).await, &mut false, "UID 1:*").await;
        assert!(
            matches!(&result, Err(Error::No(s)) if s.contains("try again")),
            "{result:?}"
        );
        let port = server("{tag} BAD what\r\n");
        let result = done(&mut session(port).await, &mut false, "UID EXPUNGE 1").await;
        assert!(matches!(result, Err(Error::Bad(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_server_that_names_too_much_is_not_believed_beyond_the_bounds() {
        let many: String = (1..=SEARCH_MORE).map(|n| format!(" {n}")).collect();
        let port = server(format!("* SEARCH{many}\r\n{{tag}} OK done\r\n"));
        let uids = uid_search(&mut session(port).await, &mut false, "UID 1:*")
            .await
            .unwrap();
        assert_eq!(uids.len(), scan::SEARCH_SPAN as usize);
        let flags: String = (1..=MAX_FETCH_ANSWERS + 50)
            .map(|n| format!("* {n} FETCH (FLAGS ())\r\n"))
            .collect();
        let port = server(format!("{flags}{{tag}} OK done\r\n"));
        let fetched = uid_fetch(&mut session(port).await, &mut false, "7")
            .await
            .unwrap();
        assert_eq!(fetched.len(), MAX_FETCH_ANSWERS);
    }

    const SEARCH_MORE: u32 = scan::SEARCH_SPAN + 100;

    #[tokio::test]
    async fn a_completed_search_lists_its_uids_and_tells_of_new_mail_announced_meanwhile() {
        let port = server("* SEARCH 3 9\r\n* 4 EXISTS\r\n* SEARCH 12\r\n{tag} OK done\r\n");
        let mut news = false;
        let uids = uid_search(&mut session(port).await, &mut news, "UID 1:*")
            .await
            .unwrap();
        assert_eq!(uids, [3, 9, 12]);
        assert!(news, "the EXISTS was heard");
        let port = server("* 2 EXPUNGE\r\n{tag} OK done\r\n");
        let mut news = false;
        done(&mut session(port).await, &mut news, "UID EXPUNGE 1")
            .await
            .unwrap();
        assert!(!news, "an EXPUNGE is no news");
    }
}
