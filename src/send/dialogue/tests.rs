use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::data_block;
use crate::config::{Endpoint, SmtpConfig, TlsMode};
use crate::send::Submitter;

#[test]
fn a_data_block_doubles_a_leading_dot_of_every_line_and_ends_with_the_dot_line() {
    assert_eq!(data_block(""), "\r\n.\r\n");
    assert_eq!(data_block("a\r\n.b\r\n"), "a\r\n..b\r\n\r\n.\r\n");
    assert_eq!(data_block(".x"), "..x\r\n.\r\n");
    // A dot after a bare CR or a bare LF does not start a line (as lettre counts lines).
    assert_eq!(data_block("a\r.b\n.c"), "a\r.b\n.c\r\n.\r\n");
    assert_eq!(data_block("a\r\n..\r\n"), "a\r\n...\r\n\r\n.\r\n");
    assert_eq!(data_block("a\r\r\n.b"), "a\r\r\n..b\r\n.\r\n");
}

/// What a scripted server saw of one transaction: the lines it read before it answered
/// anything after `EHLO`, what else had arrived by then, and the message as it arrived.
#[derive(Debug, Default)]
struct Seen {
    before_first_answer: Vec<String>,
    also_waiting: usize,
    data: String,
}

fn line(input: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut l = String::new();
    input.read_line(&mut l).map(|_| l.trim_end().to_string())
}

/// A one-session SMTP server on a loopback port, offering `extensions` after `EHLO`. It
/// answers nothing after `EHLO` until it has read `wait_for` lines (or 5 s passed: a client
/// that waits for each answer then shows as having sent one line).
fn server(extensions: &'static str, wait_for: usize) -> (u16, std::thread::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut out, _) = listener.accept().unwrap();
        out.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut input = BufReader::new(out.try_clone().unwrap());
        out.write_all(b"220 fake ESMTP\r\n").unwrap();
        assert!(line(&mut input).unwrap().starts_with("EHLO "));
        out.write_all(format!("250-fake\r\n{extensions}").as_bytes())
            .unwrap();
        let mut seen = Seen::default();
        while seen.before_first_answer.len() < wait_for {
            match line(&mut input) {
                Ok(l) if !l.is_empty() => seen.before_first_answer.push(l),
                _ => break,
            }
        }
        seen.also_waiting = input.buffer().len();
        // Answers for what was read, then one answer per further command.
        let answers = ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 go on"];
        let read = seen.before_first_answer.len();
        for (i, answer) in answers.iter().enumerate() {
            if i >= read {
                line(&mut input).unwrap();
            }
            out.write_all(format!("{answer}\r\n").as_bytes()).unwrap();
        }
        let mut data = Vec::new();
        while !data.ends_with(b"\r\n.\r\n") {
            let mut byte = [0];
            input.read_exact(&mut byte).unwrap();
            data.push(byte[0]);
        }
        seen.data = String::from_utf8(data).unwrap();
        out.write_all(b"250 2.0.0 Ok: queued as ABC123\r\n")
            .unwrap();
        let _ = line(&mut input); // QUIT
        seen
    });
    (port, handle)
}

fn submitter(port: u16) -> Submitter {
    Submitter::new(&SmtpConfig {
        endpoint: Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            tls_verify: true,
            ca_file: None,
            timeout: Duration::from_secs(10),
        },
        credentials: None,
    })
    .unwrap()
}

const MESSAGE: &[u8] = b"Subject: x\r\n\r\n.leading dot\r\nend\r\n";

#[tokio::test]
async fn a_server_offering_pipelining_gets_mail_rcpt_and_data_in_one_go() {
    let (port, server) = server("250-PIPELINING\r\n250 8BITMIME\r\n", 3);
    let accepted = submitter(port)
        .send("a@example.test", "b@example.test", MESSAGE)
        .await
        .unwrap();
    assert_eq!(accepted.queue_id.as_deref(), Some("ABC123"));
    crate::send::close_kept(Duration::from_secs(2)).await;
    let seen = server.join().unwrap();
    assert_eq!(
        seen.before_first_answer,
        [
            "MAIL FROM:<a@example.test>",
            "RCPT TO:<b@example.test>",
            "DATA"
        ],
        "all three were sent before any answer"
    );
    assert_eq!(
        seen.data,
        "Subject: x\r\n\r\n..leading dot\r\nend\r\n\r\n.\r\n"
    );
}

#[tokio::test]
async fn a_server_without_pipelining_gets_one_command_at_a_time() {
    let (port, server) = server("250 8BITMIME\r\n", 1);
    submitter(port)
        .send("a@example.test", "b@example.test", MESSAGE)
        .await
        .unwrap();
    crate::send::close_kept(Duration::from_secs(2)).await;
    let seen = server.join().unwrap();
    assert_eq!(
        seen.before_first_answer,
        ["MAIL FROM:<a@example.test>"],
        "the client waited for MAIL's answer"
    );
    assert_eq!(seen.also_waiting, 0, "nothing else had been sent");
    assert_eq!(
        seen.data,
        "Subject: x\r\n\r\n..leading dot\r\nend\r\n\r\n.\r\n"
    );
}
