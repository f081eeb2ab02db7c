//! The shipped alert rules load in Prometheus and pass their promtool unit tests.

use std::path::Path;
use std::process::Command;

use crate::support::output_text;

fn promtool(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root)
        .output()
        .expect("promtool is installed (scripts/mailstack install --all)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}",
        output_text(&out)
    );
}

#[test]
fn rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "alerts/mailcanary.rules.yml"]);
    promtool(&["test", "rules", "alerts/tests/mailcanary.test.yml"]);
}
