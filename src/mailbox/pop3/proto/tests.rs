use super::ProtoError::*;
use super::*;

/// `None`: a single-line reply; `Some(cap)`: a multi-line one.
fn parse(multi: Option<usize>, bytes: &[u8]) -> Result<Option<(Reply, usize)>, ProtoError> {
    ReplyParser::new(multi).advance(bytes)
}

fn reply(ok: bool, text: &str, body: &[u8]) -> Reply {
    let (text, body) = (text.to_string(), body.to_vec());
    Reply {
        ok,
        text,
        body,
        truncated: false,
    }
}

/// A server's side of a whole session, and the replies the client expects to read from it.
fn transcript() -> (&'static [u8], Vec<(Option<usize>, Reply)>) {
    let wire = b"+OK Dovecot (Debian) ready.\r\n\
        +OK\r\nCAPA\r\nTOP\r\nUIDL\r\nSTLS\r\nSASL PLAIN LOGIN\r\n.\r\n\
        +OK Logged in.\r\n\
        +OK\r\n1 000a1b2c\r\n2 000a1b2d\r\n.\r\n\
        +OK\r\nSubject: dots\r\nX-Mailcanary: v=1;\r\n\tid=A\r\n\r\n.\r\n\
        +OK headers follow\r\n..leading dot\r\n...\r\n\r\nX: y\r\n\r\n.\r\n\
        -ERR no such message\r\n\
        +OK\r\n\
        +OK Logging out.\r\n";
    let (capa, uidl, top) = (Some(CAPA_MAX), Some(UIDL_MAX), Some(TOP_MAX));
    let capa_body = b"CAPA\r\nTOP\r\nUIDL\r\nSTLS\r\nSASL PLAIN LOGIN\r\n";
    let head = b"Subject: dots\r\nX-Mailcanary: v=1;\r\n\tid=A\r\n\r\n";
    let dotted = b".leading dot\r\n..\r\n\r\nX: y\r\n\r\n";
    let expected = vec![
        (None, reply(true, "Dovecot (Debian) ready.", b"")),
        (capa, reply(true, "", capa_body)),
        (None, reply(true, "Logged in.", b"")),
        (uidl, reply(true, "", b"1 000a1b2c\r\n2 000a1b2d\r\n")),
        (top, reply(true, "", head)),
        (top, reply(true, "headers follow", dotted)),
        (top, reply(false, "no such message", b"")),
        (None, reply(true, "", b"")),
        (None, reply(true, "Logging out.", b"")),
    ];
    (wire, expected)
}

#[test]
fn a_transcript_parses_the_same_in_chunks_of_every_size() {
    let (wire, expected) = transcript();
    for chunk in 1..=512 {
        let (mut fed, mut buf) = (0, Vec::new());
        for (i, (multi, want)) in expected.iter().enumerate() {
            let mut parser = ReplyParser::new(*multi);
            let (reply, used) = loop {
                if let Some(done) = parser.advance(&buf).unwrap() {
                    break done;
                }
                assert!(fed < wire.len(), "chunk {chunk}: reply {i} never completed");
                let next = (fed + chunk).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            };
            assert_eq!(&reply, want, "chunk {chunk}, reply {i}");
            buf.drain(..used);
        }
        assert!(
            buf.is_empty() && fed == wire.len(),
            "chunk {chunk}: bytes left"
        );
    }
}

#[test]
fn incomplete_replies_ask_for_more() {
    let cases: [(&[u8], Option<usize>); 7] = [
        (b"", None),
        (b"+O", None),
        (b"+OK ready\r", None),
        (b"+OK\r\n", Some(100)),
        (b"+OK\r\nline\r\n", Some(100)),
        (b"+OK\r\nline\r\n.", Some(100)),
        (b"+OK\r\nline\r\n.\r", Some(100)),
    ];
    for (bytes, multi) in cases {
        assert_eq!(parse(multi, bytes), Ok(None), "{}", shown(bytes));
    }
}

#[test]
fn a_reply_takes_only_its_own_bytes() {
    let done = parse(None, b"+OK\r\n+OK next\r\n").unwrap();
    assert_eq!(done, Some((reply(true, "", b""), 5)));
    // -ERR to a multi-line command has no body: the next line is another reply.
    let done = parse(Some(100), b"-ERR no\r\n+OK\r\n.\r\n").unwrap();
    assert_eq!(done, Some((reply(false, "no", b""), 9)));
}

#[test]
fn bad_replies_are_refused_with_a_reason() {
    let long_status = [b"+OK ".as_slice(), &[b'a'; STATUS_LINE_MAX]].concat();
    let long_body = [b"+OK\r\n".as_slice(), &[b'a'; 200], b"\r\n.\r\n"].concat();
    let bad = |s: &str| BadStatus(s.to_string());
    let cases: Vec<(&[u8], Option<usize>, ProtoError)> = vec![
        (b"HELLO\r\n", None, bad("HELLO")),
        (b"\r\n", None, bad("")),
        (b"+OKAY\r\n", None, bad("+OKAY")),
        (b"+ok\r\n", None, bad("+ok")),
        (b"-ERRor\r\n", None, bad("-ERRor")),
        (b"\x00\xff\r\n", None, bad("\\x00\\xff")),
        (b"* OK IMAP4rev1\r\n", None, bad("* OK IMAP4rev1")),
        (b"HELLO\r\n", Some(100), bad("HELLO")),
        (b"+OK hi\n", None, BareLf),
        (b"\n", None, BareLf),
        (b"+OK\r\nline\n.\r\n", Some(100), BareLf),
        (&long_status, None, LineTooLong(STATUS_LINE_MAX)),
        (&long_body, Some(100), BodyTooLong(100)),
        (
            b"+OK\r\n0123456789\r\n0123456789\r\n.\r\n",
            Some(20),
            BodyTooLong(20),
        ),
    ];
    for (bytes, multi, want) in cases {
        assert_eq!(parse(multi, bytes), Err(want), "{}", shown(bytes));
    }
}

#[test]
fn a_sasl_challenge_is_a_refusal_of_the_token() {
    // XOAUTH2 and OAUTHBEARER report a refused token as a challenge before their -ERR.
    for bytes in [&b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"[..], b"+\r\n", b"+ \r\n"] {
        let (reply, _) = parse(None, bytes).unwrap().unwrap();
        assert!(!reply.ok, "{}", shown(bytes));
        assert!(reply.text.contains("SASL challenge"), "{}", reply.text);
    }
}

#[test]
fn err_replies_become_refusals_with_the_server_text() {
    let (reply, _) = parse(None, b"-ERR [AUTH] Authentication failed.\r\n")
        .unwrap()
        .unwrap();
    let want = Refused("[AUTH] Authentication failed.".into());
    assert_eq!(reply.accepted(), Err(want));
    let (reply, _) = parse(None, b"-ERR\r\n").unwrap().unwrap();
    assert_eq!(reply.accepted(), Err(Refused(String::new())));
}

#[test]
fn a_status_line_at_the_cap_is_accepted() {
    let mut line = b"+OK ".to_vec();
    line.resize(STATUS_LINE_MAX - 2, b'a');
    line.extend_from_slice(b"\r\n");
    let (reply, used) = parse(None, &line).unwrap().unwrap();
    assert_eq!(
        (reply.text.len(), used),
        (STATUS_LINE_MAX - 6, STATUS_LINE_MAX)
    );
}

#[test]
fn commands_have_their_wire_forms() {
    let plain = Command::AuthPlain {
        user: "box@example.test",
        pass: "secret",
    };
    let cases: [(Command, &[u8]); 9] = [
        (Command::Capa, b"CAPA\r\n"),
        (Command::Stls, b"STLS\r\n"),
        (
            Command::User("box14@example.test"),
            b"USER box14@example.test\r\n",
        ),
        (Command::Pass("pass word"), b"PASS pass word\r\n"),
        (plain, b"AUTH PLAIN AGJveEBleGFtcGxlLnRlc3QAc2VjcmV0\r\n"),
        (Command::Uidl, b"UIDL\r\n"),
        (Command::Top { msg: 7, lines: 0 }, b"TOP 7 0\r\n"),
        (Command::Dele(12), b"DELE 12\r\n"),
        (Command::Quit, b"QUIT\r\n"),
    ];
    for (command, wire) in cases {
        assert_eq!(command.wire().unwrap(), wire, "{command:?}");
    }
}

#[test]
fn arguments_cannot_smuggle_commands() {
    let plain = |user, pass| Command::AuthPlain { user, pass };
    let cases = [
        Command::User("a\r\nDELE 1"),
        Command::Pass("x\nDELE 1"),
        Command::Pass("x\r"),
        plain("a\0b", "p"),
        plain("a", "p\0"),
    ];
    for command in cases {
        assert_eq!(command.wire(), Err(BadArgument(command.name())));
    }
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let pass = "hunter2";
    let token = Command::AuthToken {
        mechanism: "XOAUTH2",
        response: "user=u\x01auth=Bearer hunter2\x01\x01",
    };
    let shown = format!(
        "{:?} {:?} {} {:?} {}",
        Command::Pass(pass),
        Command::AuthPlain { user: "u", pass },
        Command::Pass("hunter2\n").wire().unwrap_err(),
        token,
        token.name()
    );
    assert!(!shown.contains(pass), "{shown}");
    assert!(shown.contains("AUTH XOAUTH2 <redacted>"), "{shown}");
    let wire = String::from_utf8(token.wire().unwrap()).unwrap();
    assert_eq!(
        wire,
        "AUTH XOAUTH2 dXNlcj11AWF1dGg9QmVhcmVyIGh1bnRlcjIBAQ==\r\n"
    );
}

#[test]
fn capabilities_are_read_case_insensitively() {
    let both = Capabilities {
        stls: true,
        sasl_plain: true,
    };
    let dovecot = b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n\
        AUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n";
    assert_eq!(capabilities(dovecot), both);
    assert_eq!(capabilities(b"stls\r\nsasl login plain\r\n"), both);
    let none = capabilities(b"SASL LOGIN PLAINX\r\nX-STLS\r\nUSER\r\n");
    assert_eq!(none, Capabilities::default());
    assert_eq!(capabilities(b""), Capabilities::default());
}

#[test]
fn uidl_listings_are_read_in_order() {
    let body = b"1 a0b1c2\r\n2 ~!x-Y_z\r\n10 3\r\n";
    let want = [(1, "a0b1c2"), (2, "~!x-Y_z"), (10, "3")].map(|(n, u)| (n, u.to_string()));
    assert_eq!(uidl_listing(body), Ok(want.to_vec()));
    assert_eq!(uidl_listing(b""), Ok(vec![]));
}

#[test]
fn bad_uidl_listings_are_refused() {
    let uid = "u".repeat(UID_MAX + 1);
    let long = format!("1 {uid}\r\n");
    let bad = |s: &str| BadListing(s.to_string());
    let cases: Vec<(&[u8], ProtoError)> = vec![
        (b"1\r\n", bad("1")),
        (b"x abc\r\n", bad("x abc")),
        (b"0 abc\r\n", bad("0 abc")),
        (b"+1 abc\r\n", bad("+1 abc")),
        (b"1 a b\r\n", bad("1 a b")),
        (b"1 \r\n", bad("1 ")),
        (b"1 a\xffb\r\n", bad("1 a\\xffb")),
        (b"1 abc\r\n1 abd\r\n", bad("1 abd")),
        (b"1 abc\r\n2 abc\r\n", DuplicateUid("abc".into())),
        (
            long.as_bytes(),
            BadListing(shown(format!("1 {uid}").as_bytes())),
        ),
    ];
    for (body, want) in cases {
        assert_eq!(uidl_listing(body), Err(want), "{}", shown(body));
    }
}

/// Feeds `wire` in chunks of `chunk` bytes, dropping what the parser releases, and returns the
/// reply, the bytes left over and the most the buffer ever held.
type Fed = (Reply, Vec<u8>, usize);

fn feed_releasing(mut parser: ReplyParser, wire: &[u8], chunk: usize) -> Result<Fed, ProtoError> {
    let (mut fed, mut buf, mut most) = (0, Vec::new(), 0);
    loop {
        if let Some((reply, used)) = parser.advance(&buf)? {
            buf.drain(..used);
            buf.extend_from_slice(&wire[fed..]);
            return Ok((reply, buf, most));
        }
        buf.drain(..parser.release());
        assert!(fed < wire.len(), "chunk {chunk}: the reply never completed");
        let next = (fed + chunk).min(wire.len());
        buf.extend_from_slice(&wire[fed..next]);
        fed = next;
        most = most.max(buf.len());
    }
}

#[test]
fn a_truncating_parser_keeps_the_start_and_reads_past_the_rest() {
    let long = [b"..".as_slice(), &[b'y'; 3 * PIECE], b"\r\n"].concat();
    let wire = [
        b"+OK\r\nSubject: s\r\n\r\n".as_slice(),
        &long,
        b"..x\r\n.\r\n+OK next\r\n",
    ]
    .concat();
    let body = [
        b"Subject: s\r\n\r\n.".as_slice(),
        &[b'y'; 3 * PIECE],
        b"\r\n.x\r\n",
    ]
    .concat();
    for chunk in [1, 2, 3, 7, 100, 4096, PIECE + 1, 100_000] {
        for keep in [0, 5, 20, body.len() - 1, body.len(), body.len() + 10] {
            let parser = ReplyParser::truncating(keep, 1 << 20);
            let (reply, left, most) = feed_releasing(parser, &wire, chunk).unwrap();
            let kept = &body[..keep.min(body.len())];
            assert_eq!(reply.body, kept, "chunk {chunk}, keep {keep}");
            assert_eq!(
                reply.truncated,
                keep < body.len(),
                "chunk {chunk}, keep {keep}"
            );
            assert_eq!(left, b"+OK next\r\n", "chunk {chunk}, keep {keep}");
            assert!(
                most <= PIECE + 1 + chunk,
                "chunk {chunk}: buffer held {most}"
            );
        }
    }
}

#[test]
fn a_truncating_parser_still_has_a_cap_and_checks_line_ends() {
    let long = [b"+OK\r\n".as_slice(), &[b'z'; 4 * PIECE], b"\r\n.\r\n"].concat();
    let bare = [b"+OK\r\n".as_slice(), &[b'z'; 2 * PIECE], b"\n.\r\n"].concat();
    for chunk in [1, 1000, 100_000] {
        let parser = ReplyParser::truncating(10, 2 * PIECE);
        let err = feed_releasing(parser, &long, chunk)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err, BodyTooLong(2 * PIECE), "chunk {chunk}");
        let parser = ReplyParser::truncating(10, 4 * PIECE);
        let err = feed_releasing(parser, &bare, chunk)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err, BareLf, "chunk {chunk}");
    }
}
