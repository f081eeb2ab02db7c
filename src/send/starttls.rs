//! The plaintext part of a STARTTLS submission, spoken by us: greeting, `EHLO`, `STARTTLS`.
//!
//! lettre would run it and then secure the connection with a TLS connector of its own, which
//! parses the system's trust store again (about 1.1 MB per connector, and lettre's are per
//! server name). Speaking these three steps ourselves lets SMTP use the connector the mailboxes
//! use, one per trust setting, and records the greeting and the capabilities in the transcript.
//! lettre is then handed the secured stream with the greeting replayed in front of it (it
//! expects one; RFC 3207 has none after STARTTLS) and sends its `EHLO` inside TLS, as it must.

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::wire::Wire;
use super::{SendError, SendStage};
use crate::transcript::Transcript;

/// Longest reply line read (RFC 5321 allows 512 bytes).
const MAX_LINE: usize = 1024;
/// Most lines of one reply (an EHLO lists a capability per line).
const MAX_LINES: usize = 64;

/// What the plaintext part left: the connection, ready for the TLS handshake, and the
/// greeting's first line to replay to lettre.
pub struct Plaintext {
    pub wire: Wire<TcpStream>,
    pub greeting: String,
}

/// Reads the greeting, says `EHLO hello`, checks that `STARTTLS` is offered and asks for it.
/// Anything the server sent after its `220` to `STARTTLS` is dropped unread: bytes injected
/// before the handshake must never be taken as answers inside it.
pub async fn plaintext(
    wire: Wire<TcpStream>,
    hello: &str,
    endpoint: &impl std::fmt::Display,
    t: &mut Transcript,
) -> Result<Plaintext, SendError> {
    let failed = |stage, message: String| SendError::new(stage, format!("{endpoint}: {message}"));
    let mut conn = BufReader::new(wire);
    let greeting = reply(&mut conn, t)
        .await
        .map_err(|e| failed(SendStage::Connect, e))?;
    if greeting.code != 220 {
        let refused = format!("the server refused the session {}", greeting.said());
        return Err(failed(SendStage::Connect, refused));
    }
    let ehlo = format!("EHLO {hello}");
    let offered = command(&mut conn, t, &ehlo)
        .await
        .map_err(|e| failed(SendStage::Connect, e))?;
    let starttls = offered.code == 250
        && offered.lines.iter().any(|l| {
            l.get(4..)
                .is_some_and(|c| c.eq_ignore_ascii_case("STARTTLS"))
        });
    if offered.code != 250 {
        let refused = format!("EHLO refused {}", offered.said());
        return Err(failed(SendStage::Connect, refused));
    }
    if !starttls {
        let message = "does not offer STARTTLS, which the config requires".to_string();
        return Err(failed(SendStage::Tls, message));
    }
    let ready = command(&mut conn, t, "STARTTLS")
        .await
        .map_err(|e| failed(SendStage::Tls, e))?;
    if ready.code != 220 {
        return Err(failed(
            SendStage::Tls,
            format!("STARTTLS refused {}", ready.said()),
        ));
    }
    Ok(Plaintext {
        wire: conn.into_inner(),
        greeting: greeting.lines.first().cloned().unwrap_or_default(),
    })
}

/// A reply: its code and its lines as the server wrote them.
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// `(421): 4.3.2 Service shutting down`, as lettre words a negative reply.
    fn said(&self) -> String {
        let text: Vec<&str> = self
            .lines
            .iter()
            .map(|l| l.get(4..).unwrap_or(""))
            .collect();
        format!("({}): {}", self.code, text.join(" "))
    }
}

async fn command(
    conn: &mut BufReader<Wire<TcpStream>>,
    t: &mut Transcript,
    line: &str,
) -> Result<Reply, String> {
    t.client(line);
    let wire = conn.get_mut();
    wire.write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    wire.flush().await.map_err(|e| e.to_string())?;
    reply(conn, t).await
}

/// Reads one (multi-line) reply, bounded in lines and bytes.
async fn reply(conn: &mut BufReader<Wire<TcpStream>>, t: &mut Transcript) -> Result<Reply, String> {
    let mut lines = Vec::new();
    loop {
        let mut raw = Vec::new();
        let read = (&mut *conn)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut raw)
            .await
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the server closed the connection".into());
        }
        if !raw.ends_with(b"\n") {
            return Err("a reply line longer than 1,024 bytes, or cut off".into());
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        t.server(&line);
        let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        match code {
            Some(code) if last => return Ok(Reply { code, lines }),
            Some(_) if lines.len() < MAX_LINES => {}
            Some(_) => return Err(format!("a reply of more than {MAX_LINES} lines")),
            None => return Err(format!("not an SMTP reply: {:?}", lines.last())),
        }
    }
}
