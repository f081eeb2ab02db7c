//! Mail classes: how a canary of each class looks on the wire.
//!
//! Providers triage mail by its shape (list headers, auto-submitted markers, HTML weight), and
//! the incident this product exists for delayed bulk mail while personal mail flowed. So every
//! class renders a message that a filter would classify as that class, while always carrying the
//! signed canary header and the body token. Pure: the caller supplies every value.

use std::fmt::Write as _;

use crate::canary::{Canary, HEADER_NAME, SigningKey};

/// The built-in shapes a class can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Plain text, a personal subject, no list headers.
    Interpersonal,
    /// A receipt: `Auto-Submitted: auto-generated`, multipart text + HTML.
    Transactional,
    /// A newsletter: `Precedence: bulk`, `List-*` headers, HTML-heavy multipart.
    Bulk,
}

impl Template {
    /// Every built-in template, by its config name.
    pub const ALL: [(&'static str, Template); 3] = [
        ("interpersonal", Template::Interpersonal),
        ("transactional", Template::Transactional),
        ("bulk", Template::Bulk),
    ];

    /// Looks a template up by its config name.
    pub fn by_name(name: &str) -> Option<Template> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// Addresses and time a canary message is rendered with.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Header and envelope sender.
    pub from: &'a str,
    /// Header and envelope recipient.
    pub to: &'a str,
}

/// Renders the complete RFC 5322 message (CRLF line ends) for a canary of the given template.
pub fn render(template: Template, canary: &Canary, key: &SigningKey, env: &Envelope) -> Vec<u8> {
    let domain = env.from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let mut head = String::new();
    let date = chrono::DateTime::from_timestamp_millis(canary.sent_ms as i64)
        .unwrap_or_default()
        .to_rfc2822();
    header(&mut head, "Date", &date);
    header(&mut head, "From", env.from);
    header(&mut head, "To", env.to);
    header(
        &mut head,
        "Message-ID",
        &format!("<{}.mailcanary@{domain}>", canary.id),
    );
    header(&mut head, HEADER_NAME, &canary.header_value(key));
    header(&mut head, "MIME-Version", "1.0");
    let token = canary.body_token();
    let body = match template {
        Template::Interpersonal => {
            header(
                &mut head,
                "Subject",
                &format!("Quick question about tomorrow ({})", canary.seq),
            );
            header(&mut head, "Content-Type", "text/plain; charset=utf-8");
            header(&mut head, "Content-Transfer-Encoding", "7bit");
            format!(
                "Hi,\r\n\r\nare we still on for tomorrow? Let me know if the time still works.\r\n\r\n\
                 Cheers\r\n\r\n-- \r\n{token}\r\n"
            )
        }
        Template::Transactional => {
            header(
                &mut head,
                "Subject",
                &format!("Your receipt #{}-{}", canary.probe, canary.seq),
            );
            header(&mut head, "Auto-Submitted", "auto-generated");
            let text = format!(
                "Thank you for your order.\r\n\r\nReceipt number: {}-{}\r\nAmount: 0.00\r\n\r\n{token}\r\n",
                canary.probe, canary.seq
            );
            let html = format!(
                "<html><body><h1>Thank you for your order</h1>\r\n<table><tr><td>Receipt number</td>\
                 <td>{}-{}</td></tr><tr><td>Amount</td><td>0.00</td></tr></table>\r\n<p>{token}</p>\
                 </body></html>\r\n",
                canary.probe, canary.seq
            );
            alternative(&mut head, &canary.id, &text, &html)
        }
        Template::Bulk => {
            header(
                &mut head,
                "Subject",
                &format!("This week's news, issue {}", canary.seq),
            );
            header(&mut head, "Precedence", "bulk");
            header(
                &mut head,
                "List-Id",
                &format!("Canary News <news.{domain}>"),
            );
            header(
                &mut head,
                "List-Unsubscribe",
                &format!(
                    "<mailto:unsubscribe@{domain}?subject=unsubscribe>, \
                     <https://{domain}/unsubscribe/{}>",
                    canary.id
                ),
            );
            header(
                &mut head,
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click",
            );
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
            let _ = write!(html, "</table><p>{token}</p></body></html>\r\n");
            alternative(&mut head, &canary.id, &text, &html)
        }
    };
    let mut message = head.into_bytes();
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(body.as_bytes());
    message
}

fn header(head: &mut String, name: &str, value: &str) {
    let _ = write!(head, "{name}: {value}\r\n");
}

/// Adds the multipart/alternative content type to `head` and returns the body.
fn alternative(head: &mut String, id: &str, text: &str, html: &str) -> String {
    let boundary = format!("=_mailcanary_{id}");
    header(
        head,
        "Content-Type",
        &format!("multipart/alternative; boundary=\"{boundary}\""),
    );
    format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n\
         --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n{html}\r\n--{boundary}--\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::{find_header, parse_header};
    use mail_parser::MessageParser;

    fn canary(class: &str) -> Canary {
        Canary {
            id: "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C".into(),
            probe: "p1".into(),
            class: class.into(),
            seq: 7,
            sent_ms: 1_795_000_000_000,
            agent: "agent-1".into(),
        }
    }

    fn key() -> SigningKey {
        SigningKey::new(b"k".to_vec()).unwrap()
    }

    fn rendered(name: &str) -> Vec<u8> {
        let env = Envelope {
            from: "probe1@example.test",
            to: "probe2@example.test",
        };
        render(
            Template::by_name(name).unwrap(),
            &canary(name),
            &key(),
            &env,
        )
    }

    #[test]
    fn every_template_parses_and_keeps_a_valid_signature() {
        for (name, _) in Template::ALL {
            let raw = rendered(name);
            let msg = MessageParser::default().parse(&raw).expect(name);
            assert!(msg.subject().is_some(), "{name}");
            assert!(msg.from().is_some() && msg.to().is_some(), "{name}");
            let value = find_header(&raw).expect(name);
            let claimed = parse_header(&value).expect(name);
            assert_eq!(claimed.verify(&key()).unwrap(), &canary(name));
            let text = msg.body_text(0).expect(name);
            assert!(
                text.contains("mailcanary-id: 01JDQ8ZK3V6R9X1T2Y3Z4A5B6C"),
                "{name}"
            );
            assert!(
                !String::from_utf8_lossy(&raw).contains("\n\n"),
                "bare LF in {name}"
            );
        }
    }

    #[test]
    fn templates_carry_their_class_markers() {
        let parse = |name| {
            let raw = rendered(name);
            MessageParser::default().parse(&raw).unwrap().into_owned()
        };
        let personal = parse("interpersonal");
        assert!(personal.header("List-Unsubscribe").is_none());
        assert!(personal.header("Auto-Submitted").is_none());
        let ctype = personal
            .header("Content-Type")
            .unwrap()
            .as_content_type()
            .unwrap();
        assert_eq!((ctype.ctype(), ctype.subtype()), ("text", Some("plain")));
        assert_eq!(personal.attachment_count(), 0);

        let receipt = parse("transactional");
        assert_eq!(
            receipt.header("Auto-Submitted").unwrap().as_text(),
            Some("auto-generated")
        );
        assert_eq!(receipt.html_body_count(), 1);
        assert_eq!(receipt.text_body_count(), 1);

        let news = parse("bulk");
        assert_eq!(news.header("Precedence").unwrap().as_text(), Some("bulk"));
        assert!(news.header("List-Unsubscribe").is_some());
        assert!(news.header("List-Unsubscribe-Post").is_some());
        assert!(news.header("List-Id").is_some());
        assert_eq!(news.html_body_count(), 1);
    }
}
