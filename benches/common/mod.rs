//! What the benchmarks share: starting a private mail stack and reading its `stack.env`, and
//! running an agent on it ([`agent`]). (Benchmarks cannot use tests/it/support.rs, so the few
//! lines they all need live here.) Not every benchmark uses every item.
#![allow(dead_code)]

pub mod agent;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

/// `KEY=value` lines of a stack's `stack.env`.
pub type Env = HashMap<String, String>;

/// Runs `scripts/mailstack` with `args`, on `port_base` when the stack is first created.
pub fn mailstack(args: &[&str], port_base: Option<&str>) -> Output {
    mailstack_with(args, port_base, None)
}

/// [`mailstack`], asking for `users` test users (`MAILSTACK_USERS`) when given.
fn mailstack_with(args: &[&str], port_base: Option<&str>, users: Option<u64>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack");
    let mut cmd = Command::new(script);
    cmd.args(args);
    if let Some(base) = port_base {
        cmd.env("MAILSTACK_PORT_BASE", base);
    }
    if let Some(users) = users {
        cmd.env("MAILSTACK_USERS", users.to_string());
    }
    cmd.output().expect("run scripts/mailstack")
}

/// Starts (or reuses) the stack in `dir` and returns its environment.
pub fn stack_up(dir: &str, port_base: Option<&str>) -> Env {
    stack_up_with_users(dir, port_base, None)
}

/// [`stack_up`] with `users` test users (box01..boxNN, `MAILSTACK_USERS`; the stack's 40 when
/// `None`).
pub fn stack_up_with_users(dir: &str, port_base: Option<&str>, users: Option<u64>) -> Env {
    let out = mailstack_with(&["up", dir], port_base, users);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(Path::new(dir).join("stack.env"))
        .expect("stack.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Removes every mail of `users` from the stack's maildirs, so a run does not read the
/// canaries an earlier run left behind (signed with that run's key, they count as forged and
/// swell the books being measured). Only a benchmark's private stack is ever emptied.
pub fn empty_mailboxes(env: &Env, users: impl IntoIterator<Item = String>) {
    let template = &env["MAILSTACK_MAILDIR_TEMPLATE"];
    for user in users {
        let maildir = Path::new(&template.replace("%u", &user)).to_path_buf();
        for sub in [
            "new",
            "cur",
            "Junk/new",
            "Junk/cur",
            ".Junk/new",
            ".Junk/cur",
        ] {
            let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
