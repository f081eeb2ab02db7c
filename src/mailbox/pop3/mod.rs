//! POP3 receiver (placeholder until the client lands in this module).

use std::time::Duration;

use async_trait::async_trait;

use super::{Arrival, MailId, Mailbox, MailboxError, MailboxStage};
use crate::config::Pop3Config;

/// A POP3 mailbox.
pub struct Pop3Mailbox {
    config: Pop3Config,
}

impl Pop3Mailbox {
    /// Prepares the adapter.
    pub fn new(config: Pop3Config) -> Result<Pop3Mailbox, String> {
        Ok(Pop3Mailbox { config })
    }
}

#[async_trait]
impl Mailbox for Pop3Mailbox {
    fn protocol(&self) -> &'static str {
        "pop3"
    }
    async fn canaries(&mut self) -> Result<Vec<Arrival>, MailboxError> {
        Err(MailboxError::new(
            MailboxStage::Connect,
            "POP3 is not implemented yet",
        ))
    }
    async fn clean_up(&mut self, _mails: &[MailId]) -> Result<(), MailboxError> {
        Ok(())
    }
    async fn check_login(&mut self) -> Result<(), MailboxError> {
        Err(MailboxError::new(
            MailboxStage::Connect,
            "POP3 is not implemented yet",
        ))
    }
    fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }
    async fn close(&mut self) {}
}
