//! What the benchmarks share: starting a private mail stack and reading its `stack.env`.
//! (Benchmarks cannot use tests/it/support.rs, so the few lines they all need live here.)

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

/// `KEY=value` lines of a stack's `stack.env`.
pub type Env = HashMap<String, String>;

/// Runs `scripts/mailstack` with `args`, on `port_base` when the stack is first created.
pub fn mailstack(args: &[&str], port_base: Option<&str>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack");
    let mut cmd = Command::new(script);
    cmd.args(args);
    if let Some(base) = port_base {
        cmd.env("MAILSTACK_PORT_BASE", base);
    }
    cmd.output().expect("run scripts/mailstack")
}

/// Starts (or reuses) the stack in `dir` and returns its environment.
pub fn stack_up(dir: &str, port_base: Option<&str>) -> Env {
    let out = mailstack(&["up", dir], port_base);
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
