//! Maildir receiver on the real stack: Dovecot delivers into the user's Maildir, the agent reads
//! it from disk. Uses box16, box18 and box19 only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

const CLASSES: [&str; 3] = ["interpersonal", "transactional", "bulk"];

/// A `[[probe]]` section that sends as `probe_section` does but reads `user`'s Maildir from
/// disk, with `extra` mailbox keys (e.g. `cleanup`) appended.
fn maildir_section(stack: &Stack, name: &str, user: &str, folders: &str, extra: &str) -> String {
    let section = probe_section(stack, name, user, "MC_PROBE1_PASSWORD");
    let (sending, _imap) = section
        .split_once("  [probe.mailbox]")
        .expect("probe_section has a mailbox part");
    format!(
        "{sending}  [probe.mailbox]\n  protocol = \"maildir\"\n  path = \"{path}\"\n  \
         folders = {folders}\n  poll_interval = \"250ms\"\n{extra}",
        path = stack.maildir(user).display(),
    )
}

fn labels(probe: &str, class: &str) -> String {
    format!("class=\"{class}\",probe=\"{probe}\"")
}

/// Every file in the mail directories of a Maildir, including folders `mail_files` skips.
fn files_under(maildir: &Path, subdirs: &[&str]) -> Vec<PathBuf> {
    subdirs
        .iter()
        .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .collect()
}

#[test]
fn once_measures_every_class_and_leaves_other_mail_alone() {
    let stack = Stack::shared();
    let user = "box16@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    inject(
        stack,
        "friend@example.test",
        user,
        "From: friend@example.test\nTo: box16@example.test\nSubject: lunch\n\
         Message-ID: <ordinary-16@example.test>\n\nSee you at noon.\n",
    );
    let (ordinary, _) = wait_for_mail(&maildir, "ordinary-16@example.test");
    let before = std::fs::read(&ordinary).expect("read the ordinary mail");

    let section = maildir_section(stack, "md", user, r#"["INBOX", "Junk"]"#, "");
    let work = Workdir::new("it-maildir-once", &section);
    let text = work.once(stack, "30s");

    for class in CLASSES {
        let l = labels("md", class);
        assert_eq!(
            metric(
                &text,
                &format!("mailcanary_delivered_total{{{l},folder=\"INBOX\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                &format!("mailcanary_delivery_delay_seconds_count{{{l}}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            metric(&text, &format!("mailcanary_in_flight{{{l}}}")),
            Some(0.0)
        );
        let delay = metric(
            &text,
            &format!("mailcanary_last_delivery_delay_seconds{{{l}}}"),
        )
        .expect("last delay");
        assert!(delay > 0.0 && delay < 30.0, "implausible delay {delay}");
    }
    assert_eq!(
        metric(
            &text,
            "mailcanary_mailbox_up{probe=\"md\",protocol=\"maildir\"}"
        ),
        Some(1.0),
        "{text}"
    );

    let files = mail_files(&maildir);
    assert!(
        files.iter().all(|(_, t)| !t.contains("X-Mailcanary")),
        "canaries left in the Maildir: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    // Same name (not moved to cur/, no flags added) and the same bytes.
    let after = std::fs::read(&ordinary).expect("the ordinary mail is where it was");
    assert!(after == before, "the ordinary mail's content changed");
    assert_eq!(
        files.len(),
        1,
        "{:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
}

#[test]
fn run_is_told_of_a_delivery_without_polling() {
    let stack = Stack::shared();
    let user = "box18@example.test";
    empty_mailbox(stack, user);
    // Held by the stack until released, so the delivery happens after the agent's first look;
    // with a 10-minute rescan, only the inotify watch can see it within seconds.
    let section = with_probe_keys(
        &maildir_section(stack, "ev", user, r#"["INBOX", "Junk"]"#, ""),
        "classes = [\"interpersonal\"]",
    )
    .replace(
        "to = \"box18@example.test\"",
        "to = \"box18+hold@example.test\"",
    )
    .replace("poll_interval = \"250ms\"", "poll_interval = \"10min\"");
    assert!(
        section.contains("box18+hold@") && section.contains("\"10min\""),
        "{section}"
    );
    let work = Workdir::new("it-maildir-events", &section);
    let daemon = work.daemon(stack);
    let l = labels("ev", "interpersonal");
    let up = "mailcanary_mailbox_up{probe=\"ev\",protocol=\"maildir\"}";
    daemon.wait_metric(up, 1.0, Duration::from_secs(10));
    daemon.wait_metric(
        &format!("mailcanary_sent_total{{{l}}}"),
        1.0,
        Duration::from_secs(10),
    );
    let delivered = format!("mailcanary_delivered_total{{{l},folder=\"INBOX\"}}");
    assert_eq!(metric(&daemon.scrape(), &delivered), Some(0.0));

    stack.ctl("release", &["box18+hold@example.test"]);
    daemon.wait_metric(&delivered, 1.0, Duration::from_secs(5));
    let text = daemon.scrape();
    assert_eq!(
        metric(&text, &format!("mailcanary_in_flight{{{l}}}")),
        Some(0.0)
    );
    assert_eq!(metric(&text, up), Some(1.0));
    daemon.wait_for(
        "the canary file to be deleted",
        Duration::from_secs(5),
        || mail_files(&stack.maildir(user)).is_empty(),
    );
}

#[test]
fn junk_placement_is_counted_and_move_files_canaries_away() {
    let stack = Stack::shared();
    let user = "box19@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    // The move target: a Maildir++ folder of this user's own, emptied for the test.
    let trash = maildir.join(".Trash");
    let _ = std::fs::remove_dir_all(&trash);
    for dir in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(trash.join(dir)).expect("create .Trash");
    }
    let section = with_probe_keys(
        &maildir_section(
            stack,
            "mv",
            user,
            r#"["INBOX", "Junk"]"#,
            "  cleanup = \"move:Trash\"\n",
        ),
        "classes = [\"interpersonal\", \"spammy\"]",
    );
    let config = format!(
        "{section}\n[class.spammy]\ntemplate = \"bulk\"\nheaders = {{ \"X-Spam-Flag\" = \"YES\" }}\n"
    );
    let work = Workdir::new("it-maildir-move", &config);
    let text = work.once(stack, "30s");

    let in_folder = |class: &str, folder: &str| {
        let l = labels("mv", class);
        metric(
            &text,
            &format!("mailcanary_delivered_total{{{l},folder=\"{folder}\"}}"),
        )
    };
    assert_eq!(in_folder("interpersonal", "INBOX"), Some(1.0), "{text}");
    assert_eq!(in_folder("interpersonal", "Junk"), Some(0.0), "{text}");
    assert_eq!(in_folder("spammy", "Junk"), Some(1.0), "{text}");
    assert_eq!(in_folder("spammy", "INBOX"), Some(0.0), "{text}");

    assert!(
        mail_files(&maildir).is_empty(),
        "canaries left in INBOX or Junk"
    );
    let moved = files_under(&maildir, &[".Trash/cur"]);
    assert_eq!(moved.len(), 2, "{moved:?}");
    for path in &moved {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(name.contains(":2,"), "moved without Maildir info: {name}");
        let content = std::fs::read_to_string(path).unwrap();
        assert!(content.contains("X-Mailcanary:"), "{name} is not a canary");
    }
    assert!(files_under(&maildir, &[".Trash/new"]).is_empty());
}

#[test]
fn a_canary_whose_removal_failed_is_removed_later_and_counted_once() {
    let stack = Stack::shared();
    let user = "box32@example.test";
    let maildir = stack.maildir(user);
    empty_mailbox(stack, user);
    let _ = std::fs::remove_dir_all(maildir.join(".Retry"));
    let section = with_probe_keys(
        &maildir_section(
            stack,
            "retry",
            user,
            "[\"INBOX\"]",
            "  cleanup = \"move:Retry\"\n",
        ),
        "classes = [\"interpersonal\"]",
    );
    let work = Workdir::new("it-retry", &section);
    let daemon = work.daemon(stack);
    // The target folder does not exist yet: the move fails, the canary stays.
    daemon.wait_metric(
        "mailcanary_mailbox_errors_total{probe=\"retry\",stage=\"cleanup\"}",
        1.0,
        Duration::from_secs(15),
    );
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(".Retry").join(sub)).unwrap();
    }
    daemon.wait_for(
        "the canary to be moved once the folder exists",
        Duration::from_secs(15),
        || {
            !files_under(&maildir, &[".Retry/cur"]).is_empty()
                && files_under(&maildir, &["new", "cur"]).is_empty()
        },
    );
    let text = daemon.scrape();
    let delivered = format!(
        "mailcanary_delivered_total{{{},folder=\"INBOX\"}}",
        labels("retry", "interpersonal")
    );
    assert_eq!(
        metric(&text, &delivered),
        Some(1.0),
        "counted once, though judged again"
    );
    let duplicates = format!(
        "mailcanary_duplicates_total{{{}}}",
        labels("retry", "interpersonal")
    );
    assert_eq!(metric(&text, &duplicates), Some(0.0));
    drop(daemon);
    let _ = std::fs::remove_dir_all(maildir.join(".Retry"));
}

#[test]
fn forged_mail_is_counted_once_and_moved_to_the_quarantine_folder() {
    let stack = Stack::shared();
    for (protocol, user) in [
        ("maildir", "box33@example.test"),
        ("imap", "box35@example.test"),
    ] {
        empty_mailbox(stack, user);
        let maildir = stack.maildir(user);
        let quarantine = maildir.join(".Quarantine");
        let _ = std::fs::remove_dir_all(&quarantine);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(quarantine.join(sub)).unwrap();
        }
        std::fs::write(quarantine.join("maildirfolder"), "").unwrap();
        // Dovecot, running as the mail user, must be able to move mail into it.
        let owned = std::process::Command::new("chown")
            .args(["-R", "vmail:vmail"])
            .arg(&quarantine)
            .status();
        assert!(owned.is_ok_and(|s| s.success()));
        let probe = format!("quarantine-{protocol}");
        let agent = format!("it-quarantine-{protocol}");
        // A mail that claims this agent and probe with a signature made by another key.
        let forged = format!(
            "From: mallory@example.test\nSubject: hi\nX-Mailcanary: v=1; \
             id=01JDQ8ZK3V6R9X1T2Y3Z4A5B6C; probe={probe}; class=bulk; seq=1; sent=1; \
             agent={agent}; sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\nhello\n"
        );
        let path = maildir.join("new").join("1700000000.M1P1.forged");
        std::fs::write(&path, &forged).unwrap();
        let owned = std::process::Command::new("chown")
            .args(["vmail:vmail"])
            .arg(&path)
            .status();
        assert!(owned.is_ok_and(|s| s.success()));
        let base = match protocol {
            "maildir" => maildir_section(stack, &probe, user, r#"["INBOX"]"#, ""),
            _ => probe_section(stack, &probe, user, "MC_PROBE1_PASSWORD")
                .replace("folders = [\"INBOX\", \"Junk\"]", "folders = [\"INBOX\"]"),
        };
        let section = with_probe_keys(
            &format!("{base}  forged = \"move:Quarantine\"\n"),
            "classes = [\"bulk\"]",
        );
        let work = Workdir::new(&agent, &section);
        let series = format!("mailcanary_forged_total{{class=\"bulk\",probe=\"{probe}\"}}");
        for run in 1..=2 {
            let text = work.once(stack, "20s");
            assert_eq!(
                metric(&text, &series),
                Some(1.0),
                "{protocol} run {run}:\n{text}"
            );
        }
        let inbox: Vec<_> = mail_files(&maildir)
            .into_iter()
            .filter(|(_, t)| t.contains("mallory@"))
            .collect();
        assert!(
            inbox.is_empty(),
            "{protocol}: the forged mail is still in INBOX"
        );
        let moved: Vec<_> = ["cur", "new"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(quarantine.join(sub)).unwrap().flatten())
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        assert_eq!(moved.len(), 1, "{protocol}: {moved:?}");
        assert!(
            moved[0].contains("Subject: hi"),
            "{protocol}: moved as it was"
        );
    }
}
