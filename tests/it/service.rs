//! The systemd units and cron example in `dist/` (issue 15): systemd's own checker accepts
//! them, their hardening scores as systemd rates it, and the commands they run are commands
//! this binary accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Where the units expect the binary.
const INSTALLED: &str = "/usr/local/bin/mailcanary";
/// Where they expect the config.
const CONFIG: &str = "/etc/mailcanary/probes.toml";

fn dist(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(name)
}

/// The units, copied into `dir` with the binary built here in place of the installed one
/// (`systemd-analyze verify` checks that every command exists).
fn units_in(dir: &Path) -> Vec<PathBuf> {
    let mut units = Vec::new();
    for name in [
        "mailcanary.service",
        "mailcanary-once.service",
        "mailcanary-once.timer",
    ] {
        let text = std::fs::read_to_string(dist("systemd").join(name)).expect("unit");
        let unit = dir.join(name);
        let built = env!("CARGO_BIN_EXE_mailcanary");
        std::fs::write(&unit, text.replace(INSTALLED, built)).expect("write unit");
        units.push(unit);
    }
    units
}

#[test]
fn systemd_verifies_the_units_without_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let units = units_in(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (package systemd) runs");
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "warnings: {}",
        output_text(&out)
    );
}

#[test]
fn the_services_are_hardened_as_systemd_rates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in units_in(dir.path())
        .iter()
        .filter(|u| u.extension().is_some_and(|e| e == "service"))
    {
        // systemd rates a unit's exposure from 0 (locked down) to 10; "OK" is below 2. The
        // threshold makes the command fail above it.
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=19"])
            .arg(unit)
            .current_dir(dir.path())
            .output()
            .expect("systemd-analyze security");
        assert!(out.status.success(), "{}", output_text(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let level = text
            .lines()
            .find_map(|l| l.split("exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|l| l.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no exposure level in: {text}"));
        assert!(level < 2.0, "{}: exposure {level}\n{text}", unit.display());
    }
}

/// The `ExecStartPre=`/`ExecStart=` command lines of a unit, split on spaces (the units quote
/// nothing).
fn commands(unit: &str, key: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dist("systemd").join(unit)).expect("unit");
    text.lines()
        .filter_map(|l| l.strip_prefix(key))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn the_units_and_the_cron_line_run_commands_this_binary_accepts() {
    let stack = Stack::shared();
    let work = Workdir::new(
        "it-service",
        &probe_section(stack, "svc", "probe2@example.test", "MC_PROBE1_PASSWORD"),
    );
    let config = work.config();
    let config = config.to_str().expect("a UTF-8 path");
    let pre = commands("mailcanary.service", "ExecStartPre=");
    assert_eq!(pre.len(), 1, "{pre:?}");
    let run = commands("mailcanary.service", "ExecStart=");
    let once = commands("mailcanary-once.service", "ExecStart=");
    let cron = std::fs::read_to_string(dist("systemd").join("mailcanary.cron")).expect("cron");
    let cron_line = cron
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a cron line");
    let cron_command: Vec<String> = cron_line
        .split(INSTALLED)
        .nth(1)
        .expect("the cron line runs the binary")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for command in [&pre[0], &run[0], &once[0]] {
        assert_eq!(command[0], INSTALLED, "{command:?}");
    }
    // The config check runs as the unit runs it, on a real config.
    let check = with_config(&pre[0][1..], config);
    let out = Command::new(env!("CARGO_BIN_EXE_mailcanary"))
        .args(&check)
        .envs(&stack.env)
        .output()
        .expect("mailcanary");
    assert!(out.status.success(), "{check:?}: {}", output_text(&out));
    // The others parse (their --help is answered after the arguments are accepted by the
    // parser up to the subcommand's own flags).
    for args in [&run[0][1..], &once[0][1..], &cron_command[..]] {
        let args = with_config(args, config);
        let mut probe: Vec<&str> = args.iter().map(String::as_str).collect();
        probe.push("--help");
        let out = Command::new(env!("CARGO_BIN_EXE_mailcanary"))
            .args(&probe)
            .output()
            .expect("mailcanary");
        assert!(out.status.success(), "{probe:?}: {}", output_text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in args
            .iter()
            .filter(|a| a.starts_with("--") && *a != "--config")
        {
            assert!(
                help.contains(flag.as_str()),
                "{flag} unknown to {probe:?}:\n{help}"
            );
        }
    }
}

/// `args` with the installed config path replaced by `config`.
fn with_config(args: &[String], config: &str) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a == CONFIG {
                config.to_string()
            } else {
                a.clone()
            }
        })
        .collect()
}
