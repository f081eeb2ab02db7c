//! The built-in templates: subject, class markers and body of each shape.

use std::fmt::Write as _;

use super::{Draft, Template};
use crate::canary::Canary;

/// Gives `draft` the subject, class headers and body of `template`.
pub(super) fn shape(
    template: Template,
    canary: &Canary,
    token: &str,
    domain: &str,
    draft: &mut Draft,
) {
    let (probe, seq) = (&canary.probe, canary.seq);
    match template {
        Template::Interpersonal => {
            draft.set("Subject", &format!("Quick question about tomorrow ({seq})"));
            draft.set("Content-Type", "text/plain; charset=utf-8");
            draft.set("Content-Transfer-Encoding", "7bit");
            draft.body = format!(
                "Hi,\r\n\r\nare we still on for tomorrow? Let me know if the time still works \
                 for you, otherwise I can move things around.\r\n\r\nCheers\r\n\r\n-- \r\n{token}\r\n"
            );
        }
        Template::Transactional => {
            draft.set("Subject", &format!("Your receipt #{probe}-{seq}"));
            draft.set("Auto-Submitted", "auto-generated");
            let text = format!(
                "Thank you for your order.\r\n\r\nReceipt number: {probe}-{seq}\r\nAmount: 0.00\r\n\
                 \r\nThis is an automatically generated message.\r\n\r\n{token}\r\n"
            );
            let html = format!(
                "<html><body><h1>Thank you for your order</h1>\r\n<table><tr><td>Receipt number</td>\
                 <td>{probe}-{seq}</td></tr><tr><td>Amount</td><td>0.00</td></tr></table>\r\n\
                 <p>This is an automatically generated message.</p>\r\n<p>{token}</p></body></html>\r\n"
            );
            alternative(draft, &canary.id, &text, &html);
        }
        Template::Bulk => {
            draft.set("Subject", &format!("This week's news, issue {seq}"));
            draft.set("Precedence", "bulk");
            draft.set("List-Id", &format!("Canary News <news.{domain}>"));
            draft.set(
                "List-Unsubscribe",
                &format!(
                    "<mailto:unsubscribe@{domain}?subject=unsubscribe>, \
                     <https://{domain}/unsubscribe/{}>",
                    canary.id
                ),
            );
            draft.set("List-Unsubscribe-Post", "List-Unsubscribe=One-Click");
            let text =
                format!("This week's news\r\n\r\nRead the full issue online.\r\n\r\n{token}\r\n");
            let mut html = String::from(
                "<html><head><style>body{font-family:sans-serif}.card{padding:8px}</style></head>\
                 <body><table width=\"100%\">\r\n",
            );
            for n in 1..=8 {
                let _ = write!(
                    html,
                    "<tr><td class=\"card\"><h2>Story {n}</h2><p>Our latest story, number {n}, \
                     in full.</p><a href=\"https://{domain}/story/{n}\">Read more</a></td></tr>\r\n"
                );
            }
            let _ = write!(
                html,
                "</table><p><a href=\"https://{domain}/unsubscribe/{}\">Unsubscribe</a></p>\
                 <p>{token}</p></body></html>\r\n",
                canary.id
            );
            alternative(draft, &canary.id, &text, &html);
        }
    }
}

/// Makes the body multipart/alternative with a text and an HTML part.
fn alternative(draft: &mut Draft, id: &str, text: &str, html: &str) {
    let boundary = format!("=_mailcanary_alt_{id}");
    draft.set(
        "Content-Type",
        &format!("multipart/alternative; boundary=\"{boundary}\""),
    );
    draft.body = format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n\
         --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n{html}\r\n--{boundary}--\r\n"
    );
}
