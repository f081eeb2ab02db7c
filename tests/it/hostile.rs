//! Hostile mail in a watched IMAP box (issue 11): a mail with a huge header block, a flood of
//! forged canary-header mails, and a server that answers `SEARCH HEADER` with nothing. The
//! monitor must neither go blind nor be fooled.
//!
//! Runs on a private stack: these tests fill mailboxes with tens of thousands of mails, which
//! other tests on the shared stack should not have to sync past.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, chown};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use mailcanary::canary::{Canary, SigningKey};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// The private stack of this module, started once and shared by its tests (each has its own
/// mailbox user).
fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::up(Path::new("/tmp/mailcanary-it-hostile"), Some(27000)))
}

/// The value of one series, which must be in the exposition.
fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} is missing from:\n{text}"))
}

fn delivered(probe: &str) -> String {
    format!(
        "mailcanary_delivered_total{{class=\"interpersonal\",folder=\"INBOX\",probe=\"{probe}\"}}"
    )
}

fn up(probe: &str) -> String {
    format!("mailcanary_mailbox_up{{probe=\"{probe}\",protocol=\"imap\"}}")
}

fn skipped(probe: &str) -> String {
    format!("mailcanary_mails_skipped_total{{probe=\"{probe}\"}}")
}

/// `mailcanary_forged_total` summed over every class (the unknown one included) of `probe`.
fn forged_sum(text: &str, probe: &str) -> f64 {
    let label = format!("probe=\"{probe}\"");
    text.lines()
        .filter(|l| l.starts_with("mailcanary_forged_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A probe sending only interpersonal canaries to `user`.
fn section(stack: &Stack, probe: &str, user: &str, keys: &str) -> String {
    with_probe_keys(
        &probe_section(stack, probe, user, "MC_PROBE1_PASSWORD"),
        &format!("classes = [\"interpersonal\"]\n{keys}"),
    )
}

/// Writes mails straight into the user's INBOX (`cur/`, unflagged, owned by the mail user) in
/// one go; Dovecot indexes them on the next SELECT. Returns the paths.
fn place(stack: &Stack, user: &str, tag: &str, mails: &[String]) -> Vec<std::path::PathBuf> {
    let maildir = stack.maildir(user);
    let owner = std::fs::metadata(&maildir).unwrap();
    mails
        .iter()
        .enumerate()
        .map(|(n, text)| {
            let path = maildir.join(format!(
                "cur/1795000000.M{n}P{tag}.hostile,S={}:2,",
                text.len()
            ));
            std::fs::write(&path, text).unwrap();
            chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
            path
        })
        .collect()
}

/// How many mails are in the user's INBOX.
fn files_in(stack: &Stack, user: &str) -> usize {
    ["cur", "new"]
        .iter()
        .filter_map(|d| std::fs::read_dir(stack.maildir(user).join(d)).ok())
        .map(|entries| entries.count())
        .sum()
}

/// A mail claiming to be a canary of `agent`'s `probe`, signed with the wrong key.
fn forged(user: &str, agent: &str, probe: &str, n: u32) -> String {
    let key = SigningKey::new(b"not the agent's key".to_vec()).unwrap();
    let claim = Canary {
        id: format!("01JDQ8ZK3V6R9X1T2Y{n:08}"),
        probe: probe.into(),
        class: "interpersonal".into(),
        seq: u64::from(n) + 1,
        sent_ms: 1_795_000_000_000,
        agent: agent.into(),
    };
    format!(
        "From: probe1@example.test\r\nTo: {user}\r\nSubject: forged {n}\r\n\
         Message-ID: <forged-{n}@example.org>\r\nX-Mailcanary: {}\r\n\r\nNothing here.\r\n",
        claim.header_value(&key)
    )
}

fn ordinary(user: &str, n: u32) -> String {
    format!(
        "From: someone{n}@example.org\r\nTo: {user}\r\nSubject: ordinary mail {n}\r\n\
         Message-ID: <ordinary-{n}@example.org>\r\n\r\nNothing to see here, number {n}.\r\n"
    )
}

#[test]
fn a_mail_with_a_huge_header_block_does_not_blind_imap() {
    let stack = stack();
    let user = "box29@example.test";
    empty_mailbox(stack, user);
    let mut huge = format!("From: someone@example.org\r\nTo: {user}\r\nSubject: huge head\r\n");
    for n in 0..22_000 {
        huge.push_str(&format!(
            "X-Pad-{n}: padding padding padding padding padding padding padding\r\n"
        ));
    }
    huge.push_str("\r\nA body after 1.4 MiB of header.\r\n");
    assert!(huge.len() > 1_400 * 1024, "1.4 MiB of header");
    let paths = place(stack, user, "huge", std::slice::from_ref(&huge));

    let work = Workdir::new(
        "it-hostile-huge",
        &section(stack, "huge", user, "interval = \"1s\""),
    );
    let daemon = work.daemon(stack);
    daemon.wait_for("three deliveries", LIMIT, || {
        metric(&daemon.scrape(), &delivered("huge")).unwrap_or(0.0) >= 3.0
    });
    let text = daemon.scrape();
    assert_eq!(value(&text, &up("huge")), 1.0, "{text}");
    let delay = value(
        &text,
        "mailcanary_last_delivery_delay_seconds{class=\"interpersonal\",probe=\"huge\"}",
    );
    assert!(delay < 5.0, "delay {delay} s is not a normal one");
    // A partial fetch of two header fields reads the huge head fine: it is simply not a
    // canary, so nothing is skipped.
    assert_eq!(value(&text, &skipped("huge")), 0.0, "{text}");
    drop(daemon);
    let left: Vec<_> = mail_files(&stack.maildir(user))
        .into_iter()
        .filter(|(_, t)| t.contains("Subject: huge head"))
        .collect();
    assert_eq!(left.len(), 1, "the huge mail is still there, once");
    assert_eq!(left[0].1, huge, "the huge mail is unchanged");
    assert_eq!(
        left[0].0, paths[0],
        "the huge mail was not renamed (no flag set)"
    );
    empty_mailbox(stack, user);
}

#[test]
fn twelve_thousand_forged_mails_are_counted_once_and_do_not_blind_imap() {
    let stack = stack();
    let user = "box30@example.test";
    let (agent, probe) = ("it-hostile-flood", "flood");
    empty_mailbox(stack, user);
    let start = Instant::now();
    let mails: Vec<String> = (0..24_000u32)
        .map(|n| {
            if n % 2 == 0 {
                forged(user, agent, probe, n / 2)
            } else {
                ordinary(user, n / 2)
            }
        })
        .collect();
    let generated = start.elapsed();
    place(stack, user, "flood", &mails);
    let written = start.elapsed();

    let work = Workdir::new(agent, &section(stack, probe, user, ""));
    let daemon = work.daemon(stack);
    let sent = Instant::now();
    daemon.wait_metric(&delivered(probe), 1.0, LIMIT);
    let delivery = sent.elapsed();
    daemon.wait_for("12,000 forged mails counted", LIMIT, || {
        forged_sum(&daemon.scrape(), probe) == 12_000.0
    });
    daemon.wait_metric(&up(probe), 1.0, LIMIT);
    let text = daemon.scrape();
    assert_eq!(value(&text, &skipped(probe)), 0.0);
    // A look stopped half-way is read again by the next run (by design): let the look that
    // counted the last forged mails finish, i.e. remove the canary and remember how far it read.
    daemon.wait_for("the canary removed", LIMIT, || {
        files_in(stack, user) == 24_000
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = daemon;
    assert!(daemon.terminate().success());

    // A restart: the next canary is found, and the forged mails are neither read nor counted
    // again (each read of one logs a warning).
    let mut daemon = work.daemon(stack);
    daemon.wait_metric(&delivered(probe), 2.0, LIMIT);
    let text = daemon.scrape();
    assert_eq!(forged_sum(&text, probe), 12_000.0, "{text}");
    // A look accounts for what it read before it marks the mailbox up.
    daemon.wait_metric(&up(probe), 1.0, LIMIT);
    daemon.wait_for("the canary removed", LIMIT, || {
        files_in(stack, user) == 24_000
    });
    assert!(daemon.terminate().success());
    let reread = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("forged canary"))
        .count();
    assert_eq!(reread, 0, "forged mails were read again after the restart");
    println!(
        "hostile | 24,000 mails (12,000 forged) | made in {:.2} s, written in {:.2} s | first \
         canary delivered {:.2} s after start | test {:.1} s",
        generated.as_secs_f64(),
        (written - generated).as_secs_f64(),
        delivery.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    empty_mailbox(stack, user);
}

/// A proxy in front of the plain IMAP port: answers every `SEARCH … HEADER …` command with an
/// empty result (as servers that do not index custom headers do), and lengthens the literal
/// of any header line `X-Mailcanary: break-the-parser` in the server's replies, so the FETCH
/// response of that mail no longer parses.
struct SearchlessProxy {
    port: u16,
    searches: Arc<AtomicUsize>,
}

const BREAKER: &[u8] = b"X-Mailcanary: break-the-parser";
const BROKEN: &[u8] = b"X-Mailcanary: break-the-parser, and then some";

impl SearchlessProxy {
    fn start(upstream: u16) -> SearchlessProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let searches = Arc::new(AtomicUsize::new(0));
        let counter = searches.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counter = counter.clone();
                thread::spawn(move || proxy_one(client, upstream, counter));
            }
        });
        SearchlessProxy { port, searches }
    }
}

fn proxy_one(client: TcpStream, upstream: u16, searches: Arc<AtomicUsize>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let to_client = Arc::new(Mutex::new(client.try_clone().unwrap()));
    let mut to_server = server.try_clone().unwrap();
    let answer = to_client.clone();
    let up = thread::spawn(move || {
        let mut lines = BufReader::new(client);
        let mut line = String::new();
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            let upper = line.to_ascii_uppercase();
            if upper.contains(" SEARCH ") && upper.contains("HEADER") {
                searches.fetch_add(1, Ordering::SeqCst);
                let tag = line.split(' ').next().unwrap_or("*");
                let reply = format!("* SEARCH\r\n{tag} OK Search completed (0 found).\r\n");
                if answer.lock().unwrap().write_all(reply.as_bytes()).is_err() {
                    break;
                }
            } else if to_server.write_all(line.as_bytes()).is_err() {
                break;
            }
            line.clear();
        }
        let _ = to_server.shutdown(Shutdown::Both);
    });
    let mut server = server;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = server.read(&mut buf) {
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let (out, keep) = rewrite(&pending);
        if to_client.lock().unwrap().write_all(&out).is_err() {
            break;
        }
        pending.drain(..pending.len() - keep);
    }
    let _ = to_client.lock().unwrap().shutdown(Shutdown::Both);
    let _ = up.join();
}

/// Replaces BREAKER by BROKEN in `data`; returns what can be sent and how many bytes at the
/// end must wait for more (a possible start of BREAKER).
fn rewrite(data: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let rest = &data[i..];
        if rest.starts_with(BREAKER) {
            out.extend_from_slice(BROKEN);
            i += BREAKER.len();
        } else if BREAKER.starts_with(rest) {
            return (out, rest.len());
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    (out, 0)
}

#[test]
fn canaries_are_found_where_search_header_finds_nothing() {
    let stack = stack();
    let user = "box31@example.test";
    empty_mailbox(stack, user);
    let breaker = format!(
        "From: someone@example.org\r\nTo: {user}\r\nSubject: breaker\r\n\
         {}\r\n\r\nThis mail's FETCH response will not parse.\r\n",
        String::from_utf8_lossy(BREAKER)
    );
    let paths = place(
        stack,
        user,
        "breaker",
        &[ordinary(user, 1), breaker.clone()],
    );
    let proxy = SearchlessProxy::start(stack.port("MAILSTACK_IMAP_PORT"));
    let plain = section(stack, "searchless", user, "interval = \"2s\"").replace(
        &format!(
            "port = {}\n  tls = \"tls\"",
            stack.port("MAILSTACK_IMAPS_PORT")
        ),
        &format!("port = {}\n  tls = \"none\"", proxy.port),
    );
    let work = Workdir::new("it-hostile-searchless", &plain);
    let daemon = work.daemon(stack);
    daemon.wait_for("two deliveries", LIMIT, || {
        metric(&daemon.scrape(), &delivered("searchless")).unwrap_or(0.0) >= 2.0
    });
    let text = daemon.scrape();
    assert_eq!(value(&text, &up("searchless")), 1.0, "{text}");
    assert_eq!(
        value(&text, &skipped("searchless")),
        1.0,
        "the mail whose FETCH response breaks the parser is skipped, once"
    );
    drop(daemon);
    println!(
        "hostile | SEARCH HEADER commands answered empty by the proxy: {}",
        proxy.searches.load(Ordering::SeqCst)
    );
    let files = mail_files(&stack.maildir(user));
    for (path, text) in [(&paths[0], ordinary(user, 1)), (&paths[1], breaker)] {
        assert!(
            files.iter().any(|(p, t)| p == path && *t == text),
            "{} was changed or removed",
            path.display()
        );
    }
    empty_mailbox(stack, user);
}

#[test]
fn a_forgers_markup_in_from_and_subject_renders_as_text_on_the_probe_page() {
    // Issue 15: what a mailbox hands us is shown as text. A forged canary (anyone can send
    // one) with markup in its From and Subject, and an ordinary mail with a script subject
    // beside it; the probe page names the forged mail, and Chromium's DOM holds no element the
    // mails wrote.
    let stack = stack();
    let user = "box32@example.test";
    empty_mailbox(stack, user);
    let (agent, probe) = ("it-hostile-page", "page");
    let forged_mail = forged(user, agent, probe, 1)
        .replace(
            "From: probe1@example.test",
            "From: \"<img src=x onerror=alert(2)>\" <evil@example.test>",
        )
        .replace(
            "Subject: forged 1",
            "Subject: <script>alert(1)</script> \"quoted\" 'single' \u{1}",
        );
    let ordinary = format!(
        "From: a@example.org\r\nTo: {user}\r\nSubject: <script>alert(3)</script>\r\n\r\nhi\r\n"
    );
    place(stack, user, "page", &[forged_mail, ordinary]);
    let work = Workdir::new(agent, &section(stack, probe, user, ""));
    let daemon = work.daemon(stack);
    daemon.wait_for("the forged mail counted", LIMIT, || {
        forged_sum(&daemon.scrape(), probe) == 1.0
    });
    let dom = in_chromium(
        &format!("http://127.0.0.1:{}/probe/{probe}", daemon.port),
        "hostile-probe",
    );
    let forged_row = table(&dom, "forged");
    assert!(
        forged_row.contains("&lt;script&gt;alert(1)&lt;/script&gt; \"quoted\" 'single'"),
        "the subject as text: {forged_row}"
    );
    assert!(
        forged_row.contains("\"&lt;img src=x onerror=alert(2)&gt;\" &lt;evil@example.test&gt;"),
        "the From as text: {forged_row}"
    );
    for element in ["<script", "<img"] {
        assert!(!dom.contains(element), "{element} in the DOM:\n{dom}");
    }
    let status = api_status(&daemon);
    let subject = status_of(&status, probe)["last_forged"]["subject"].as_str();
    assert_eq!(
        subject.map(str::trim_end),
        Some("<script>alert(1)</script> \"quoted\" 'single'"),
        "the JSON keeps the text (printable) for scripts to escape"
    );
    drop(daemon);
    empty_mailbox(stack, user);
}
