//! A gateway that strips unknown headers (issue 11): Postfix removes every `X-Mailcanary:`
//! header on the way, and each class is still found by its signed body token, verified, timed
//! and removed, and counted as having arrived without its header, on every receiver.

use std::path::Path;

use crate::support::*;

/// The receiving side of a probe section reading `user` over `protocol`.
fn section(stack: &Stack, name: &str, user: &str, protocol: &str) -> String {
    let full = probe_section(stack, name, user, "MC_PROBE1_PASSWORD");
    let (sending, imap) = full
        .split_once("  [probe.mailbox]")
        .expect("probe_section has a mailbox part");
    let receiving = match protocol {
        "imap" => imap.to_string(),
        "maildir" => format!(
            "\n  protocol = \"maildir\"\n  path = \"{}\"\n  poll_interval = \"250ms\"\n",
            stack.maildir(user).display()
        ),
        "pop3" => format!(
            "\n  protocol = \"pop3\"\n  host = \"127.0.0.1\"\n  port = {}\n  tls = \"tls\"\n  \
             username = \"{user}\"\n  password_env = \"MAILSTACK_TEST_PASSWORD\"\n  \
             ca_file = \"{}\"\n  poll_interval = \"250ms\"\n  timeout = \"5s\"\n",
            stack.port("MAILSTACK_POP3S_PORT"),
            stack.get("MAILSTACK_CA_FILE"),
        ),
        other => panic!("no receiver {other}"),
    };
    format!("{sending}  [probe.mailbox]{receiving}")
}

#[test]
fn canaries_whose_header_a_gateway_strips_are_still_delivered_verified_and_removed() {
    // Its own stack: the rule strips the header of every mail that passes.
    let stack = StackGuard(Stack::up(
        Path::new("/tmp/mailcanary-it-strip"),
        Some(23000),
    ));
    let stack = &stack.0;
    stack.ctl("rule", &["clear"]);
    stack.ctl("rule", &["add", "/^X-Mailcanary:/ IGNORE"]);
    let receivers = [
        ("maildir", "box02@example.test"),
        ("pop3", "box03@example.test"),
        ("imap", "box04@example.test"),
    ];
    let mut probes = String::new();
    for (protocol, user) in receivers {
        empty_mailbox(stack, user);
        place_ordinary_mail(stack, user, "strip");
        probes.push_str(&section(
            stack,
            &format!("strip-{protocol}"),
            user,
            protocol,
        ));
    }
    let work = Workdir::new("it-stripped", &probes);
    let text = work.once(stack, "30s");
    for (protocol, user) in receivers {
        let probe = format!("strip-{protocol}");
        for class in ["interpersonal", "transactional", "bulk"] {
            let labels = format!("class=\"{class}\",folder=\"INBOX\",probe=\"{probe}\"");
            let delivered = format!("mailcanary_delivered_total{{{labels}}}");
            assert_eq!(
                metric(&text, &delivered),
                Some(1.0),
                "{probe} {class}:\n{text}"
            );
            let per_class = |name: &str| {
                let series = format!("mailcanary_{name}{{class=\"{class}\",probe=\"{probe}\"}}");
                metric(&text, &series)
            };
            assert_eq!(
                per_class("header_stripped_total"),
                Some(1.0),
                "{probe} {class}"
            );
            assert_eq!(per_class("forged_total"), Some(0.0), "{probe} {class}");
            assert_eq!(per_class("in_flight"), Some(0.0), "{probe} {class}");
        }
        // Removed: no mail carrying a token is left; the ordinary mail is still there.
        let files = mail_files(&stack.maildir(user));
        let left: Vec<_> = files
            .iter()
            .filter(|(_, t)| t.contains("mailcanary-id:"))
            .map(|(p, _)| p)
            .collect();
        assert!(left.is_empty(), "{protocol}: canaries left: {left:?}");
        assert!(
            files.iter().any(|(_, t)| t.contains("ordinary-strip@")),
            "{protocol}: the ordinary mail is gone"
        );
    }
    stack.ctl("rule", &["clear"]);
}
