//! What the books keep of the last mail that forged a probe's canary: enough for the person
//! on call to find it in the mailbox (when, where, who claims to have sent it, its subject).
//!
//! Every field is the forger's own text: kept printable and short here, escaped wherever it
//! is shown.

use serde::{Deserialize, Serialize};

use super::{Ledger, Write};

/// Longest From or Subject kept, in characters.
const FIELD_MAX: usize = 200;

/// A forged mail, as its head says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgedMail {
    /// When it was seen, Unix ms.
    pub seen_ms: u64,
    /// Where it is (folder and mailbox key).
    pub mail: String,
    /// Its `From:`, printable, at most 200 characters (encoded words left as written).
    pub from: Option<String>,
    /// Its `Subject:`, the same way.
    pub subject: Option<String>,
}

impl ForgedMail {
    /// The note for the mail `mail` seen at `seen_ms` whose header fields are `head`.
    pub fn from_head(head: &[u8], mail: &str, seen_ms: u64) -> ForgedMail {
        let head = String::from_utf8_lossy(head);
        let field = |name| {
            crate::bounce::header_field(&head, name).map(|v| crate::text::printable(&v, FIELD_MAX))
        };
        ForgedMail {
            seen_ms,
            mail: crate::text::printable(mail, FIELD_MAX),
            from: field("From"),
            subject: field("Subject"),
        }
    }
}

impl Ledger {
    /// Keeps `forged` as the probe's last forged mail.
    pub fn note_forged(&mut self, forged: ForgedMail) -> Vec<Write> {
        self.probe.last_forged = Some(forged);
        vec![Write::Probe(self.probe.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_mail_is_noted_printable_and_short() {
        let head = format!(
            "Received: x\r\nFrom: \"<img src=x>\" <evil@example.test>\r\nSubject: <script>\r\n \
             alert(1)</script>\u{7}{}\r\n\r\nbody",
            "y".repeat(500)
        );
        let note = ForgedMail::from_head(head.as_bytes(), "INBOX/7", 5);
        assert_eq!(
            note.from.as_deref(),
            Some("\"<img src=x>\" <evil@example.test>")
        );
        let subject = note.subject.expect("a subject");
        assert!(
            subject.starts_with("<script> alert(1)</script> yyy"),
            "{subject}"
        );
        assert_eq!(subject.chars().count(), FIELD_MAX + 1, "cut, with its mark");
        let mut ledger = Ledger::default();
        let writes = ledger.note_forged(ForgedMail::from_head(b"To: a\r\n", "INBOX/8", 6));
        assert_eq!(writes, vec![Write::Probe(ledger.probe.clone())]);
        assert_eq!(
            ledger.probe.last_forged.as_ref().map(|f| f.seen_ms),
            Some(6)
        );
        assert_eq!(
            ledger
                .probe
                .last_forged
                .as_ref()
                .and_then(|f| f.from.clone()),
            None
        );
    }
}
