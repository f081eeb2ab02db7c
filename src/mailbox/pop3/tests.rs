//! The adapter against a scripted fake, for what the real stack will not do: stay silent,
//! send garbage, lack STLS, inject bytes; and to count which commands a look sends.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::config::Secret;

const PASSWORD: &str = "sekrit-pw";

/// A fake maildrop server. `greeting: None` accepts and never says anything.
struct Fake {
    greeting: Option<&'static str>,
    capa: &'static str,
    stls: &'static str,
    auth_ok: bool,
    mails: Vec<(String, String)>,
    log: Vec<String>,
}

fn fake(mails: &[(&str, &str)]) -> Fake {
    Fake {
        greeting: Some("+OK fake ready\r\n"),
        capa: "TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n",
        stls: "+OK go ahead\r\n",
        auth_ok: true,
        mails: mails
            .iter()
            .map(|(u, h)| (u.to_string(), h.to_string()))
            .collect(),
        log: Vec::new(),
    }
}

/// Serves `fake` on a loopback port; returns a mailbox for it and the shared state.
async fn serve(fake: Fake, tls: TlsMode) -> (Pop3Mailbox, Arc<Mutex<Fake>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(fake));
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            match shared.lock().unwrap().greeting {
                Some(_) => drop(tokio::spawn(session(tcp, Arc::clone(&shared)))),
                None => held.push(tcp),
            }
        }
    });
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port,
        tls,
        tls_verify: true,
        ca_file: None,
        timeout: Duration::from_millis(300),
    };
    let credentials = Credentials {
        username: "u@example.test".into(),
        password: Secret::new(PASSWORD),
    };
    let (poll_interval, cleanup) = (Duration::from_secs(1), Cleanup::Delete);
    let config = Pop3Config {
        endpoint,
        credentials,
        poll_interval,
        cleanup,
    };
    (Pop3Mailbox::new(config).unwrap(), state)
}

async fn session(tcp: tokio::net::TcpStream, state: Arc<Mutex<Fake>>) {
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = state.lock().unwrap().greeting.unwrap_or_default();
    write.write_all(greeting.as_bytes()).await.unwrap();
    let mut deleted = BTreeSet::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let (reply, end) = answer(&mut state.lock().unwrap(), &line, &mut deleted);
        let _ = write.write_all(reply.as_bytes()).await;
        if end {
            break;
        }
    }
}

/// The fake's reply to one command line, and whether the session ends after it.
fn answer(fake: &mut Fake, line: &str, deleted: &mut BTreeSet<usize>) -> (String, bool) {
    fake.log.push(line.to_string());
    let mut words = line.split(' ');
    let verb = words.next().unwrap_or_default();
    let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let multi = |body: &str| format!("+OK\r\n{body}.\r\n");
    let reply = match verb {
        "CAPA" => multi(fake.capa),
        "STLS" => return (fake.stls.to_string(), true),
        "PASS" | "AUTH" if !fake.auth_ok => "-ERR [AUTH] failed\r\n".to_string(),
        "USER" | "PASS" | "AUTH" => "+OK\r\n".to_string(),
        "UIDL" => multi(
            &(fake.mails.iter().enumerate())
                .map(|(i, (uid, _))| format!("{} {uid}\r\n", i + 1))
                .collect::<String>(),
        ),
        "TOP" => multi(&format!("{}\r\n\r\n", fake.mails[n - 1].1)),
        "DELE" if deleted.insert(n) => "+OK\r\n".to_string(),
        "QUIT" => {
            let mut number = 0;
            fake.mails.retain(|_| {
                number += 1;
                !deleted.contains(&number)
            });
            return ("+OK bye\r\n".to_string(), true);
        }
        _ => "-ERR no\r\n".to_string(),
    };
    (reply, false)
}

/// Runs one look that must fail; returns the error and the commands the fake received.
async fn failure(fake: Fake, tls: TlsMode) -> (MailboxError, Vec<String>) {
    let (mut mailbox, state) = serve(fake, tls).await;
    let error = mailbox.canaries().await.expect_err("the look fails");
    let log = state.lock().unwrap().log.clone();
    (error, log)
}

fn canary(id: &str) -> String {
    format!("Subject: c\r\nX-Mailcanary: v=1; id={id}")
}

fn keys(arrivals: &[Arrival]) -> Vec<&str> {
    arrivals.iter().map(|a| a.id.key.as_str()).collect()
}

#[tokio::test]
async fn heads_are_read_once_and_only_named_canaries_are_deleted() {
    let (a, b) = (canary("A"), canary("B"));
    let drop = fake(&[("u1", "Subject: lunch"), ("u2", &a), ("u3", &b)]);
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    let first = mailbox.canaries().await.unwrap().arrivals;
    assert_eq!(keys(&first), ["u2", "u3"]);
    assert_eq!(first[0].mark.value(), "v=1; id=A");
    assert_eq!(first[0].head, format!("{a}\r\n\r\n").into_bytes());
    let id = |key: &str| MailId {
        folder: FOLDER.into(),
        key: key.into(),
    };
    mailbox
        .clean_up(&[id("u2"), id("u2"), id("gone")])
        .await
        .unwrap();

    state.lock().unwrap().mails.push(("u4".into(), canary("D")));
    let second = mailbox.canaries().await.unwrap().arrivals;
    mailbox.clean_up(&[]).await.unwrap();
    assert_eq!(keys(&second), ["u3", "u4"]);
    assert_eq!(second[0].seen_ms, first[1].seen_ms, "first sight is kept");

    let state = state.lock().unwrap();
    let log: Vec<&str> = state.log.iter().map(|l| l.as_str()).collect();
    let login = ["CAPA", "AUTH PLAIN AHVAZXhhbXBsZS50ZXN0AHNla3JpdC1wdw=="];
    let look1 = ["UIDL", "TOP 1 0", "TOP 2 0", "TOP 3 0", "DELE 2", "QUIT"];
    // Only the new mail's head is read; u4 is message 3 now that u2 is gone.
    let look2 = ["UIDL", "TOP 3 0", "QUIT"];
    assert_eq!(log, [&login[..], &look1, &login, &look2].concat());
    let left: Vec<&str> = state.mails.iter().map(|(uid, _)| uid.as_str()).collect();
    assert_eq!(left, ["u1", "u3", "u4"]);
}

#[tokio::test]
async fn check_login_logs_in_and_quits() {
    let (mut mailbox, state) = serve(fake(&[]), TlsMode::None).await;
    mailbox.check_login().await.unwrap();
    let log = state.lock().unwrap().log.clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!((log[0].as_str(), log[2].as_str()), ("CAPA", "QUIT"));
}

#[tokio::test]
async fn a_silent_server_is_a_timeout() {
    let mut silent = fake(&[]);
    silent.greeting = None;
    let (e, _) = failure(silent, TlsMode::None).await;
    assert_eq!(e.stage, MailboxStage::Timeout, "{e}");
}

#[tokio::test]
async fn a_garbage_greeting_is_a_greeting_error() {
    let mut imap = fake(&[]);
    imap.greeting = Some("* OK IMAP4rev1 ready\r\n");
    let (e, log) = failure(imap, TlsMode::None).await;
    assert_eq!(e.stage, MailboxStage::Greeting, "{e}");
    assert!(log.is_empty(), "{log:?}");
}

#[tokio::test]
async fn starttls_without_stls_fails_before_any_login() {
    let (e, log) = failure(fake(&[]), TlsMode::StartTls).await;
    assert_eq!(e.stage, MailboxStage::Tls, "{e}");
    assert_eq!(log, ["CAPA"]);
}

#[tokio::test]
async fn bytes_after_the_stls_reply_are_refused() {
    let mut injecting = fake(&[]);
    (injecting.capa, injecting.stls) = ("STLS\r\n", "+OK go ahead\r\n+OK injected\r\n");
    let (e, log) = failure(injecting, TlsMode::StartTls).await;
    assert_eq!(e.stage, MailboxStage::Tls, "{e}");
    assert!(e.message.contains("data after the STLS reply"), "{e}");
    assert_eq!(log, ["CAPA", "STLS"]);
}

#[tokio::test]
async fn a_refused_login_names_the_user_never_the_password() {
    let plain = "AHVAZXhhbXBsZS50ZXN0AHNla3JpdC1wdw=="; // \0u@example.test\0sekrit-pw
    for (capa, last) in [("SASL PLAIN\r\n", "AUTH PLAIN"), ("USER\r\n", "PASS")] {
        let mut refusing = fake(&[]);
        (refusing.capa, refusing.auth_ok) = (capa, false);
        let (e, log) = failure(refusing, TlsMode::None).await;
        assert_eq!(e.stage, MailboxStage::Auth, "{e}");
        assert!(e.message.contains("login as u@example.test"), "{e}");
        assert!(e.message.contains("-ERR [AUTH] failed"), "{e}");
        assert!(
            !e.message.contains(PASSWORD) && !e.message.contains(plain),
            "{e}"
        );
        assert!(log.last().unwrap().starts_with(last), "{log:?}");
    }
}
