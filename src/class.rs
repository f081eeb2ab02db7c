//! Mail classes: how a canary of each class looks on the wire.
//!
//! Providers triage mail by its shape (list headers, auto-submitted markers, HTML weight), and
//! the incident this product exists for delayed bulk mail while personal mail flowed. So every
//! class renders a message a filter would classify as that class, while always carrying the
//! signed canary header and the body token. A custom class starts from a built-in template and
//! overrides headers, the subject and the size. Pure: the caller supplies every value.

mod body;
mod pad;

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

/// Headers a class may not set: the canary header is ours to sign, and the others define the
/// message's structure or must agree with the SMTP envelope.
pub const RESERVED_HEADERS: [&str; 8] = [
    HEADER_NAME,
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
    "Message-ID",
    "Date",
    "From",
    "To",
];

/// Everything that shapes a class's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSpec {
    /// The class name (a label value).
    pub name: String,
    /// The built-in shape it starts from.
    pub template: Template,
    /// Headers added, or replacing the template's of the same name (case-insensitive).
    pub headers: Vec<(String, String)>,
    /// Replaces the template's subject.
    pub subject: Option<String>,
    /// Pads the message with an attachment to about this many bytes.
    pub size: Option<u64>,
}

impl ClassSpec {
    /// A built-in class, unmodified.
    pub fn builtin(name: &str, template: Template) -> ClassSpec {
        ClassSpec {
            name: name.to_string(),
            template,
            headers: Vec::new(),
            subject: None,
            size: None,
        }
    }
}

/// Addresses a canary message is rendered with.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Header and envelope sender.
    pub from: &'a str,
    /// Header and envelope recipient.
    pub to: &'a str,
}

/// A message before it is written out: header fields in order, then the body.
struct Draft {
    headers: Vec<(String, String)>,
    body: String,
}

impl Draft {
    /// Sets a header, replacing every field of that name (case-insensitive) in place, or
    /// appending it.
    fn set(&mut self, name: &str, value: &str) {
        let mut placed = false;
        self.headers.retain_mut(|(n, v)| {
            if !n.eq_ignore_ascii_case(name) {
                return true;
            }
            if placed {
                return false;
            }
            *n = name.to_string();
            *v = value.to_string();
            placed = true;
            true
        });
        if !placed {
            self.headers.push((name.to_string(), value.to_string()));
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn head_len(&self) -> usize {
        self.headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
            + 2
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut out = String::with_capacity(self.head_len() + self.body.len());
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

/// Renders the complete RFC 5322 message (CRLF line ends) for a canary of `spec`.
pub fn render(spec: &ClassSpec, canary: &Canary, key: &SigningKey, env: &Envelope) -> Vec<u8> {
    let domain = env.from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let date = chrono::DateTime::from_timestamp_millis(canary.sent_ms as i64)
        .unwrap_or_default()
        .to_rfc2822();
    let mut draft = Draft {
        headers: vec![
            ("Date".into(), date),
            ("From".into(), env.from.into()),
            ("To".into(), env.to.into()),
            (
                "Message-ID".into(),
                format!("<{}.mailcanary@{domain}>", canary.id),
            ),
            (HEADER_NAME.into(), canary.header_value(key)),
            ("MIME-Version".into(), "1.0".into()),
        ],
        body: String::new(),
    };
    body::shape(
        spec.template,
        canary,
        &canary.body_token(key),
        domain,
        &mut draft,
    );
    if let Some(subject) = &spec.subject {
        draft.set("Subject", subject);
    }
    for (name, value) in &spec.headers {
        draft.set(name, value);
    }
    if let Some(size) = spec.size {
        pad::to_size(&mut draft, canary, size);
    }
    draft.into_bytes()
}

#[cfg(test)]
mod tests;
