//! Stopping the agent in the middle of a send round (issue 10): the canary being submitted
//! finishes and is booked, no further class is begun, nothing is written after the store
//! closed, and after a restart the books agree with what the server accepted.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use crate::support::*;

/// A plain-SMTP proxy in front of the real Postfix that holds the server's final reply to the
/// first message ("250 2.0.0 Ok: queued as …") for a while: Postfix has accepted the mail, the
/// client does not know yet. A server this slow is a fault Postfix will not produce on demand.
struct SlowQueueReply {
    port: u16,
    /// Every "queued as" reply that passed (the mails the server accepted).
    accepted: Arc<AtomicUsize>,
    /// Told when the first reply is being held.
    held: mpsc::Receiver<()>,
}

impl SlowQueueReply {
    fn start(upstream: u16, hold: Duration) -> SlowQueueReply {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tell, held) = mpsc::channel();
        let counter = Arc::clone(&accepted);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (counter, tell) = (Arc::clone(&counter), tell.clone());
                thread::spawn(move || relay(client, upstream, &counter, &tell, hold));
            }
        });
        SlowQueueReply {
            port,
            accepted,
            held,
        }
    }
}

fn relay(
    client: TcpStream,
    upstream: u16,
    accepted: &AtomicUsize,
    tell: &mpsc::Sender<()>,
    hold: Duration,
) {
    crate::proxy::relay(client, upstream, |chunk| {
        if chunk.windows(9).any(|w| w == b"queued as")
            && accepted.fetch_add(1, Ordering::SeqCst) == 0
        {
            let _ = tell.send(());
            thread::sleep(hold);
        }
        chunk.len()
    });
}

#[test]
fn sigterm_during_a_round_books_the_accepted_canary_and_begins_no_other() {
    let stack = Stack::shared();
    let user = "box26@example.test";
    empty_mailbox(stack, user);
    let proxy = SlowQueueReply::start(stack.port("MAILSTACK_SMTP_PORT"), Duration::from_secs(3));
    // The stack's usual probe, sending over plain SMTP through `smtp_port` and polling.
    let section = |smtp_port: u16| {
        let usual = probe_section(stack, "stop-mid-round", user, "MC_PROBE1_PASSWORD");
        let (head, mailbox) = usual
            .split_once("  [probe.smtp]")
            .expect("probe_section has an smtp part");
        let (_, mailbox) = mailbox
            .split_once("  [probe.mailbox]")
            .expect("probe_section has a mailbox part");
        format!(
            "{head}  [probe.smtp]\n  host = \"127.0.0.1\"\n  port = {smtp_port}\n  tls = \"none\"\n  \
             timeout = \"20s\"\n  [probe.mailbox]{mailbox}  watch = \"poll\"\n"
        )
        .replace("jitter = \"100ms\"", "jitter = \"200ms\"")
    };
    let work = Workdir::new("it-shutdown", &section(proxy.port));
    let mut daemon = work.daemon_with(stack, CANARY_LINES);
    proxy
        .held
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no canary reached the server\n{}", daemon.log_text()));
    let status = daemon.terminate();
    let log = daemon.log_text();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(
        !log.contains("state store write failed") && !log.contains("writer has stopped"),
        "written after the store closed:\n{log}"
    );
    assert!(
        log.contains("canary sent"),
        "the held canary was booked:\n{log}"
    );
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst),
        1,
        "no class begun after the signal"
    );

    // Restart, with sending now refused (so the restart's own round adds nothing): the books
    // know the canary the server accepted, and it is delivered as the one they expect.
    work.rewrite("it-shutdown", &section(free_port()));
    let daemon = work.daemon(stack);
    daemon.wait_for("the held canary delivered", Duration::from_secs(20), || {
        probe_total(
            &daemon.scrape(),
            "mailcanary_delivered_total",
            "stop-mid-round",
        ) == 1.0
    });
    // The restart's own round is refused at connect, class by class: once all three are, no
    // canary of it can be in flight any more.
    daemon.wait_for(
        "the restart's round refused",
        Duration::from_secs(20),
        || {
            probe_total(
                &daemon.scrape(),
                "mailcanary_send_failures_total",
                "stop-mid-round",
            ) == 3.0
        },
    );
    let text = daemon.scrape();
    assert_eq!(
        probe_total(&text, "mailcanary_sent_total", "stop-mid-round"),
        1.0
    );
    assert_eq!(
        probe_total(&text, "mailcanary_in_flight", "stop-mid-round"),
        0.0
    );
    let log = daemon.log_text();
    assert!(
        !log.contains("the books do not know"),
        "delivered as a stranger to the books:\n{log}"
    );
}
