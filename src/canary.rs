//! The canary itself: the signed `X-Mailcanary` header and the body token.
//!
//! This module is pure: no clock, no randomness, no I/O. The caller supplies the id and the
//! `sent` time, which keeps every function here testable with fixed inputs.
//!
//! The signature covers a *canonical* rendering of the fields rather than the raw header bytes,
//! because relays are free to refold a long header line; a canary that was re-wrapped on its way
//! must still verify, while any change to a field's value must not.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the header that carries the signed canary fields.
pub const HEADER_NAME: &str = "X-Mailcanary";

/// Prefix of the line in the body that repeats the canary id, for people reading the mail.
pub const BODY_TOKEN_PREFIX: &str = "mailcanary-id: ";

/// Prefix of the body line that repeats the whole signed header value, so a canary whose
/// `X-Mailcanary` header a gateway stripped is still recognised, verified and timed.
pub const SIGNED_TOKEN_PREFIX: &str = "mailcanary: ";

/// How far into a body the signed token is looked for: the templates put it in the first text
/// part, well inside this; a mail that hides it deeper is not a canary of ours.
pub const BODY_TOKEN_WINDOW: usize = 4096;

/// The only header format version this build understands.
pub const VERSION: &str = "1";

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key canaries are signed with. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Wraps key material. An empty key is refused: it would make every signature forgeable.
    pub fn new(bytes: Vec<u8>) -> Option<SigningKey> {
        (!bytes.is_empty()).then_some(SigningKey(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<secret>)")
    }
}

/// The fields of one canary, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// Unique id (a 26-character ULID or a UUID).
    pub id: String,
    /// Name of the probe (mail path) that sent it.
    pub probe: String,
    /// Mail class it was shaped as.
    pub class: String,
    /// Per probe×class sequence number; a receiver sees gaps as loss.
    pub seq: u64,
    /// Unix milliseconds taken just before the SMTP connection was opened.
    pub sent_ms: u64,
    /// Id of the agent that sent it.
    pub agent: String,
}

impl Canary {
    /// The canonical text the signature covers: every field but `sig`, in header order.
    pub fn signed_text(&self) -> String {
        format!(
            "v={VERSION}; id={}; probe={}; class={}; seq={}; sent={}; agent={}",
            self.id, self.probe, self.class, self.seq, self.sent_ms, self.agent
        )
    }

    /// The full header value, `sig` included.
    pub fn header_value(&self, key: &SigningKey) -> String {
        let mut mac = key.mac();
        mac.update(self.signed_text().as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{}; sig={sig}", self.signed_text())
    }

    /// The lines placed in the body so the canary can be recognised without its header: the
    /// id for a human, then the signed header value (one line under 998 bytes, plain ASCII, so
    /// 7bit transport keeps it intact; a gateway that re-encodes it as quoted-printable is
    /// undone by [`find_body_token`]).
    pub fn body_token(&self, key: &SigningKey) -> String {
        format!(
            "{BODY_TOKEN_PREFIX}{}\r\n{SIGNED_TOKEN_PREFIX}{}",
            self.id,
            self.header_value(key)
        )
    }
}

/// A canary header as read from a mailbox: parsed, but not yet trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedCanary {
    /// The fields the header claims.
    pub canary: Canary,
    sig: Vec<u8>,
}

impl ClaimedCanary {
    /// Checks the signature in constant time; only a verified canary may be counted or deleted.
    pub fn verify(&self, key: &SigningKey) -> Result<&Canary, BadSignature> {
        let mut mac = key.mac();
        mac.update(self.canary.signed_text().as_bytes());
        mac.verify_slice(&self.sig)
            .map(|()| &self.canary)
            .map_err(|_| BadSignature)
    }
}

/// The signature does not match the fields: the mail is forged or was altered in transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("canary signature does not match its fields")]
pub struct BadSignature;

/// Why a header value is not a well-formed canary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// `v=` names a version this build does not know.
    #[error("unknown canary version {0:?}")]
    UnknownVersion(String),
    /// A required field is absent.
    #[error("missing field {0:?}")]
    Missing(&'static str),
    /// A field occurs twice.
    #[error("field {0:?} occurs twice")]
    Duplicate(String),
    /// A field this version does not define.
    #[error("unknown field {0:?}")]
    Unknown(String),
    /// A part that is not `key=value`.
    #[error("malformed part {0:?}, expected key=value")]
    Malformed(String),
    /// A field whose value is not acceptable.
    #[error("bad value {value:?} for field {field:?}")]
    BadValue {
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: String,
    },
}

/// Parses a header value (folded or not) into a claimed canary.
pub fn parse_header(value: &str) -> Result<ClaimedCanary, ParseError> {
    let unfolded = unfold(value);
    let mut fields: [Option<&str>; 8] = [None; 8];
    const NAMES: [&str; 8] = ["v", "id", "probe", "class", "seq", "sent", "agent", "sig"];
    for part in unfolded.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, val) = part
            .split_once('=')
            .ok_or_else(|| ParseError::Malformed(part.to_string()))?;
        let (key, val) = (key.trim(), val.trim());
        let slot = NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(key))
            .ok_or_else(|| ParseError::Unknown(key.to_string()))?;
        if fields[slot].replace(val).is_some() {
            return Err(ParseError::Duplicate(key.to_string()));
        }
    }
    let get = |i: usize| fields[i].ok_or(ParseError::Missing(NAMES[i]));
    let version = get(0)?;
    if version != VERSION {
        return Err(ParseError::UnknownVersion(version.to_string()));
    }
    let canary = Canary {
        id: checked("id", get(1)?, is_id)?,
        probe: checked("probe", get(2)?, is_label)?,
        class: checked("class", get(3)?, is_label)?,
        seq: number("seq", get(4)?)?,
        sent_ms: number("sent", get(5)?)?,
        agent: checked("agent", get(6)?, is_agent_id)?,
    };
    let sig_text = get(7)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig_text)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| ParseError::BadValue {
            field: "sig",
            value: sig_text.to_string(),
        })?;
    Ok(ClaimedCanary { canary, sig })
}

/// Finds the `X-Mailcanary` header in a raw header block and returns its unfolded value.
///
/// The block may be a whole message head or the answer to an IMAP `HEADER.FIELDS` fetch.
/// Only the first occurrence counts; a second canary header is not ours to interpret.
pub fn find_header(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if line.is_empty() {
                    break;
                }
                if let Some((name, rest)) = line.split_once(':')
                    && name.trim_end().eq_ignore_ascii_case(HEADER_NAME)
                {
                    value = Some(rest.to_string());
                }
            }
        }
    }
    value.map(|v| v.trim().to_string())
}

/// Finds the signed token in the first [`BODY_TOKEN_WINDOW`] bytes of a body and returns the
/// header value it carries (not yet verified: the caller judges it like a header).
///
/// The body is first searched as it is; if nothing parses there, once more with
/// quoted-printable undone (a gateway may re-encode a 7bit part: soft line breaks and `=3D`).
/// Decoding is not applied blindly, because the token itself contains `=` followed by hex
/// digits (`id=01…`) that a decoder would mangle.
pub fn find_body_token(body: &[u8]) -> Option<String> {
    let window = &body[..body.len().min(BODY_TOKEN_WINDOW)];
    let text = String::from_utf8_lossy(window);
    token_in(&text).or_else(|| token_in(&decode_quoted_printable(&text)))
}

fn token_in(text: &str) -> Option<String> {
    let marker = format!("{SIGNED_TOKEN_PREFIX}v=");
    text.match_indices(&marker).find_map(|(at, _)| {
        let rest = &text[at + SIGNED_TOKEN_PREFIX.len()..];
        let value: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || " =;_-.".contains(*c))
            .collect();
        let value = value.trim().to_string();
        parse_header(&value).is_ok().then_some(value)
    })
}

fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes header folding (CRLF or LF followed by white space).
fn unfold(value: &str) -> String {
    value.replace("\r\n", "").replace('\n', "")
}

fn checked(field: &'static str, value: &str, ok: fn(&str) -> bool) -> Result<String, ParseError> {
    if ok(value) {
        Ok(value.to_string())
    } else {
        Err(ParseError::BadValue {
            field,
            value: value.to_string(),
        })
    }
}

fn number(field: &'static str, value: &str) -> Result<u64, ParseError> {
    value
        .parse()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ParseError::BadValue {
            field,
            value: value.to_string(),
        })
}

/// A probe or class name: the label-value alphabet `[a-z0-9_-]+`.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// An agent id: host-name characters `[A-Za-z0-9._-]+`.
pub fn is_agent_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A ULID (26 Crockford base-32 characters) or a hyphenated UUID.
fn is_id(s: &str) -> bool {
    let ulid = s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)));
    let uuid = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ulid || uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::new(b"test key material".to_vec()).unwrap()
    }

    fn canary() -> Canary {
        Canary {
            id: "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C".into(),
            probe: "example-local".into(),
            class: "interpersonal".into(),
            seq: 42,
            sent_ms: 1_795_000_000_123,
            agent: "paris-1".into(),
        }
    }

    #[test]
    fn round_trip_verifies() {
        let header = canary().header_value(&key());
        let claimed = parse_header(&header).unwrap();
        assert_eq!(claimed.verify(&key()).unwrap(), &canary());
    }

    #[test]
    fn header_has_design_shape() {
        let header = canary().header_value(&key());
        assert!(header.starts_with(
            "v=1; id=01JDQ8ZK3V6R9X1T2Y3Z4A5B6C; probe=example-local; class=interpersonal; \
             seq=42; sent=1795000000123; agent=paris-1; sig="
        ));
        assert_eq!(header.rsplit_once("sig=").unwrap().1.len(), 43);
    }

    #[test]
    fn every_tampered_field_fails_verification() {
        let header = canary().header_value(&key());
        let tampered = [
            (
                "id=01JDQ8ZK3V6R9X1T2Y3Z4A5B6C",
                "id=01JDQ8ZK3V6R9X1T2Y3Z4A5B6D",
            ),
            ("probe=example-local", "probe=example-locam"),
            ("class=interpersonal", "class=bulk"),
            ("seq=42", "seq=43"),
            ("sent=1795000000123", "sent=1795000000124"),
            ("agent=paris-1", "agent=paris-2"),
        ];
        for (from, to) in tampered {
            let forged = header.replace(from, to);
            assert_ne!(forged, header, "{from} not found");
            let claimed = parse_header(&forged).unwrap();
            assert_eq!(claimed.verify(&key()), Err(BadSignature), "{from} → {to}");
        }
        let sig = header.rsplit_once("sig=").unwrap().1;
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bytes[0] ^= 1;
        let forged = header.replace(sig, &URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(
            parse_header(&forged).unwrap().verify(&key()),
            Err(BadSignature)
        );
    }

    #[test]
    fn other_key_fails_verification() {
        let header = canary().header_value(&key());
        let other = SigningKey::new(b"another key".to_vec()).unwrap();
        assert_eq!(
            parse_header(&header).unwrap().verify(&other),
            Err(BadSignature)
        );
    }

    #[test]
    fn folded_header_still_verifies() {
        let header = canary().header_value(&key());
        let folded = header
            .replace("; class=", ";\r\n\tclass=")
            .replace("; sig=", ";\r\n sig=");
        let raw = format!("Subject: hi\r\n{HEADER_NAME}: {folded}\r\nFrom: a@b\r\n\r\nbody");
        let found = find_header(raw.as_bytes()).unwrap();
        let claimed = parse_header(&found).unwrap();
        assert_eq!(claimed.verify(&key()).unwrap(), &canary());
    }

    #[test]
    fn find_header_is_case_insensitive_and_stops_at_body() {
        let raw = b"x-mailcanary: v=1; id=A\r\nX-Other: 1\r\n\r\nX-Mailcanary: no\r\n";
        assert_eq!(find_header(raw).as_deref(), Some("v=1; id=A"));
        assert_eq!(
            find_header(b"Subject: x\r\n\r\nX-Mailcanary: v=1\r\n"),
            None
        );
        assert_eq!(find_header(b"X-Mailcanary-Other: v=1\r\n"), None);
        assert_eq!(find_header(b""), None);
    }

    #[test]
    fn unknown_version_is_refused() {
        let header = canary().header_value(&key()).replace("v=1;", "v=2;");
        assert_eq!(
            parse_header(&header),
            Err(ParseError::UnknownVersion("2".into()))
        );
    }

    #[test]
    fn bad_inputs_are_refused_with_a_reason() {
        let good = canary().header_value(&key());
        let cases: Vec<(String, ParseError)> = vec![
            (String::new(), ParseError::Missing("v")),
            (good.replace("; seq=42", ""), ParseError::Missing("seq")),
            (
                format!("{good}; seq=1"),
                ParseError::Duplicate("seq".into()),
            ),
            (
                format!("{good}; extra=1"),
                ParseError::Unknown("extra".into()),
            ),
            (
                good.replace("seq=42", "seq42"),
                ParseError::Malformed("seq42".into()),
            ),
            (
                good.replace("seq=42", "seq=-1"),
                ParseError::BadValue {
                    field: "seq",
                    value: "-1".into(),
                },
            ),
            (
                good.replace("seq=42", "seq=+42"),
                ParseError::BadValue {
                    field: "seq",
                    value: "+42".into(),
                },
            ),
            (
                good.replace("probe=example-local", "probe=Example"),
                ParseError::BadValue {
                    field: "probe",
                    value: "Example".into(),
                },
            ),
            (
                good.replace("id=01JDQ8ZK3V6R9X1T2Y3Z4A5B6C", "id=short"),
                ParseError::BadValue {
                    field: "id",
                    value: "short".into(),
                },
            ),
            (
                good.replace("agent=paris-1", "agent=a b"),
                ParseError::BadValue {
                    field: "agent",
                    value: "a b".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_header(&input), Err(want), "input {input:?}");
        }
        let truncated_sig = good[..good.len() - 2].to_string();
        assert!(matches!(
            parse_header(&truncated_sig),
            Err(ParseError::BadValue { field: "sig", .. })
        ));
    }

    #[test]
    fn uuid_ids_are_accepted() {
        let mut c = canary();
        c.id = "123e4567-e89b-12d3-a456-426614174000".into();
        let claimed = parse_header(&c.header_value(&key())).unwrap();
        assert!(claimed.verify(&key()).is_ok());
    }

    #[test]
    fn key_is_never_printed() {
        assert_eq!(format!("{:?}", key()), "SigningKey(<secret>)");
        assert!(SigningKey::new(Vec::new()).is_none());
    }

    #[test]
    fn body_token_names_the_id_and_carries_the_signed_fields() {
        let k = key();
        let token = canary().body_token(&k);
        assert!(token.starts_with("mailcanary-id: 01JDQ8ZK3V6R9X1T2Y3Z4A5B6C\r\nmailcanary: v=1;"));
        assert_eq!(
            find_body_token(token.as_bytes()).as_deref(),
            Some(canary().header_value(&k).as_str())
        );
    }

    #[test]
    fn body_token_is_found_in_html_and_after_quoted_printable_reencoding() {
        let k = key();
        let value = canary().header_value(&k);
        let html = format!("<p>Hello</p>\r\n<p>mailcanary: {value}</p></body>");
        assert_eq!(
            find_body_token(html.as_bytes()).as_deref(),
            Some(value.as_str())
        );
        // What a gateway re-encoding the part as quoted-printable makes of it.
        let qp = format!("mailcanary: {}", value.replace('=', "=3D"));
        let (a, b) = qp.split_at(70);
        let wrapped = format!("Hi,\r\n{a}=\r\n{b}\r\n");
        assert_eq!(
            find_body_token(wrapped.as_bytes()).as_deref(),
            Some(value.as_str())
        );
    }

    #[test]
    fn body_token_is_only_looked_for_near_the_start() {
        let value = canary().header_value(&key());
        let late = format!("{}mailcanary: {value}\r\n", "x".repeat(BODY_TOKEN_WINDOW));
        assert_eq!(find_body_token(late.as_bytes()), None);
        assert_eq!(find_body_token(b"mailcanary: v=1; garbage"), None);
        assert_eq!(find_body_token(b""), None);
        assert_eq!(find_body_token(b"=\r\n=4"), None);
    }
}
