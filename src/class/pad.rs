//! Growing a message to a configured size with a realistic attachment.
//!
//! Size-based delays are real (large mail is scanned longer, queued separately, throttled), so a
//! class can ask for, say, 2 MiB. The message becomes multipart/mixed: the template's body first,
//! then a base64 "statement" PDF whose length is solved so the whole message lands within a few
//! bytes of the target. The bytes are pseudo-random from the canary id: incompressible like a
//! real attachment, yet deterministic, so this stays pure.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::Draft;
use crate::canary::Canary;

/// Raw bytes per base64 line: 57 bytes → 76 characters, plus CRLF.
const RAW_PER_LINE: usize = 57;
const LINE: usize = 78;

/// Pads `draft` to about `size` bytes. A message already that large is left as it is.
pub(super) fn to_size(draft: &mut Draft, canary: &Canary, size: u64) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let boundary = format!("=_mailcanary_mixed_{}", canary.id);
    let inner_type = draft
        .get("Content-Type")
        .unwrap_or("text/plain")
        .to_string();
    let inner_encoding = draft.get("Content-Transfer-Encoding").map(str::to_string);
    let mut first = format!("--{boundary}\r\nContent-Type: {inner_type}\r\n");
    if let Some(enc) = &inner_encoding {
        first.push_str(&format!("Content-Transfer-Encoding: {enc}\r\n"));
    }
    first.push_str("\r\n");
    first.push_str(&draft.body);
    let name = format!("statement-{}-{}.pdf", canary.probe, canary.seq);
    let attachment = format!(
        "\r\n--{boundary}\r\nContent-Type: application/pdf; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    let closing = format!("--{boundary}--\r\n");

    let mut headers = draft.headers.clone();
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("Content-Transfer-Encoding"));
    let mut padded = Draft {
        headers,
        body: String::new(),
    };
    padded.set(
        "Content-Type",
        &format!("multipart/mixed; boundary=\"{boundary}\""),
    );
    let fixed = padded.head_len() + first.len() + attachment.len() + closing.len();
    if size <= fixed {
        return;
    }
    let raw = raw_len_for(size - fixed);
    padded.body = format!(
        "{first}{attachment}{}{closing}",
        encoded(&pseudo_pdf(canary, raw))
    );
    *draft = padded;
}

/// Encoded length of `raw` bytes: full lines of 76 characters and CRLF, the last one shorter.
fn encoded_len(raw: usize) -> usize {
    if raw == 0 {
        return 0;
    }
    let chars = raw.div_ceil(3) * 4;
    chars + chars.div_ceil(76) * 2
}

/// The largest raw length whose encoding fits in `budget` bytes.
fn raw_len_for(budget: usize) -> usize {
    let mut raw = budget / LINE * RAW_PER_LINE;
    while encoded_len(raw + 1) <= budget {
        raw += 1;
    }
    raw
}

fn encoded(raw: &[u8]) -> String {
    let text = STANDARD.encode(raw);
    let mut out = String::with_capacity(encoded_len(raw.len()));
    for line in text.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// `len` bytes that start like a PDF and continue as incompressible noise seeded by the id.
fn pseudo_pdf(canary: &Canary, len: usize) -> Vec<u8> {
    let mut seed = canary.id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    out.truncate(len);
    while out.len() < len {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let word = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word[..take]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_length_is_exact() {
        for raw in [0, 1, 2, 3, 56, 57, 58, 1000, 65_536] {
            assert_eq!(
                encoded(&vec![7u8; raw]).len(),
                encoded_len(raw),
                "raw {raw}"
            );
        }
    }

    #[test]
    fn raw_length_fills_the_budget_closely() {
        for budget in [10, 78, 79, 1_000, 2 * 1024 * 1024] {
            let raw = raw_len_for(budget);
            assert!(
                encoded_len(raw) <= budget && budget - encoded_len(raw) <= 6,
                "budget {budget}"
            );
        }
    }
}
