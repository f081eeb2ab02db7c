//! Maildir receiver (placeholder until the client lands in this module).

use std::time::Duration;

use async_trait::async_trait;

use super::{Arrival, MailId, Mailbox, MailboxError, MailboxStage};
use crate::config::MaildirConfig;

/// A Maildir.
pub struct MaildirMailbox {
    config: MaildirConfig,
}

impl MaildirMailbox {
    /// Prepares the adapter.
    pub fn new(config: MaildirConfig) -> Result<MaildirMailbox, String> {
        Ok(MaildirMailbox { config })
    }
}

#[async_trait]
impl Mailbox for MaildirMailbox {
    fn protocol(&self) -> &'static str {
        "maildir"
    }
    async fn canaries(&mut self) -> Result<Vec<Arrival>, MailboxError> {
        Err(MailboxError::new(
            MailboxStage::Connect,
            "Maildir is not implemented yet",
        ))
    }
    async fn clean_up(&mut self, _mails: &[MailId]) -> Result<(), MailboxError> {
        Ok(())
    }
    async fn check_login(&mut self) -> Result<(), MailboxError> {
        Err(MailboxError::new(
            MailboxStage::Connect,
            "Maildir is not implemented yet",
        ))
    }
    fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }
    async fn close(&mut self) {}
}
