//! Integration tests against the real local mail stack (`scripts/mailstack`): one binary, one
//! module per area.

mod alerts;
mod books;
mod bounces;
mod check;
mod classes;
mod delays;
mod deliverability;
mod dsn;
mod exit_codes;
mod faults;
mod hostile;
mod looks;
mod maildir;
mod matrix;
mod oauth2;
mod overview;
mod pop3;
mod proxy;
mod reload;
mod resilience;
mod reuse;
mod roundtrip;
mod security;
mod service;
mod shared;
mod shutdown;
mod state;
mod stripped;
mod support;
mod tokens;
mod transcripts;
mod web;
