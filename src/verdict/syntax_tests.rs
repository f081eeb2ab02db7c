//! The syntax under the verdicts: header fields, tokens, the `by` of a `Received:`.

use std::borrow::Cow;

use super::by_host;
use super::fields::{Field, MAX_FIELDS, fields};
use super::lex::{Token, tokens, unquote};

fn pairs(head: &str) -> Vec<(&str, String)> {
    fields(head)
        .map(|f| (f.name, f.value.into_owned()))
        .collect()
}

#[test]
fn fields_come_top_first_unfolded_and_end_at_the_blank_line() {
    let head = "A: 1\r\nB:\r\n 2\r\n\t3 \r\nC : x\r\nD:\r\n\r\nE: body\r\n";
    assert_eq!(
        pairs(head),
        [
            ("A", "1".to_string()),
            ("B", "2\t3".to_string()),
            ("C", "x".to_string()),
            ("D", String::new()),
        ]
    );
    let unfolded = fields("Subject: a\n b\n").next().unwrap();
    assert!(matches!(unfolded.value, Cow::Owned(_)));
    let single = fields("Subject:  a b ").next().unwrap();
    assert_eq!(single.value, Cow::Borrowed("a b"));
    assert!(single.is("SUBJECT") && !single.is("Subjec"));
}

#[test]
fn lines_that_are_not_fields_are_skipped_with_their_continuations() {
    let head = "\tcontinuation of nothing\n\
From a@b.test Mon Nov 30 08:52:15 2026\n\
no colon here\n\
: empty name\n\
Bad Name: x\n  continuation of a bad line: y\n\
\u{dc}ber: z\n\
Good: y\n";
    assert_eq!(pairs(head), [("Good", "y".to_string())]);
}

#[test]
fn no_more_than_max_fields_are_read() {
    let head = "A: 1\n".repeat(MAX_FIELDS + 500);
    assert_eq!(fields(&head).count(), MAX_FIELDS);
    assert_eq!(fields("").next(), None::<Field<'_>>);
}

#[test]
fn tokens_skip_comments_and_keep_quoted_strings_whole() {
    let all: Vec<Token<'_>> =
        tokens("a (c (d) \\) ; e) \"q;\\\"x\" ;=/ b) \u{fc}(\u{e9})\u{f6}").collect();
    assert_eq!(
        all,
        [
            Token::Word("a"),
            Token::Quoted("q;\\\"x"),
            Token::Semicolon,
            Token::Equals,
            Token::Slash,
            Token::Word("b"),
            Token::Word("\u{fc}"),
            Token::Word("\u{f6}"),
        ]
    );
    assert_eq!(unquote("q;\\\"x\\\\"), "q;\"x\\");
}

#[test]
fn unterminated_comments_and_quotes_run_to_the_end() {
    assert_eq!(tokens("a (b; c=d").collect::<Vec<_>>(), [Token::Word("a")]);
    assert_eq!(
        tokens("a \"b;c\\").collect::<Vec<_>>(),
        [Token::Word("a"), Token::Quoted("b;c\\")]
    );
    assert_eq!(tokens("(\\").count(), 0);
}

#[test]
fn the_by_host_is_read_past_comments_and_other_clauses() {
    let cases = [
        (
            "from mx.example.test\n\tby mx.example.test with LMTP\n\tid 8E; date",
            Some("mx.example.test"),
        ),
        (
            "from smtp.example.test (unknown [127.0.0.1]) (using TLSv1.3 with cipher X (256/256 bits)\n\t key-exchange X25519 (2048 bits)) (No client certificate requested)\n\tby mx.example.test (Postfix) with ESMTPS id DD; Mon, 30 Nov 2026",
            Some("mx.example.test"),
        ),
        (
            "from [192.0.2.7] (helo=client.example.org)\n\tby mail.example.net with esmtpsa (TLS1.3) (Exim 4.96)\n\tid 1t; date",
            Some("mail.example.net"),
        ),
        (
            "from x (by fake.example) by real.example; date",
            Some("real.example"),
        ),
        (
            "from by by real.example with by; date",
            Some("real.example"),
        ),
        ("from a with b id by for by; by late.example", None),
        ("from a (unclosed by x", None),
        ("by", None),
        ("", None),
    ];
    for (value, host) in cases {
        assert_eq!(by_host(value), host, "{value}");
    }
}
