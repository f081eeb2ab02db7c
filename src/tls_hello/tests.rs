use super::*;

/// A Postfix submission server's side of an SMTP session up to `STARTTLS`.
const STARTTLS: &[u8] = b"220 smtp.example.test ESMTP Postfix\r\n\
250-smtp.example.test\r\n\
250-PIPELINING\r\n\
250-SIZE 10240000\r\n\
250-STARTTLS\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250 8BITMIME\r\n\
220 2.0.0 Ready to start TLS\r\n";

fn u16s(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}

/// One extension: type, length, data.
fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = u16s(kind).to_vec();
    out.extend(u16s(data.len() as u16));
    out.extend(data);
    out
}

/// A ServerHello handshake message (header included), as RFC 8446 §4.1.3 lays it out;
/// `extensions: None` ends it after the compression method, as TLS 1.2 may.
fn server_hello(
    legacy: u16,
    random: [u8; 32],
    session_id: &[u8],
    cipher: u16,
    extensions: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = u16s(legacy).to_vec();
    body.extend(random);
    body.push(session_id.len() as u8);
    body.extend(session_id);
    body.extend(u16s(cipher));
    body.push(0);
    if let Some(extensions) = extensions {
        body.extend(u16s(extensions.len() as u16));
        body.extend(extensions);
    }
    handshake(SERVER_HELLO, &body)
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let mut out = vec![kind, len[1], len[2], len[3]];
    out.extend(body);
    out
}

/// One TLS record.
fn record(kind: u8, fragment: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, 3, 3];
    out.extend(u16s(fragment.len() as u16));
    out.extend(fragment);
    out
}

/// A TLS 1.2 ServerHello as OpenSSL sends it: ECDHE-RSA-AES128-GCM, renegotiation_info and
/// ec_point_formats, no supported_versions.
fn tls12_hello() -> Vec<u8> {
    let mut extensions = extension(0xff01, &[0]);
    extensions.extend(extension(0x000b, &[1, 0]));
    server_hello(0x0303, [7; 32], &[9; 32], 0xC02F, Some(&extensions))
}

/// A TLS 1.3 ServerHello: legacy_version 1.2, the client's session id echoed, an X25519
/// key_share, supported_versions 1.3.
fn tls13_hello(random: [u8; 32]) -> Vec<u8> {
    let mut key_share = vec![0x00, 0x1d, 0x00, 0x20];
    key_share.extend([0x42; 32]);
    let mut extensions = extension(0x0033, &key_share);
    extensions.extend(extension(SUPPORTED_VERSIONS, &u16s(0x0304)));
    server_hello(0x0303, random, &[1; 32], 0x1302, Some(&extensions))
}

/// What a TLS 1.3 server sends in its first flight: the ServerHello, a ChangeCipherSpec for
/// middleboxes, encrypted records.
fn tls13_flight() -> Vec<u8> {
    let mut out = record(HANDSHAKE, &tls13_hello([7; 32]));
    out.extend(record(20, &[1]));
    out.extend(record(23, &[0xAA; 300]));
    out
}

const TLS13_AES256: ServerHello = ServerHello {
    version: 0x0304,
    cipher: 0x1302,
    hello_retry: false,
};

const TLS12_ECDHE_RSA: ServerHello = ServerHello {
    version: 0x0303,
    cipher: 0xC02F,
    hello_retry: false,
};

#[test]
fn a_tls12_hello_without_supported_versions_gives_its_legacy_version() {
    // Certificate and ServerHelloDone follow in the same record, as OpenSSL packs them.
    let mut flight = tls12_hello();
    flight.extend(handshake(11, &[0x55; 900]));
    flight.extend(handshake(14, &[]));
    assert_eq!(
        scan(&record(HANDSHAKE, &flight)),
        Scan::Found(TLS12_ECDHE_RSA)
    );
    let bare = server_hello(0x0301, [3; 32], &[], 0x002F, None);
    assert_eq!(
        scan(&record(HANDSHAKE, &bare)),
        Scan::Found(ServerHello {
            version: 0x0301,
            cipher: 0x002F,
            hello_retry: false
        })
    );
}

#[test]
fn a_tls13_hello_gives_the_version_of_supported_versions() {
    assert_eq!(scan(&tls13_flight()), Scan::Found(TLS13_AES256));
}

#[test]
fn a_hello_retry_request_is_tls13_and_says_so() {
    let retry = Scan::Found(ServerHello {
        hello_retry: true,
        ..TLS13_AES256
    });
    assert_eq!(
        scan(&record(HANDSHAKE, &tls13_hello(HELLO_RETRY_RANDOM))),
        retry
    );
    // One that leaves supported_versions out is still TLS 1.3.
    let bare = server_hello(
        0x0303,
        HELLO_RETRY_RANDOM,
        &[],
        0x1302,
        Some(&extension(0x0033, &[0, 0x1d])),
    );
    assert_eq!(scan(&record(HANDSHAKE, &bare)), retry);
}

#[test]
fn a_hello_split_over_records_is_put_back_together() {
    let hello = tls13_hello([7; 32]);
    for split in [1, 2, 4, 10, 40, hello.len() - 1] {
        let (first, second) = hello.split_at(split);
        let mut bytes = record(HANDSHAKE, first);
        bytes.extend(record(HANDSHAKE, second));
        bytes.extend(record(20, &[1]));
        assert_eq!(scan(&bytes), Scan::Found(TLS13_AES256), "split at {split}");
    }
    let thirds: Vec<u8> = hello
        .chunks(hello.len() / 3 + 1)
        .flat_map(|chunk| record(HANDSHAKE, chunk))
        .collect();
    assert_eq!(scan(&thirds), Scan::Found(TLS13_AES256));
}

#[test]
fn a_hello_after_the_starttls_plaintext_is_found() {
    let mut bytes = STARTTLS.to_vec();
    bytes.extend(tls13_flight());
    assert_eq!(scan(&bytes), Scan::Found(TLS13_AES256));
    let mut bytes = STARTTLS.to_vec();
    bytes.extend(record(HANDSHAKE, &tls12_hello()));
    assert_eq!(scan(&bytes), Scan::Found(TLS12_ECDHE_RSA));
}

/// Every prefix of a real exchange is a wait until the hello is whole, and the answer from
/// then on: never a panic, never a wrong answer.
#[test]
fn every_truncation_needs_more_until_the_hello_is_whole() {
    let hello = tls13_hello([7; 32]);
    let (first, second) = hello.split_at(20);
    let mut split = STARTTLS.to_vec();
    split.extend(record(HANDSHAKE, first));
    split.extend(record(HANDSHAKE, second));
    let split_end = split.len();
    split.extend(record(20, &[1]));

    let mut starttls = STARTTLS.to_vec();
    starttls.extend(tls13_flight());
    let starttls_end = STARTTLS.len() + 5 + hello.len();

    let tls12 = record(HANDSHAKE, &tls12_hello());
    let tls12_end = tls12.len();

    for (bytes, end, found) in [
        (split, split_end, TLS13_AES256),
        (starttls, starttls_end, TLS13_AES256),
        (tls12, tls12_end, TLS12_ECDHE_RSA),
    ] {
        for n in 0..=bytes.len() {
            let expected = if n < end {
                Scan::NeedMore
            } else {
                Scan::Found(found)
            };
            assert_eq!(scan(&bytes[..n]), expected, "{n} of {} bytes", bytes.len());
        }
    }
}

#[test]
fn alerts_other_messages_and_lengths_that_do_not_fit_are_not_found() {
    let hello = tls13_hello([7; 32]);
    let mut with_alert_between = record(HANDSHAKE, &hello[..20]);
    with_alert_between.extend(record(21, &[2, 40]));
    let mut long_session_id = tls12_hello();
    long_session_id[4 + 2 + 32] = 33;
    let mut short_extensions = tls12_hello();
    let at = short_extensions.len() - 13;
    short_extensions[at] = 0xff;
    let bad_versions = server_hello(
        0x0303,
        [7; 32],
        &[],
        0x1301,
        Some(&extension(SUPPORTED_VERSIONS, &[3, 4, 0])),
    );
    let mut trailing = tls12_hello();
    trailing.push(0);
    let len = (trailing.len() - 4) as u32;
    trailing[3] = len as u8;
    let mut wrong_major = record(HANDSHAKE, &hello);
    wrong_major[1] = 2;
    let mut huge_message = hello.clone();
    huge_message[1] = 0x01;

    let cases: [(&str, Vec<u8>); 12] = [
        ("an alert", record(21, &[2, 40])),
        (
            "an alert after the plaintext",
            [STARTTLS, &record(21, &[2, 70])].concat(),
        ),
        ("an alert between the pieces", with_alert_between),
        (
            "a certificate first",
            record(HANDSHAKE, &handshake(11, &[0; 40])),
        ),
        (
            "a session id of 33 bytes",
            record(HANDSHAKE, &long_session_id),
        ),
        (
            "extensions longer than the hello",
            record(HANDSHAKE, &short_extensions),
        ),
        (
            "supported_versions of 3 bytes",
            record(HANDSHAKE, &bad_versions),
        ),
        ("bytes after the extensions", record(HANDSHAKE, &trailing)),
        ("record version 2", wrong_major),
        ("an empty record", record(HANDSHAKE, &[])),
        (
            "a message longer than MAX_INBOUND",
            record(HANDSHAKE, &huge_message),
        ),
        ("a record longer than 2^14", {
            let mut r = record(HANDSHAKE, &hello);
            r[3..5].copy_from_slice(&u16s(MAX_FRAGMENT as u16 + 1));
            r
        }),
    ];
    for (what, bytes) in cases {
        assert_eq!(scan(&bytes), Scan::NotFound, "{what}");
    }
}

#[test]
fn bytes_that_are_not_smtp_text_before_the_records_are_not_found() {
    assert_eq!(scan(b"220 hi\r\n\x00\x01"), Scan::NotFound);
    assert_eq!(
        scan(b"220 hi \x16\x03\x03"),
        Scan::NotFound,
        "22 inside a line"
    );
    assert_eq!(scan(b"220 h\xc3\xa9llo\r\n250 ok\r\n"), Scan::NeedMore);
    assert_eq!(scan(b""), Scan::NeedMore);
}

#[test]
fn nothing_past_max_inbound_is_looked_at() {
    let waiting = vec![b'x'; MAX_INBOUND - 1];
    assert_eq!(scan(&waiting), Scan::NeedMore);
    let mut full = vec![b'x'; MAX_INBOUND - 1];
    full.push(b'\n');
    assert_eq!(scan(&full), Scan::NotFound);
    full.extend(tls13_flight());
    assert_eq!(scan(&full), Scan::NotFound);
    // A hello that ends right at the bound is still found.
    let hello = record(HANDSHAKE, &tls13_hello([7; 32]));
    let mut edge = vec![b'x'; MAX_INBOUND - hello.len() - 1];
    edge.push(b'\n');
    edge.extend(&hello);
    assert_eq!(edge.len(), MAX_INBOUND);
    assert_eq!(scan(&edge), Scan::Found(TLS13_AES256));
}

/// Bytes from a fixed generator, and every single-byte change of a real flight: whatever
/// comes back, it comes back.
#[test]
fn garbage_and_mutations_never_panic() {
    let mut state = 1u64;
    for len in [
        0,
        1,
        5,
        6,
        44,
        90,
        300,
        4_096,
        MAX_INBOUND,
        MAX_INBOUND + 100,
    ] {
        for lead in [None, Some(HANDSHAKE)] {
            let mut bytes: Vec<u8> = lead.into_iter().chain([3]).collect();
            while bytes.len() < len {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                bytes.push((state >> 56) as u8);
            }
            let _ = scan(&bytes);
        }
    }
    let flight = [STARTTLS, &tls13_flight()].concat();
    for at in STARTTLS.len()..flight.len().min(STARTTLS.len() + 200) {
        for value in [0x00, 0x01, 0x02, 0x16, 0x20, 0x2b, 0x7f, 0xff] {
            let mut bytes = flight.clone();
            bytes[at] = value;
            for n in [at + 1, at + 7, bytes.len()] {
                let _ = scan(&bytes[..n.min(bytes.len())]);
            }
        }
    }
}

#[test]
fn versions_and_ciphers_have_their_names() {
    assert_eq!(version_name(0x0300), "SSLv3");
    assert_eq!(version_name(0x0301), "TLSv1.0");
    assert_eq!(version_name(0x0302), "TLSv1.1");
    assert_eq!(version_name(0x0303), "TLSv1.2");
    assert_eq!(version_name(0x0304), "TLSv1.3");
    assert_eq!(version_name(0x7f1c), "0x7f1c");
    assert_eq!(cipher_name(0x1301), "TLS_AES_128_GCM_SHA256");
    assert_eq!(cipher_name(0x1302), "TLS_AES_256_GCM_SHA384");
    assert_eq!(cipher_name(0x1303), "TLS_CHACHA20_POLY1305_SHA256");
    assert_eq!(cipher_name(0xC02F), "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
    assert_eq!(
        cipher_name(0xCCA9),
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
    );
    assert_eq!(cipher_name(0xC014), "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA");
    assert_eq!(cipher_name(0x00ff), "0x00ff");
    assert_eq!(cipher_name(0xC0DE), "0xc0de");
    let mut codes: Vec<u16> = CIPHERS.iter().map(|(c, _)| *c).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), CIPHERS.len(), "one name per code");
}

/// `hex` (pieces of hex digits) as bytes.
fn unhex(pieces: &[&str]) -> Vec<u8> {
    let hex: String = pieces.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The start of what OpenSSL 3 sent as a TLS 1.3 server (captured from Python's `ssl` over
/// memory BIOs): ServerHello (TLS_AES_256_GCM_SHA384, X25519), ChangeCipherSpec, the head of
/// the first encrypted record.
const OPENSSL_TLS13: [&str; 5] = [
    "160303007a020000760303df40776b7fe8a9303b1a208a2b2802962aed33b8e5",
    "6e42fe8d397c8651cb82f320e7d097654f66fea720d911b235c7b32f60df797d",
    "d8931a75f6eafdd3a5229d3c130200002e002b0002030400330024001d0020a0",
    "2089433b06fd8747902c87c8af12ff639427fd1e54cae7c63dc3227457f14e14",
    "030300010117030300174bb1",
];

/// The same server to a client that offers TLS 1.2 at most: a ServerHello choosing
/// ECDHE-ECDSA-CHACHA20-POLY1305 (its random ends in RFC 8446's `DOWNGRD\x01`), then the head
/// of the Certificate record.
const OPENSSL_TLS12: [&str; 3] = [
    "16030300410200003d0303efd6295138dd2dd1a37db166e5715658e5c08a9e66",
    "626769444f574e4752440100cca9000015ff01000100000b0004030001020023",
    "000000170000160303019a0b000196",
];

#[test]
fn hellos_openssl_sent_are_read() {
    let tls13 = unhex(&OPENSSL_TLS13);
    assert_eq!(scan(&tls13), Scan::Found(TLS13_AES256));
    assert_eq!(scan(&tls13[..5 + 0x7a - 1]), Scan::NeedMore);
    let tls12 = unhex(&OPENSSL_TLS12);
    let chacha = ServerHello {
        version: 0x0303,
        cipher: 0xCCA9,
        hello_retry: false,
    };
    assert_eq!(scan(&[STARTTLS, &tls12].concat()), Scan::Found(chacha));
    assert_eq!(
        cipher_name(chacha.cipher),
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
    );
}
