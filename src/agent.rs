//! Builds the running parts from a validated config: the signing key, the metric families and
//! one probe plus mailbox per `[[probe]]`. Shared by `run` and `once`, so both measure alike.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::config::{self, Config};
use crate::mailbox::{self, Mailbox};
use crate::metrics::Metrics;
use crate::probe::Probe;

/// Everything a run needs.
pub struct Agent {
    /// The metric families every output renders.
    pub metrics: Arc<Metrics>,
    /// Probes with their (not yet connected) mailboxes, in config order.
    pub probes: Vec<(Arc<Probe>, Box<dyn Mailbox>)>,
}

impl Agent {
    /// Loads the signing key and prepares every probe. Nothing connects yet.
    pub fn new(config: &Config) -> Result<Agent> {
        let key = config::load_signing_key(&config.agent.secret)
            .map_err(anyhow::Error::msg)
            .context("loading the canary signing key")?;
        let metrics = Metrics::new();
        let mut probes = Vec::with_capacity(config.probes.len());
        for probe in &config.probes {
            let mailbox = mailbox::open(&probe.mailbox)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("probe {}: mailbox", probe.name))?;
            let probe = Probe::new(probe.clone(), &config.agent.id, key.clone(), &metrics)
                .map_err(anyhow::Error::msg)?;
            probes.push((Arc::new(probe), mailbox));
        }
        Ok(Agent { metrics, probes })
    }
}
