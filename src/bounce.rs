//! Reading bounces: delivery status notifications (RFC 3464) and the common non-standard
//! formats, as far as mailcanary needs them: what happened (failed or delayed), the enhanced
//! status code (RFC 3463), the remote MTA's diagnostic, and the canary the bounce is about.
//!
//! Pure, like [`crate::canary`]: it sees the head and the start of the body an adapter read
//! (bounded), never a whole mailbox. A bounce is only a claim: the canary mark it carries is
//! returned unverified, and the caller judges it like any canary (a bounce that does not carry
//! a genuine canary of ours changes nothing).
//!
//! Anyone can send a mail that looks like a bounce, so everything here is bounded: the parts
//! read, the fields kept, and the diagnostic's length and characters.

use crate::canary::{HEADER_NAME, find_body_token};

/// What the notification says happened to the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not delivered and not going to be (`Action: failed`).
    Failed,
    /// Still queued somewhere, retried (`Action: delayed`).
    Delayed,
}

/// What a bounce reports about one canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Failed or delayed.
    pub action: Action,
    /// The enhanced status code (`5.1.1`), if the bounce gave a well-formed one.
    pub status: Option<String>,
    /// The remote MTA's words (`Diagnostic-Code`, else the bounce's own explanation), one
    /// line of printable text, at most [`DIAGNOSTIC_MAX`] characters.
    pub diagnostic: Option<String>,
    /// The canary's mark (the `X-Mailcanary` value or body token of the returned message),
    /// not yet verified.
    pub canary: String,
}

/// Longest diagnostic kept.
pub const DIAGNOSTIC_MAX: usize = 300;

/// Most MIME parts of a report looked at.
const MAX_PARTS: usize = 8;

/// Reads a bounce from a mail's `head` and the start of its body; `None` for a mail that is
/// not a bounce, or a bounce that carries no canary mark.
pub fn read(head: &[u8], body: &[u8]) -> Option<Report> {
    let head = String::from_utf8_lossy(head);
    let body = String::from_utf8_lossy(body);
    let content_type = header_field(&head, "Content-Type").unwrap_or_default();
    let report = if is_delivery_report(&content_type) {
        standard(&content_type, &body)
    } else if looks_like_a_bounce(&head) {
        informal(&head, &body)
    } else {
        None
    }?;
    Some(report)
}

/// `multipart/report; report-type=delivery-status` (RFC 3462, 3464), any case, any quoting.
fn is_delivery_report(content_type: &str) -> bool {
    let lower = content_type.to_ascii_lowercase();
    lower.trim_start().starts_with("multipart/report")
        && param(&lower, "report-type").as_deref() == Some("delivery-status")
}

/// A standard DSN: the `message/delivery-status` part for action, status and diagnostic; the
/// returned message (or its headers) for the canary.
fn standard(content_type: &str, body: &str) -> Option<Report> {
    let boundary = param(content_type, "boundary")?;
    let mut status_part = None;
    let mut canary = None;
    for part in parts(body, &boundary) {
        let (part_head, content) = split_head(part);
        let kind = header_field(part_head, "Content-Type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if kind.starts_with("message/delivery-status")
            || kind.starts_with("message/global-delivery-status")
        {
            status_part = Some(content);
        } else if kind.starts_with("message/rfc822")
            || kind.starts_with("text/rfc822-headers")
            || kind.starts_with("message/global")
        {
            canary = canary.or_else(|| mark_in(content));
        }
    }
    let (action, status, diagnostic) = recipient_fields(status_part?)?;
    Some(Report {
        action,
        status,
        diagnostic,
        canary: canary.or_else(|| mark_in(body))?,
    })
}

/// The first per-recipient block of a `message/delivery-status` part whose action is failed,
/// else the first whose action is delayed (RFC 3464 2.3: blocks after the per-message one,
/// separated by blank lines). Other actions (delivered, relayed, expanded) are no bounce.
fn recipient_fields(part: &str) -> Option<(Action, Option<String>, Option<String>)> {
    let mut found: Option<(Action, Option<String>, Option<String>)> = None;
    for block in part
        .split("\n\n")
        .flat_map(|b| b.split("\r\n\r\n"))
        .skip(1)
        .take(MAX_PARTS)
    {
        let action = match header_field(block, "Action").map(|a| a.to_ascii_lowercase()) {
            Some(a) if a.starts_with("failed") => Action::Failed,
            Some(a) if a.starts_with("delayed") => Action::Delayed,
            _ => continue,
        };
        let status = header_field(block, "Status").and_then(|s| enhanced_status(&s));
        let diagnostic = header_field(block, "Diagnostic-Code").map(|d| {
            // `smtp; 550 5.1.1 …`: the type is noise for a person.
            let text = d.split_once(';').map_or(d.as_str(), |(_, t)| t).to_string();
            clean(&text)
        });
        if action == Action::Failed {
            return Some((action, status, diagnostic));
        }
        found = found.or(Some((action, status, diagnostic)));
    }
    found
}

/// Bounces that are not `multipart/report` (qmail's "failure notice", older Exim and
/// Sendmail, many gateways) say so in who sent them and what they are called.
fn looks_like_a_bounce(head: &str) -> bool {
    let from = header_field(head, "From")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let subject = header_field(head, "Subject")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let daemon = [
        "mailer-daemon",
        "postmaster",
        "mail delivery subsystem",
        "mail delivery system",
    ]
    .iter()
    .any(|d| from.contains(d));
    let titled = [
        "undeliver",
        "delivery status notification",
        "failure notice",
        "delivery failure",
        "mail delivery failed",
        "returned mail",
        "delivery has failed",
        "delayed mail",
        "delivery delayed",
        "warning: message",
    ]
    .iter()
    .any(|t| subject.contains(t));
    daemon && titled
}

/// A non-standard bounce: delayed if it says so, else failed; the first enhanced status code
/// in its text, and the line it is on as the diagnostic.
fn informal(head: &str, body: &str) -> Option<Report> {
    let subject = header_field(head, "Subject")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let delayed = ["delay", "warning", "will retry", "still trying"]
        .iter()
        .any(|w| subject.contains(w));
    let found = body.lines().find_map(|line| {
        line.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ':' || c == ',')
            .find_map(enhanced_status)
            .map(|status| (status, clean(line)))
    });
    let (status, diagnostic) = found.unzip();
    let action = match (delayed, status.as_deref()) {
        (_, Some(s)) if s.starts_with('4') => Action::Delayed,
        (_, Some(_)) => Action::Failed,
        (true, None) => Action::Delayed,
        (false, None) => Action::Failed,
    };
    Some(Report {
        action,
        status,
        diagnostic,
        canary: mark_in(body)?,
    })
}

/// `class.subject.detail` with class 2, 4 or 5 and at most three digits each (RFC 3463);
/// anything else is not a status code.
pub fn enhanced_status(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches(['.', ';']);
    let mut fields = text.split('.');
    let (class, subject, detail) = (fields.next()?, fields.next()?, fields.next()?);
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = fields.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && digits(subject)
        && digits(detail);
    ok.then(|| text.to_string())
}

/// The canary mark in `text`: an `X-Mailcanary:` header line anywhere in it (the returned
/// message's headers), unfolded; else the body token.
fn mark_in(text: &str) -> Option<String> {
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    while let Some(line) = lines.next() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if !name.trim_end().eq_ignore_ascii_case(HEADER_NAME) {
            continue;
        }
        let mut value = rest.trim().to_string();
        // Unfolded as `canary::find_header` does (the line break goes, the blank stays).
        for next in lines.by_ref() {
            if !next.starts_with([' ', '\t']) {
                break;
            }
            value.push_str(next);
        }
        return Some(value.trim().to_string());
    }
    find_body_token(text.as_bytes())
}

/// The parts of a multipart body, each without its delimiter lines.
fn parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    body.split(delimiter.as_str())
        .skip(1)
        .take_while(|p| !p.starts_with("--"))
        .take(MAX_PARTS)
        .map(|p| {
            p.strip_prefix("\r\n")
                .or_else(|| p.strip_prefix('\n'))
                .unwrap_or(p)
        })
        .collect()
}

/// A part's header block and its content.
fn split_head(part: &str) -> (&str, &str) {
    if let Some(at) = part.find("\r\n\r\n") {
        return (&part[..at], &part[at + 4..]);
    }
    match part.find("\n\n") {
        Some(at) => (&part[..at], &part[at + 2..]),
        None => (part, ""),
    }
}

/// The unfolded value of the first header field `name` in `head` (stops at the first blank
/// line, so a body is never read as a head).
pub(crate) fn header_field(head: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => {
                v.push(' ');
                v.push_str(line.trim());
            }
            Some(_) => break,
            None if line.is_empty() => break,
            None => {
                if let Some((n, rest)) = line.split_once(':')
                    && n.trim_end().eq_ignore_ascii_case(name)
                {
                    value = Some(rest.trim().to_string());
                }
            }
        }
    }
    value
}

/// A parameter of a structured header value (`boundary="x"`), unquoted.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// One line of printable text, at most [`DIAGNOSTIC_MAX`] characters.
fn clean(text: &str) -> String {
    crate::text::printable(text, DIAGNOSTIC_MAX)
}

#[cfg(test)]
mod tests;
