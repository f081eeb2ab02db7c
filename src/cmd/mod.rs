//! The subcommands. Each returns its exit code, or an [`Error`] that carries the class of
//! failure the exit code reports; `main` only wires.
//!
//! The exit code is what cron, systemd and a wrapper script branch on, so each class of failure
//! has its own: "the Pushgateway is down" must not look like "the config is wrong". The class is
//! chosen where the error happens ([`ExitAs::exit_as`]); there is deliberately no conversion from
//! a bare `anyhow::Error`, so an error cannot reach `main` unclassified.

pub mod check;
pub mod once;
pub mod run;
pub mod status;

use std::fmt;
use std::process::ExitCode;

use crate::state::OpenError;

/// The classes of failure, each with its exit code (0 is success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The config file, a file it names (signing key, web config) or the command line is wrong.
    Config,
    /// `once`: a probe could not send or read at all; `check`: an endpoint failed.
    Probe,
    /// The metrics could not be delivered: textfile write or Pushgateway PUT failed.
    Metrics,
    /// The state store cannot be used: locked by another agent, damaged, directory unusable.
    State,
    /// The web listener cannot bind its address.
    Listen,
    /// A bug or an environment failure that is none of the above (a task panicked, the
    /// runtime or a signal handler could not start).
    Internal,
}

impl Failure {
    /// Every class, in exit-code order.
    pub const ALL: [Failure; 6] = [
        Failure::Config,
        Failure::Probe,
        Failure::Metrics,
        Failure::State,
        Failure::Listen,
        Failure::Internal,
    ];

    /// The process exit code of this class.
    pub const fn code(self) -> u8 {
        match self {
            Failure::Config => 1,
            Failure::Probe => 2,
            Failure::Metrics => 3,
            Failure::State => 4,
            Failure::Listen => 5,
            Failure::Internal => 6,
        }
    }

    /// What the code means, as documented in `--help` and the README.
    pub const fn meaning(self) -> &'static str {
        match self {
            Failure::Config => "config or usage error (also an unusable signing key or web config)",
            Failure::Probe => {
                "once: a probe could not send or read at all; check: an endpoint failed"
            }
            Failure::Metrics => "metrics not delivered (textfile write or Pushgateway PUT failed)",
            Failure::State => {
                "state store unusable (locked by another agent, damaged, directory unusable)"
            }
            Failure::Listen => "run: the web listener cannot bind its address",
            Failure::Internal => "internal error (a task panicked, the runtime could not start)",
        }
    }

    /// The exit code as a process result.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// A command that failed: the class (its exit code) and what happened (the message, with the
/// context chain; printed with `{:#}`).
#[derive(Debug)]
pub struct Error {
    /// Which exit code.
    pub failure: Failure,
    /// What happened.
    pub error: anyhow::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

/// Classifies the error of a result: `.exit_as(Failure::Metrics)?`.
pub trait ExitAs<T> {
    /// On error, the failure class it exits with.
    fn exit_as(self, failure: Failure) -> Result<T, Error>;
}

impl<T, E: Into<anyhow::Error>> ExitAs<T> for Result<T, E> {
    fn exit_as(self, failure: Failure) -> Result<T, Error> {
        self.map_err(|e| Error {
            failure,
            error: e.into(),
        })
    }
}

/// Classifies a failure to open the agent (`Agent::open`): the state store's own errors are
/// [`Failure::State`]; everything else it does (signing key, mailbox and probe set-up from the
/// config) is [`Failure::Config`].
pub fn opening(error: anyhow::Error) -> Error {
    let failure = if error.downcast_ref::<OpenError>().is_some() {
        Failure::State
    } else {
        Failure::Config
    };
    Error { failure, error }
}

/// The `--help` text listing every exit code.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit status:\n  0  success\n");
    for f in Failure::ALL {
        text.push_str(&format!("  {}  {}\n", f.code(), f.meaning()));
    }
    text
}

/// Exit code for a run in which `failed` tells whether some probe failed entirely.
pub fn exit_code(failed: bool) -> ExitCode {
    if failed {
        Failure::Probe.exit_code()
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_code_and_1_stays_config() {
        let mut codes: Vec<u8> = Failure::ALL.iter().map(|f| f.code()).collect();
        assert_eq!(Failure::Config.code(), 1);
        assert_eq!(Failure::Probe.code(), 2);
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Failure::ALL.len(), "two classes share a code");
        assert!(!codes.contains(&0));
    }

    #[test]
    fn a_store_error_opening_the_agent_is_a_state_failure_anything_else_config() {
        let locked = OpenError::Locked {
            dir: "/s".into(),
            lock: "/s/lock".into(),
            holder: String::new(),
        };
        let wrapped = anyhow::Error::new(locked).context("opening");
        assert_eq!(opening(wrapped).failure, Failure::State);
        let key = anyhow::Error::new(crate::config::KeyError::EnvNotSet { var: "K".into() })
            .context("loading the canary signing key");
        assert_eq!(opening(key).failure, Failure::Config);
    }

    #[test]
    fn the_message_keeps_the_context_chain() {
        let e: Result<(), _> = Err(anyhow::anyhow!("connection refused").context("pushing to x"));
        let e = e.exit_as(Failure::Metrics).unwrap_err();
        assert_eq!(format!("{e:#}"), "pushing to x: connection refused");
        assert_eq!(e.failure.exit_code(), ExitCode::from(3));
    }

    #[test]
    fn help_lists_every_code() {
        let help = exit_codes_help();
        for f in Failure::ALL {
            assert!(
                help.contains(&format!("  {}  {}", f.code(), f.meaning())),
                "{help}"
            );
        }
    }
}
