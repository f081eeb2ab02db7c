//! The adapter against a scripted fake, for what the real stack will not do: stay silent,
//! send garbage, lack STLS, inject bytes, refuse or cut off a `TOP`; and to count which
//! commands a look sends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::config::{Login, Secret};

const PASSWORD: &str = "sekrit-pw";

/// A fake maildrop server. `greeting: None` accepts and never says anything.
struct Fake {
    greeting: Option<&'static str>,
    capa: &'static str,
    stls: &'static str,
    auth_ok: bool,
    /// Logins accepted before `auth_ok` turns false.
    logins_left: usize,
    /// (UIDL, whole mail): head, and optionally a blank line and a body.
    mails: Vec<(String, String)>,
    /// What `TOP` answers for a UIDL instead of serving the mail, one entry per `TOP`.
    faults: HashMap<String, VecDeque<Fault>>,
    log: Vec<String>,
}

/// A broken answer to one `TOP`.
#[derive(Clone)]
enum Fault {
    /// These bytes as the reply.
    Reply(String),
    /// These bytes, then the connection is closed: a reply cut off mid-way.
    CutOff(String),
}

impl Fake {
    /// The next `times` `TOP`s of `uid` get `fault`.
    fn fault(&mut self, uid: &str, fault: Fault, times: usize) {
        let queue = self.faults.entry(uid.to_string()).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// The `TOP msg lines` reply for a mail as a server makes it: the head, the blank line and
    /// that many body lines, dot-stuffed.
    fn top(&self, msg: usize, lines: usize) -> String {
        let mail = &self.mails[msg - 1].1;
        let (head, body) = mail.split_once("\r\n\r\n").unwrap_or((mail, ""));
        let mut reply = format!("+OK\r\n{head}\r\n\r\n");
        for line in body.split_terminator("\r\n").take(lines) {
            let stuff = if line.starts_with('.') { "." } else { "" };
            reply.push_str(&format!("{stuff}{line}\r\n"));
        }
        reply + ".\r\n"
    }
}

fn fake(mails: &[(&str, &str)]) -> Fake {
    Fake {
        greeting: Some("+OK fake ready\r\n"),
        capa: "TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n",
        stls: "+OK go ahead\r\n",
        auth_ok: true,
        logins_left: usize::MAX,
        mails: mails
            .iter()
            .map(|(u, h)| (u.to_string(), h.to_string()))
            .collect(),
        faults: HashMap::new(),
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
        login: Login::Password(Secret::new(PASSWORD)),
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
    let lines: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let multi = |body: &str| format!("+OK\r\n{body}.\r\n");
    let reply = match verb {
        "CAPA" => multi(fake.capa),
        "STLS" => return (fake.stls.to_string(), true),
        "PASS" | "AUTH" if !fake.auth_ok || fake.logins_left == 0 => {
            "-ERR [AUTH] failed\r\n".to_string()
        }
        "PASS" | "AUTH" => {
            fake.logins_left -= 1;
            "+OK\r\n".to_string()
        }
        "USER" => "+OK\r\n".to_string(),
        "UIDL" => multi(
            &(fake.mails.iter().enumerate())
                .map(|(i, (uid, _))| format!("{} {uid}\r\n", i + 1))
                .collect::<String>(),
        ),
        "TOP" => {
            let uid = &fake.mails[n - 1].0;
            match fake.faults.get_mut(uid).and_then(|f| f.pop_front()) {
                Some(Fault::Reply(reply)) => reply,
                Some(Fault::CutOff(reply)) => return (reply, true),
                None => fake.top(n, lines),
            }
        }
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

fn id(key: &str) -> MailId {
    MailId {
        folder: FOLDER.into(),
        key: key.into(),
    }
}

/// The commands of a login by AUTH PLAIN.
const LOGIN: [&str; 2] = ["CAPA", "AUTH PLAIN AHVAZXhhbXBsZS50ZXN0AHNla3JpdC1wdw=="];

fn log_of(state: &Arc<Mutex<Fake>>) -> Vec<String> {
    std::mem::take(&mut state.lock().unwrap().log)
}

#[tokio::test]
async fn each_mail_is_read_once_and_only_named_canaries_are_deleted() {
    let (a, b) = (canary("A"), canary("B"));
    let drop = fake(&[("u1", "Subject: lunch"), ("u2", &a), ("u3", &b)]);
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    let first = mailbox.canaries().await.unwrap();
    assert_eq!(keys(&first.arrivals), ["u2", "u3"]);
    assert_eq!(first.skipped, 0);
    assert_eq!(first.arrivals[0].mark.value(), "v=1; id=A");
    assert_eq!(first.arrivals[0].head, format!("{a}\r\n\r\n").into_bytes());
    mailbox
        .clean_up(&[id("u2"), id("u2"), id("gone")])
        .await
        .unwrap();

    state.lock().unwrap().mails.push(("u4".into(), canary("D")));
    let second = mailbox.canaries().await.unwrap().arrivals;
    mailbox.clean_up(&[]).await.unwrap();
    // u3, not handed back (forged, say), was reported once and is not reported again.
    assert_eq!(keys(&second), ["u4"]);

    let state = state.lock().unwrap();
    let log: Vec<&str> = state.log.iter().map(|l| l.as_str()).collect();
    let look1 = [
        "UIDL",
        "TOP 1 128",
        "TOP 2 128",
        "TOP 3 128",
        "DELE 2",
        "QUIT",
    ];
    // Only the new mail is read; u4 is message 3 now that u2 is gone.
    let look2 = ["UIDL", "TOP 3 128", "QUIT"];
    assert_eq!(log, [&LOGIN[..], &look1, &LOGIN, &look2].concat());
    let left: Vec<&str> = state.mails.iter().map(|(uid, _)| uid.as_str()).collect();
    assert_eq!(left, ["u1", "u3", "u4"]);
}

/// A canary whose header a gateway stripped: the signed token near the start of the body.
const TOKEN: &str = "v=1; id=01JDQ8ZK3V6R9X1T2Y3Z4A5B6C; probe=p; class=bulk; seq=1; sent=1; \
                     agent=a; sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[tokio::test]
async fn a_canary_without_its_header_is_found_by_its_body_token() {
    let stripped = format!("Subject: news\r\n\r\nHello\r\n.dotted\r\nmailcanary: {TOKEN}\r\nBye");
    let late = format!(
        "Subject: later\r\n\r\n{}mailcanary: {TOKEN}\r\n",
        "line\r\n".repeat(200)
    );
    let drop = fake(&[("u1", &stripped), ("u2", &late)]);
    let (mut mailbox, _state) = serve(drop, TlsMode::None).await;
    let look = mailbox.canaries().await.unwrap();
    assert_eq!(
        keys(&look.arrivals),
        ["u1"],
        "the token past 128 lines is not looked for"
    );
    assert_eq!(look.arrivals[0].mark, Mark::BodyToken(TOKEN.to_string()));
    assert_eq!(look.arrivals[0].head, b"Subject: news\r\n\r\n");
}

#[tokio::test]
async fn a_long_body_line_is_read_past_and_dropped() {
    // One 3 MiB body line before the token: the head and the start of the body are kept, the
    // rest of the reply is read and dropped, and the session goes on.
    let huge = format!(
        "Subject: big\r\n\r\n{}\r\nmailcanary: {TOKEN}",
        "x".repeat(3 << 20)
    );
    let drop = fake(&[("u1", &huge), ("u2", &canary("B"))]);
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    mailbox.config.endpoint.timeout = Duration::from_secs(10);
    let look = mailbox.canaries().await.unwrap();
    assert_eq!(keys(&look.arrivals), ["u2"]);
    assert_eq!(look.skipped, 0, "readable, just not a canary");
    let log = log_of(&state);
    assert_eq!(
        log,
        [&LOGIN[..], &["UIDL", "TOP 1 128", "TOP 2 128"]].concat()
    );
}

/// 22,000 short header lines: about 1.4 MiB of head.
fn padded_head() -> String {
    let value = "x".repeat(52);
    let pad: String = (0..22_000)
        .map(|n| format!("X-Pad-{n}: {value}\r\n"))
        .collect();
    assert!((1.3..1.5).contains(&(pad.len() as f64 / f64::from(1 << 20))));
    format!("{pad}Subject: padded\r\n\r\nbody")
}

#[tokio::test]
async fn an_over_long_head_is_skipped_once_and_the_look_goes_on() {
    let drop = fake(&[
        ("u1", "Subject: lunch"),
        ("u2", &padded_head()),
        ("u3", &canary("C")),
    ]);
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    mailbox.config.endpoint.timeout = Duration::from_secs(10);
    let look = mailbox.canaries().await.unwrap();
    mailbox.clean_up(&[]).await.unwrap();
    assert_eq!(keys(&look.arrivals), ["u3"]);
    assert_eq!(look.skipped, 1);
    // The head was read to the end of its reply, so the session went on without a new login.
    let look1 = ["UIDL", "TOP 1 128", "TOP 2 128", "TOP 3 128", "QUIT"];
    assert_eq!(log_of(&state), [&LOGIN[..], &look1].concat());

    let again = mailbox.canaries().await.unwrap();
    mailbox.clean_up(&[]).await.unwrap();
    assert_eq!((again.arrivals.len(), again.skipped), (0, 0));
    assert_eq!(log_of(&state), [&LOGIN[..], &["UIDL", "QUIT"]].concat());
}

#[tokio::test]
async fn a_reply_past_the_cap_is_skipped_and_the_session_renewed() {
    // Longer than TOP_MAX: the rest of the reply is still in the stream when the client stops.
    let endless = format!(
        "+OK\r\n{}",
        "X-Pad: x\r\n".repeat(proto::TOP_MAX / 10 + 1000)
    );
    let mut drop = fake(&[("u1", "Subject: x"), ("u2", &canary("B"))]);
    drop.fault("u1", Fault::Reply(endless + ".\r\n"), 1);
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    mailbox.config.endpoint.timeout = Duration::from_secs(10);
    let look = mailbox.canaries().await.unwrap();
    assert_eq!(keys(&look.arrivals), ["u2"]);
    assert_eq!(look.skipped, 1);
    let renewed = [
        &LOGIN[..],
        &["UIDL", "TOP 1 128"],
        &LOGIN,
        &["UIDL", "TOP 2 128"],
    ];
    assert_eq!(log_of(&state), renewed.concat());
}

#[tokio::test]
async fn a_refused_top_is_skipped_once() {
    let mut drop = fake(&[("u1", "Subject: x"), ("u2", &canary("B"))]);
    drop.fault("u1", Fault::Reply("-ERR mail is corrupted\r\n".into()), 1);
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    let look = mailbox.canaries().await.unwrap();
    mailbox.clean_up(&[]).await.unwrap();
    assert_eq!(keys(&look.arrivals), ["u2"]);
    assert_eq!(look.skipped, 1);
    let look1 = ["UIDL", "TOP 1 128", "TOP 2 128", "QUIT"];
    assert_eq!(log_of(&state), [&LOGIN[..], &look1].concat());

    let again = mailbox.canaries().await.unwrap();
    assert_eq!((again.arrivals.len(), again.skipped), (0, 0));
}

#[tokio::test]
async fn a_reply_cut_off_twice_is_skipped_and_the_look_goes_on() {
    let mut drop = fake(&[("u1", "Subject: x"), ("u2", &canary("B"))]);
    drop.fault(
        "u1",
        Fault::CutOff("+OK\r\nSubject: half\r\nX-Pa".into()),
        2,
    );
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    let look = mailbox.canaries().await.unwrap();
    mailbox.clean_up(&[]).await.unwrap();
    assert_eq!(keys(&look.arrivals), ["u2"]);
    assert_eq!(look.skipped, 1);
    let top1 = ["UIDL", "TOP 1 128"];
    let look1 = [
        &LOGIN[..],
        &top1,
        &LOGIN,
        &top1,
        &LOGIN,
        &["UIDL", "TOP 2 128", "QUIT"],
    ];
    assert_eq!(log_of(&state), look1.concat());

    let again = mailbox.canaries().await.unwrap();
    assert_eq!((again.arrivals.len(), again.skipped), (0, 0));
}

#[tokio::test]
async fn a_connection_lost_once_is_retried_and_the_canary_read() {
    let mut drop = fake(&[("u1", &canary("A"))]);
    drop.fault("u1", Fault::CutOff("+OK\r\nSubject: c\r\n".into()), 1);
    let (mut mailbox, _state) = serve(drop, TlsMode::None).await;
    let look = mailbox.canaries().await.unwrap();
    assert_eq!(keys(&look.arrivals), ["u1"]);
    assert_eq!(look.skipped, 0);
}

#[tokio::test]
async fn a_look_that_fails_remembers_nothing_of_it() {
    // u1 is read, then the connection is lost on u2 and no new session can be had: the look
    // fails, and the next one reads both again.
    let mut drop = fake(&[("u1", &canary("A")), ("u2", "Subject: x")]);
    drop.fault("u2", Fault::CutOff(String::new()), 1);
    drop.logins_left = 1;
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    let error = mailbox.canaries().await.expect_err("no new session");
    assert_eq!(error.stage, MailboxStage::Auth, "{error}");
    state.lock().unwrap().logins_left = usize::MAX;
    let look = mailbox.canaries().await.unwrap();
    assert_eq!(keys(&look.arrivals), ["u1"]);
}

#[tokio::test]
async fn skipped_mail_stays_skipped_after_a_restart_and_memory_is_pruned() {
    let mut drop = fake(&[
        ("u1", "Subject: x"),
        ("u2", "Subject: y"),
        ("u3", &canary("C")),
    ]);
    drop.fault("u1", Fault::Reply("-ERR mail is corrupted\r\n".into()), 1);
    let (mut mailbox, state) = serve(drop, TlsMode::None).await;
    let look = mailbox.canaries().await.unwrap();
    mailbox.clean_up(&[id("u3")]).await.unwrap();
    assert_eq!((keys(&look.arrivals), look.skipped), (vec!["u3"], 1));
    let memory = mailbox.scan_memory().expect("a memory");

    // A restart: a new adapter, the memory handed back, and new mail meanwhile.
    state.lock().unwrap().mails.push(("u4".into(), canary("D")));
    let mut restarted = Pop3Mailbox::new(mailbox.config.clone()).unwrap();
    restarted.restore_scan_memory(&memory);
    log_of(&state);
    let look = restarted.canaries().await.unwrap();
    restarted.clean_up(&[]).await.unwrap();
    assert_eq!((keys(&look.arrivals), look.skipped), (vec!["u4"], 0));
    assert_eq!(
        log_of(&state),
        [&LOGIN[..], &["UIDL", "TOP 3 128", "QUIT"]].concat()
    );

    // Only mail still listed is remembered.
    assert_eq!(restarted.judged.len(), 3);
    state.lock().unwrap().mails.retain(|(uid, _)| uid == "u4");
    restarted.canaries().await.unwrap();
    assert_eq!(restarted.judged, HashSet::from([uidl_key("u4")]));
    let memory = restarted.scan_memory().unwrap();
    assert_eq!(
        memory.len(),
        format!("{MEMORY_PREFIX}01234567:").len() + 11,
        "{memory}"
    );
}

#[tokio::test]
async fn a_memory_of_another_account_or_garbage_is_not_taken() {
    let drop = fake(&[("u1", &canary("A"))]);
    let (mut mailbox, _state) = serve(drop, TlsMode::None).await;
    mailbox.canaries().await.unwrap();
    let memory = mailbox.scan_memory().unwrap();
    let mut other = mailbox.config.clone();
    other.credentials.username = "someone-else@example.test".into();
    for (config, memory) in [
        (other, memory.as_str()),
        (mailbox.config.clone(), "pop3.1:zz"),
        (mailbox.config.clone(), "garbage"),
    ] {
        let mut fresh = Pop3Mailbox::new(config).unwrap();
        fresh.restore_scan_memory(memory);
        let look = fresh.canaries().await.unwrap();
        assert_eq!(keys(&look.arrivals), ["u1"], "{memory}");
    }
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

#[tokio::test]
async fn a_refused_logins_transcript_shows_the_servers_answer_never_the_password() {
    let plain = "AHVAZXhhbXBsZS50ZXN0AHNla3JpdC1wdw=="; // \0u@example.test\0sekrit-pw
    for (capa, last) in [("SASL PLAIN\r\n", "AUTH PLAIN"), ("USER\r\n", "PASS")] {
        let mut refusing = fake(&[]);
        (refusing.capa, refusing.auth_ok) = (capa, false);
        let (mut mailbox, _) = serve(refusing, TlsMode::None).await;
        mailbox.canaries().await.expect_err("the look fails");
        let lines = mailbox.take_transcript();
        let text = lines.join("\n");
        assert!(text.contains(&format!("C: {last} <redacted>")), "{text}");
        assert!(text.ends_with("S: -ERR [AUTH] failed"), "{text}");
        assert!(!text.contains(PASSWORD) && !text.contains(plain), "{text}");
    }
}
