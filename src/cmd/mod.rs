//! The subcommands. Each returns its exit code; `main` only wires.

pub mod check;
pub mod once;
pub mod run;
pub mod status;

use std::process::ExitCode;

/// Exit code for configuration and usage errors.
pub const EXIT_CONFIG: u8 = 1;
/// Exit code when a probe could not send or read at all, or an endpoint check failed.
pub const EXIT_PROBE_FAILED: u8 = 2;

/// Exit code for a run in which `failed` tells whether some probe failed entirely.
pub fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(EXIT_PROBE_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
