//! mailcanary: an end-to-end mail delivery-delay monitor.
//!
//! Probes send signed canary mails of several classes over SMTP, watch the receiving mailbox,
//! and export per-class delivery delays to Prometheus.
//!
//! # Layout
//!
//! - Pure core, no I/O: [`canary`] (sign, parse, verify), [`class`] (what each class of mail
//!   looks like), [`delay`] (delays, `Received:` chain, skew), [`ledger`] (a probe's books as
//!   accounting that returns the writes making it durable), [`stage`] (failure stage labels).
//! - Adapters that translate a protocol and decide nothing: `send` (SMTP submission) and
//!   [`mailbox`] (IMAP, POP3, Maildir behind one trait).
//! - `probe` judges what a mailbox holds and keeps the books; `watch` is the receiving side's
//!   loop body; [`state`] makes the books durable.
//! - Around them: [`config`] (file → validated config), [`cmd`] (one module per subcommand;
//!   `run` owns the daemon's loops), [`metrics`], `http`, `web_config`, `export`.
//!
//! Only what the binary, the benchmarks and the fuzz targets use is public; the rest is
//! `pub(crate)`, documented where the why is not obvious.

#![warn(missing_docs)]

pub(crate) mod agent;
pub mod bounce;
pub mod canary;
pub mod class;
pub mod cli;
pub(crate) mod clock;
pub mod cmd;
pub mod config;
pub mod delay;
pub(crate) mod export;
pub(crate) mod http;
pub mod ledger;
pub mod mailbox;
pub mod metrics;
pub(crate) mod oauth2;
pub mod overview;
pub(crate) mod pages;
pub(crate) mod probe;
pub(crate) mod send;
pub mod setup;
pub mod stage;
pub mod state;
pub(crate) mod submissions;
#[cfg(test)]
mod testing;
pub(crate) mod text;
pub mod tls_hello;
pub(crate) mod transcript;
pub mod verdict;
pub(crate) mod watch;
pub(crate) mod web_config;
