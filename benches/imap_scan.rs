//! Benchmark of one IMAP look (issue 11): how long `canaries()` takes in an empty box, while
//! 24,000 mails (12,000 of them carrying an `X-Mailcanary` header) are read for the first time,
//! and once they have been read, in the same process and in a new one that continues from the
//! persisted scan memory.
//!
//! `cargo bench --bench imap_scan [-- MAILS]` (prints figures; asserts nothing about speed).
//! Needs root and starts its own private stack (`/tmp/mailcanary-bench-imap`, ports 28xxx).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt as _, chown};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::stack_up;

use mailcanary::config::Config;
use mailcanary::mailbox::{self, Mailbox};

const STACK: &str = "/tmp/mailcanary-bench-imap";
const PORT_BASE: &str = "28000";
const USER: &str = "box01@example.test";
const STEADY_LOOKS: usize = 20;

fn open(env: &HashMap<String, String>) -> Box<dyn Mailbox> {
    let text = format!(
        r#"[agent]
id = "bench-imap-scan"

[[probe]]
name = "bench"
from = "probe1@example.test"
to = "{USER}"
  [probe.smtp]
  host = "127.0.0.1"
  port = {submission}
  tls = "starttls"
  username = "probe1@example.test"
  password = "unused"
  ca_file = "{ca}"
  [probe.mailbox]
  protocol = "imap"
  host = "127.0.0.1"
  port = {imaps}
  tls = "tls"
  username = "{USER}"
  password = "{password}"
  ca_file = "{ca}"
  folders = ["INBOX", "Junk"]
  cleanup = "keep"
  timeout = "60s"
"#,
        submission = env["MAILSTACK_SUBMISSION_PORT"],
        imaps = env["MAILSTACK_IMAPS_PORT"],
        ca = env["MAILSTACK_CA_FILE"],
        password = env["MAILSTACK_TEST_PASSWORD"],
    );
    let config = Config::parse(Path::new("bench.toml"), &text).expect("bench config");
    mailbox::open(&config.probes[0].mailbox).expect("open the mailbox")
}

fn maildir(env: &HashMap<String, String>) -> PathBuf {
    PathBuf::from(env["MAILSTACK_MAILDIR_TEMPLATE"].replace("%u", USER))
}

fn empty(dir: &Path) {
    for sub in ["new", "cur", ".Junk/new", ".Junk/cur"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Every other mail carries a canary header (not a valid one: the adapter does not judge).
fn fill(dir: &Path, mails: u32) {
    let owner = std::fs::metadata(dir).unwrap();
    for n in 0..mails {
        let mark = if n % 2 == 0 {
            format!("X-Mailcanary: v=1; id=01JDQ8ZK3V6R9X1T2Y{n:08}; probe=bench; sig=x\r\n")
        } else {
            String::new()
        };
        let text = format!(
            "From: someone{n}@example.org\r\nTo: {USER}\r\nSubject: mail {n}\r\n\
             Message-ID: <bench-{n}@example.org>\r\n{mark}\r\nNothing to see here, {n}.\r\n"
        );
        let path = dir.join(format!("cur/1795000000.M{n}Pbench.vm,S={}:2,", text.len()));
        std::fs::write(&path, text).unwrap();
        chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
}

/// One look: its duration and what it reported.
async fn look(mailbox: &mut dyn Mailbox) -> (Duration, usize) {
    let start = Instant::now();
    let found = mailbox.canaries().await.expect("the look succeeds");
    (start.elapsed(), found.arrivals.len())
}

/// Median of `STEADY_LOOKS` looks that find nothing new.
async fn steady(mailbox: &mut dyn Mailbox) -> Duration {
    let mut times = Vec::new();
    for _ in 0..STEADY_LOOKS {
        let (t, n) = look(mailbox).await;
        assert_eq!(n, 0, "nothing new");
        times.push(t);
    }
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mails: u32 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(24_000);
    let env = stack_up(STACK, Some(PORT_BASE));
    let dir = maildir(&env);
    empty(&dir);

    let mut mailbox = open(&env);
    let (first, _) = look(mailbox.as_mut()).await;
    let empty_look = steady(mailbox.as_mut()).await;
    println!(
        "imap_scan | empty box | first look (login) {:.1} ms | look median {:.2} ms",
        ms(first),
        ms(empty_look)
    );

    let start = Instant::now();
    fill(&dir, mails);
    println!(
        "imap_scan | {mails} mails written in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let mut reported = 0;
    let mut looks = 0;
    let catch_up = Instant::now();
    while reported < (mails as usize).div_ceil(2) {
        let (t, n) = look(mailbox.as_mut()).await;
        looks += 1;
        reported += n;
        println!(
            "imap_scan | reading them | look {looks}: {:.0} ms, {n} marked mails",
            ms(t)
        );
        assert!(looks < 100, "the look never catches up");
    }
    println!(
        "imap_scan | read {mails} mails in {looks} looks, {:.2} s",
        catch_up.elapsed().as_secs_f64()
    );
    let after = steady(mailbox.as_mut()).await;
    println!(
        "imap_scan | after {mails} mails | look median {:.2} ms (empty box: {:.2} ms)",
        ms(after),
        ms(empty_look)
    );

    // The same adapter after a fresh login (the daemon logs in again after any error).
    mailbox.close().await;
    let (first, _) = look(mailbox.as_mut()).await;
    let relogged = steady(mailbox.as_mut()).await;
    println!(
        "imap_scan | after {mails} mails, new session | first look (login) {:.1} ms | look \
         median {:.2} ms",
        ms(first),
        ms(relogged)
    );

    // A new process continuing from the persisted memory.
    let memory = mailbox.scan_memory().expect("the adapter remembers");
    mailbox.close().await;
    let mut restarted = open(&env);
    restarted.restore_scan_memory(&memory);
    let (first, n) = look(restarted.as_mut()).await;
    assert_eq!(n, 0, "nothing is read again after a restart");
    let again = steady(restarted.as_mut()).await;
    println!(
        "imap_scan | restarted with the memory | first look (login) {:.1} ms | look median \
         {:.2} ms",
        ms(first),
        ms(again)
    );
    restarted.close().await;
    empty(&dir);
}
