//! What a TLS server chose, read from its ServerHello as it crossed the wire.
//!
//! The TLS library the agent submits with (native-tls under lettre) does not say which
//! protocol version and cipher suite a connection negotiated, yet "the submission server fell
//! back to TLS 1.2" or "to a CBC suite" is worth knowing. The agent copies the bytes the server
//! sends, up to [`MAX_INBOUND`], and [`scan`] finds the server's choice in them: the
//! ServerHello is the server's first handshake message, and it travels in the clear in every
//! TLS version (RFC 5246 §7.4.1.3, RFC 8446 §4.1.3).
//!
//! The bytes are the server's to write, so nothing is trusted: every length is checked
//! against what is there, nothing is indexed unchecked, and the scan never looks past
//! [`MAX_INBOUND`]. Pure: no I/O, no clock.

/// Most bytes of what the server sent that are looked at; the observer stops copying past
/// this. A ServerHello comes within the first few hundred bytes after the SMTP greeting and
/// `STARTTLS` exchange; a server that has not sent one by 16 KiB is not going to.
pub const MAX_INBOUND: usize = 16 * 1024;

/// TLS record content type of handshake messages.
const HANDSHAKE: u8 = 22;

/// Handshake message type of a ServerHello.
const SERVER_HELLO: u8 = 2;

/// Largest record fragment TLS allows (2^14 bytes of plaintext; a ServerHello is never
/// encrypted or compressed).
const MAX_FRAGMENT: usize = 1 << 14;

/// The `supported_versions` extension (RFC 8446 §4.2.1): the version a TLS 1.3 server chose.
const SUPPORTED_VERSIONS: u16 = 43;

/// TLS 1.3's wire code, for a HelloRetryRequest that omits `supported_versions`.
const TLS13: u16 = 0x0304;

/// The `random` of a HelloRetryRequest (RFC 8446 §4.1.3: SHA-256 of "HelloRetryRequest").
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// What the server chose, as wire codes (see [`version_name`], [`cipher_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerHello {
    /// The protocol version: `supported_versions` when the server sent it (TLS 1.3), else
    /// the hello's `legacy_version`.
    pub version: u16,
    /// The cipher suite.
    pub cipher: u16,
    /// Whether this was a HelloRetryRequest: the server asked the client to try again with
    /// another key share, a round trip more. Its version and suite are those of the real
    /// ServerHello to come (RFC 8446 §4.1.4 makes them match).
    pub hello_retry: bool,
}

/// The result of looking at the bytes a server sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// No ServerHello yet, and the bytes may still bring one.
    NeedMore,
    /// The server's choice.
    Found(ServerHello),
    /// There is none to find: the bytes are not TLS, an alert or another message came first,
    /// a length does not fit, or [`MAX_INBOUND`] bytes have passed without one.
    NotFound,
}

/// Why a look came back without a ServerHello.
enum Stop {
    /// The bytes end before the ServerHello does.
    Short,
    /// The bytes cannot be, or cannot lead to, a ServerHello.
    Malformed,
}

/// Looks for the server's ServerHello in `inbound`: everything the server sent from the start
/// of the connection, plaintext SMTP first for `STARTTLS`, or TLS records right away for
/// implicit TLS. Reads at most [`MAX_INBOUND`] bytes, each call from the start.
pub fn scan(inbound: &[u8]) -> Scan {
    let bytes = inbound.get(..MAX_INBOUND).unwrap_or(inbound);
    match server_hello(bytes) {
        Ok(hello) => Scan::Found(hello),
        Err(Stop::Short) if bytes.len() < MAX_INBOUND => Scan::NeedMore,
        Err(_) => Scan::NotFound,
    }
}

fn server_hello(bytes: &[u8]) -> Result<ServerHello, Stop> {
    let start = records_start(bytes)?;
    let records = bytes.get(start..).unwrap_or_default();
    let message = first_handshake_message(records)?;
    parse(&message)
}

/// Offset of the first TLS record: the first byte 22 (plaintext SMTP is ASCII text and never
/// contains it), which must start a line. Anything else that is not text before it (an alert,
/// byte 21, say) means this is not a connection where a ServerHello comes first.
fn records_start(bytes: &[u8]) -> Result<usize, Stop> {
    for (at, &b) in bytes.iter().enumerate() {
        if b == HANDSHAKE {
            let line_start = at == 0 || bytes.get(at - 1) == Some(&b'\n');
            return if line_start {
                Ok(at)
            } else {
                Err(Stop::Malformed)
            };
        }
        let text = matches!(b, b'\t' | b'\n' | b'\r' | b' '..=b'~' | 0x80..);
        if !text {
            return Err(Stop::Malformed);
        }
    }
    Err(Stop::Short)
}

/// The first handshake message (type byte, 24-bit length, body), reassembled from as many
/// handshake records as it spans. A record cut short by the end of the bytes still gives what
/// it has, so a ServerHello at the head of a large record is found before the record ends.
fn first_handshake_message(records: &[u8]) -> Result<Vec<u8>, Stop> {
    let mut message = Vec::new();
    let mut at = 0;
    loop {
        let header = records.get(at..at + 5).ok_or(Stop::Short)?;
        let [kind, major, _minor, len_hi, len_lo] = header else {
            return Err(Stop::Short);
        };
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo]));
        if *kind != HANDSHAKE || *major != 3 || len == 0 || len > MAX_FRAGMENT {
            return Err(Stop::Malformed);
        }
        let fragment_end = (at + 5 + len).min(records.len());
        let fragment = records.get(at + 5..fragment_end).unwrap_or_default();
        message.extend_from_slice(fragment);
        if let Some(total) = complete_length(&message)? {
            message.truncate(total);
            return Ok(message);
        }
        if fragment.len() < len {
            return Err(Stop::Short);
        }
        at += 5 + len;
    }
}

/// The length of the first handshake message once `message` holds all of it; `None` while it
/// does not yet. A message that is not a ServerHello, or could never fit in [`MAX_INBOUND`],
/// ends the look.
fn complete_length(message: &[u8]) -> Result<Option<usize>, Stop> {
    if message.first().is_some_and(|&kind| kind != SERVER_HELLO) {
        return Err(Stop::Malformed);
    }
    let Some(&[_, a, b, c]) = message.get(..4) else {
        return Ok(None);
    };
    let total = 4 + usize::from(a) * 65_536 + usize::from(b) * 256 + usize::from(c);
    if total > MAX_INBOUND {
        return Err(Stop::Malformed);
    }
    Ok((message.len() >= total).then_some(total))
}

/// Reads a ServerHello message (handshake header included, its length already checked).
fn parse(message: &[u8]) -> Result<ServerHello, Stop> {
    let mut r = Reader(message.get(4..).unwrap_or_default());
    let legacy_version = r.u16()?;
    if legacy_version >> 8 != 3 {
        return Err(Stop::Malformed);
    }
    let hello_retry = r.take(32)? == HELLO_RETRY_RANDOM;
    let session_id_len = usize::from(r.u8()?);
    if session_id_len > 32 {
        return Err(Stop::Malformed);
    }
    r.take(session_id_len)?;
    let cipher = r.u16()?;
    let _compression = r.u8()?;
    let mut supported_version = None;
    // TLS 1.2 and before may end the hello here, without an extensions block.
    if !r.0.is_empty() {
        let len = usize::from(r.u16()?);
        let mut extensions = Reader(r.take(len)?);
        if !r.0.is_empty() {
            return Err(Stop::Malformed);
        }
        while !extensions.0.is_empty() {
            let kind = extensions.u16()?;
            let len = usize::from(extensions.u16()?);
            let mut data = Reader(extensions.take(len)?);
            if kind == SUPPORTED_VERSIONS {
                if len != 2 {
                    return Err(Stop::Malformed);
                }
                supported_version = supported_version.or(Some(data.u16()?));
            }
        }
    }
    let fallback = if hello_retry { TLS13 } else { legacy_version };
    Ok(ServerHello {
        version: supported_version.unwrap_or(fallback),
        cipher,
        hello_retry,
    })
}

/// Big-endian reads off the front of a slice; running out is malformed (the message's length
/// was checked complete, so a field past its end is a lie, not a wait).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let (taken, rest) = self.0.split_at_checked(n).ok_or(Stop::Malformed)?;
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        let [b] = self.take(1)? else {
            return Err(Stop::Malformed);
        };
        Ok(*b)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        let [a, b] = self.take(2)? else {
            return Err(Stop::Malformed);
        };
        Ok(u16::from_be_bytes([*a, *b]))
    }
}

/// A protocol version's name as OpenSSL and Postfix's `Received:` write it (`TLSv1.3`);
/// `0x%04x` for a code without one.
pub fn version_name(code: u16) -> String {
    match code {
        0x0300 => "SSLv3".to_string(),
        0x0301 => "TLSv1.0".to_string(),
        0x0302 => "TLSv1.1".to_string(),
        0x0303 => "TLSv1.2".to_string(),
        0x0304 => "TLSv1.3".to_string(),
        _ => format!("0x{code:04x}"),
    }
}

/// The IANA names of the suites servers commonly choose: all of TLS 1.3's, the AEAD suites of
/// TLS 1.2, and the CBC ones still found on older servers.
const CIPHERS: [(u16, &str); 31] = [
    (0x1301, "TLS_AES_128_GCM_SHA256"),
    (0x1302, "TLS_AES_256_GCM_SHA384"),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256"),
    (0x1304, "TLS_AES_128_CCM_SHA256"),
    (0x1305, "TLS_AES_128_CCM_8_SHA256"),
    (0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xCCAA, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009F, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    (0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x003C, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
];

/// A cipher suite's IANA name (`TLS_AES_256_GCM_SHA384`); `0x%04x` for a code not in the
/// table of common ones.
pub fn cipher_name(code: u16) -> String {
    CIPHERS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("0x{code:04x}"), |(_, name)| (*name).to_string())
}

#[cfg(test)]
mod tests;
