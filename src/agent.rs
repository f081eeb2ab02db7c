//! Builds the running parts from a validated config: the signing key, the state store, one
//! probe per `[[probe]]` and one mailbox per distinct mailbox (probes whose `[probe.mailbox]`
//! has the same identity share it: see [`crate::watch`]). Shared by `run` and `once`, so both
//! keep the same books.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::clock;
use crate::config::{self, Config};
use crate::ledger::Ledger;
use crate::mailbox::{self, Mailbox};
use crate::metrics::{self, AgentFigures};
use crate::probe::Probe;
use crate::setup::ProbeSetupError;
use crate::state::Store;
use crate::submissions::Submissions;

/// A mailbox and the probes watching it.
pub struct Inbox {
    /// Never empty: the probes receiving here in config order, then those that only have
    /// their bounces come back here.
    pub probes: Vec<Arc<Probe>>,
    /// How many of `probes` receive here (the rest watch it for bounces only).
    pub receivers: usize,
    /// The mailbox, built from the first probe's config.
    pub mailbox: Box<dyn Mailbox>,
}

/// Everything a run needs.
pub struct Agent {
    /// The store handle (the writer stops when the agent and its probes are dropped).
    pub store: Store,
    /// The probes, in config order.
    pub probes: Vec<Arc<Probe>>,
    /// One (not yet connected) mailbox per distinct mailbox identity, with the probes it
    /// serves, in config order of each mailbox's first probe.
    pub inboxes: Vec<Inbox>,
    /// The books of every probe the store knows that no running probe holds: probes no longer
    /// configured, and, during a reload, those of the probes just stopped. A reload that
    /// brings a probe back (or keeps it) continues its books from here, never from zero.
    unheld: BTreeMap<String, Ledger>,
    /// One set of slots for every probe, so `run` and `once` alike bound the agent's
    /// submissions in progress, not each probe's; kept across reloads.
    submissions: Submissions,
    writer: std::thread::JoinHandle<()>,
    _lock: std::fs::File,
}

/// The index in `inboxes` of the inbox for `mailbox` (one of `probe`'s), opened if new.
fn inbox_of(
    inboxes: &mut Vec<((String, Option<String>), Inbox)>,
    probe: &config::ProbeConfig,
    mailbox: &config::MailboxConfig,
    side: &'static str,
) -> Result<usize> {
    let share = mailbox.share_key();
    if let Some(i) = inboxes.iter().position(|(k, _)| *k == share) {
        return Ok(i);
    }
    let opened = mailbox::open(mailbox).map_err(|source| ProbeSetupError {
        probe: probe.name.clone(),
        side,
        source,
    })?;
    let inbox = Inbox {
        probes: Vec::new(),
        receivers: 0,
        mailbox: opened,
    };
    inboxes.push((share, inbox));
    Ok(inboxes.len() - 1)
}

impl Agent {
    /// Opens the state store (taking its lock) and prepares every probe of `config` with its
    /// books ([`Agent::configure`]). Nothing connects yet.
    pub async fn open(config: &Config) -> Result<Agent> {
        let opened = Store::open(&config.agent.state_dir)?;
        let mut agent = Agent {
            store: opened.store,
            probes: Vec::new(),
            inboxes: Vec::new(),
            unheld: opened.ledgers,
            submissions: Submissions::agent_wide(),
            writer: opened.writer,
            _lock: opened.lock,
        };
        agent.configure(config).await?;
        Ok(agent)
    }

    /// Loads the signing key and prepares a probe for every `[[probe]]` of `config`, each
    /// continuing the books held for its name, and the inboxes they watch. Nothing connects.
    ///
    /// All or nothing: everything that can fail (the key, a `ca_file`, a mailbox) is tried
    /// before any books move, so on an error the agent is as it was and a reload can fall
    /// back to the config that ran before.
    pub async fn configure(&mut self, config: &Config) -> Result<()> {
        let key = config::load_signing_key(&config.agent.secret)
            .context("loading the canary signing key")?;
        let mut probes = Vec::with_capacity(config.probes.len());
        let mut inboxes: Vec<((String, Option<String>), Inbox)> = Vec::new();
        for probe in &config.probes {
            let inbox = inbox_of(&mut inboxes, probe, &probe.mailbox, "mailbox")?;
            let ledger = self.unheld.get(&probe.name).cloned().unwrap_or_default();
            let probe = Probe::new(
                probe.clone(),
                &config.agent.id,
                key.clone(),
                config.agent.forget_after,
                ledger,
                self.store.clone(),
                self.submissions.clone(),
            )?;
            let probe = Arc::new(probe);
            let inbox = &mut inboxes[inbox].1;
            inbox.probes.insert(inbox.receivers, Arc::clone(&probe));
            inbox.receivers += 1;
            probes.push(probe);
        }
        // Bounce mailboxes are inboxes too (perhaps another probe's receiving one): a probe
        // already served by that inbox is not added twice.
        for probe in &probes {
            let Some(bounces) = &probe.config().bounces else {
                continue;
            };
            let inbox = inbox_of(&mut inboxes, probe.config(), bounces, "bounces")?;
            let inbox = &mut inboxes[inbox].1;
            if !inbox.probes.iter().any(|p| Arc::ptr_eq(p, probe)) {
                inbox.probes.push(Arc::clone(probe));
            }
        }
        // Nothing failed: from here on the probes hold their books.
        for probe in &probes {
            self.unheld.remove(&probe.config().name);
            probe.open_books().await;
        }
        log_sharing(&inboxes);
        for name in self.unheld.keys() {
            tracing::info!(probe = %name, "the store has books of a probe no longer configured; kept, not reported");
        }
        self.probes = probes;
        self.inboxes = inboxes.into_iter().map(|(_, inbox)| inbox).collect();
        Ok(())
    }

    /// Takes the books back from the probes, once their loops have stopped (a reload): the
    /// next [`Agent::configure`] continues them. The probes' queued writes were already
    /// submitted, so the store and these books agree.
    pub fn release_probes(&mut self) {
        self.inboxes.clear();
        for probe in std::mem::take(&mut self.probes) {
            // A removed probe's last half hour of delay history would otherwise be lost.
            probe.save_history();
            let ledger = probe.read_ledger(Ledger::clone);
            self.unheld.insert(probe.config().name.clone(), ledger);
        }
    }

    /// The probes, without their mailboxes.
    pub fn probe_list(&self) -> Vec<Arc<Probe>> {
        self.probes.clone()
    }

    /// Renders the metrics of `probes` now, handing the text to `send` in pieces
    /// ([`metrics::Pieces::STREAM`]); false when `send` refused a piece (the client left).
    pub fn render_in_pieces(
        probes: &[Arc<Probe>],
        store: &Store,
        send: &mut dyn FnMut(String) -> bool,
    ) -> bool {
        let figures = AgentFigures {
            state_errors: store.errors(),
        };
        let pieces = metrics::Pieces::STREAM;
        metrics::render_in_pieces(probes, figures, clock::now_ms(), pieces, send)
    }

    /// Renders the metrics of `probes` now.
    pub fn render(probes: &[Arc<Probe>], store: &Store) -> String {
        let figures = AgentFigures {
            state_errors: store.errors(),
        };
        metrics::render(probes, figures, clock::now_ms())
    }

    /// Stores the probes' delay histories, waits until every queued write is committed and
    /// releases the state directory.
    pub fn close(self) {
        let Agent {
            store,
            writer,
            _lock,
            probes,
            ..
        } = self;
        for probe in &probes {
            probe.save_history();
        }
        store.stop(writer);
    }
}

/// Logs each mailbox that several probes share, once.
fn log_sharing(inboxes: &[((String, Option<String>), Inbox)]) {
    for (_, inbox) in inboxes.iter().filter(|(_, i)| i.receivers > 1) {
        let names: Vec<&str> = inbox
            .probes
            .iter()
            .map(|p| p.config().name.as_str())
            .collect();
        tracing::info!(
            mailbox = %inbox.probes[0].config().mailbox.location(),
            probes = %names.join(","), "probes share one mailbox watcher"
        );
    }
}
