//! mailcanary: an end-to-end mail delivery-delay monitor.
//!
//! Probes send signed canary mails of several classes over SMTP, watch the receiving mailbox,
//! and export per-class delivery delays to Prometheus. The pure core ([`canary`], [`class`],
//! [`delay`]) does no I/O; adapters ([`send`], [`mailbox`]) translate protocols; [`probe`]
//! decides and accounts.

#![warn(missing_docs)]

pub mod agent;
pub mod canary;
pub mod class;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod delay;
pub mod export;
pub mod http;
pub mod ledger;
pub mod mailbox;
pub mod metrics;
pub mod probe;
pub mod send;
pub mod stage;
pub mod state;
#[cfg(test)]
mod testing;
pub mod watch;
pub mod web_config;
