//! Builds the running parts from a validated config: the signing key, the state store and one
//! probe plus mailbox per `[[probe]]`. Shared by `run` and `once`, so both keep the same books.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::clock;
use crate::config::{self, Config};
use crate::mailbox::{self, Mailbox};
use crate::metrics::{self, AgentFigures};
use crate::probe::Probe;
use crate::setup::ProbeSetupError;
use crate::state::Store;

/// Everything a run needs.
pub struct Agent {
    /// The store handle (the writer stops when the agent and its probes are dropped).
    pub store: Store,
    /// Probes with their (not yet connected) mailboxes, in config order.
    pub probes: Vec<(Arc<Probe>, Box<dyn Mailbox>)>,
    writer: std::thread::JoinHandle<()>,
    _lock: std::fs::File,
}

impl Agent {
    /// Loads the signing key, opens the state store (taking its lock) and prepares every
    /// probe with its books. Nothing connects yet.
    pub async fn open(config: &Config) -> Result<Agent> {
        let key = config::load_signing_key(&config.agent.secret)
            .context("loading the canary signing key")?;
        let opened = Store::open(&config.agent.state_dir)?;
        let mut ledgers = opened.ledgers;
        let mut probes = Vec::with_capacity(config.probes.len());
        for probe in &config.probes {
            let mailbox = mailbox::open(&probe.mailbox).map_err(|source| ProbeSetupError {
                probe: probe.name.clone(),
                side: "mailbox",
                source,
            })?;
            let ledger = ledgers.remove(&probe.name).unwrap_or_default();
            let probe = Probe::new(
                probe.clone(),
                &config.agent.id,
                key.clone(),
                config.agent.forget_after,
                ledger,
                opened.store.clone(),
            )?;
            probe.open_books().await;
            probes.push((Arc::new(probe), mailbox));
        }
        for name in ledgers.keys() {
            tracing::info!(probe = %name, "the store has books of a probe no longer configured; kept, not reported");
        }
        Ok(Agent {
            store: opened.store,
            probes,
            writer: opened.writer,
            _lock: opened.lock,
        })
    }

    /// The probes, without their mailboxes.
    pub fn probe_list(&self) -> Vec<Arc<Probe>> {
        self.probes.iter().map(|(p, _)| Arc::clone(p)).collect()
    }

    /// Renders the metrics of `probes` now.
    pub fn render(probes: &[Arc<Probe>], store: &Store) -> String {
        let figures = AgentFigures {
            state_errors: store.errors(),
        };
        metrics::render(probes, figures, clock::now_ms())
    }

    /// Waits until every queued write is committed and releases the state directory.
    pub fn close(self) {
        let Agent {
            store,
            writer,
            _lock,
            ..
        } = self;
        store.stop(writer);
    }
}
