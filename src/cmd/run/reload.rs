//! Applying a changed config to the running daemon (`SIGHUP`, `POST /-/reload`).
//!
//! A reload is a restart of the probes' loops inside the process, not of the process: the
//! running loops stop the way they stop at shutdown (a round being sent finishes, the watchers
//! log out), the probes hand their books back to the agent, and the new config's probes are
//! built on the same books, by name. So a probe that stays keeps its in-flight canaries and
//! counters, a new one starts, and a removed one's books stay in the store (and come back with
//! it). The store, the HTTP endpoints and the kept submission connections are never closed,
//! and each probe keeps its place in the sending schedule ([`Schedule`]): a reload sends no
//! extra round.
//!
//! A config that does not load, or a probe that cannot be built (a missing `ca_file`, an
//! unreadable key), changes nothing that ran before: the old config is applied again and the
//! error is logged and answered.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{SUMMARY_EVERY, first_round_after, send_loop, summary_loop, watch_loop};
use crate::agent::Agent;
use crate::config::Config;
use crate::http::WebState;

/// The time of each probe's next round (Unix ms, 0 before its first), by probe name, kept
/// across reloads.
#[derive(Default)]
pub(super) struct Schedule(HashMap<String, Arc<AtomicU64>>);

/// The loops of one configuration.
pub(super) struct Running {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    /// Stops the loops and waits for them: rounds in flight finish, watchers log out.
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// Starts a send loop per probe of `agent` (at its place in `schedule`), a watch loop per
/// inbox and the summary loop.
pub(super) fn start(agent: &mut Agent, schedule: &mut Schedule) -> Running {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let now_ms = crate::clock::now_ms();
    let count = agent.probes.len();
    for (index, probe) in agent.probes.iter().enumerate() {
        let config = probe.config();
        let next = Arc::clone(schedule.0.entry(config.name.clone()).or_default());
        let phase = match next.load(Ordering::Relaxed) {
            0 => first_round_after(index, count, config.interval),
            due => Duration::from_millis(due.saturating_sub(now_ms)).min(config.interval),
        };
        tasks.spawn(send_loop(Arc::clone(probe), phase, next, stop.clone()));
    }
    for inbox in std::mem::take(&mut agent.inboxes) {
        tasks.spawn(watch_loop(inbox, stop.clone()));
    }
    tasks.spawn(summary_loop(
        agent.probes.clone(),
        SUMMARY_EVERY,
        stop.clone(),
    ));
    tasks.close();
    Running { stop, tasks }
}

/// What a reload needs beside the config and the loops.
pub(super) struct Reloader<'a> {
    /// The config file.
    pub path: &'a Path,
    /// The agent whose probes are replaced.
    pub agent: &'a mut Agent,
    /// The probes' places in the schedule.
    pub schedule: &'a mut Schedule,
    /// Where the endpoints find the probes.
    pub state: &'a WebState,
}

impl Reloader<'_> {
    /// Reads the config file again and applies it (see the module doc); `current` and
    /// `running` are replaced by what runs afterwards. The answer says what changed, or why
    /// nothing did.
    pub(super) async fn reload(
        &mut self,
        current: &mut Config,
        running: &mut Running,
    ) -> Result<String, String> {
        tracing::info!(config = %self.path.display(), "reloading the config");
        let outcome = self.apply(current, running).await;
        match &outcome {
            Ok(changes) => tracing::info!(%changes, "config reloaded"),
            Err(e) => tracing::error!(error = %e, "config not reloaded; the previous one runs on"),
        }
        outcome
    }

    async fn apply(
        &mut self,
        current: &mut Config,
        running: &mut Running,
    ) -> Result<String, String> {
        let new = Config::load(self.path).map_err(|e| e.to_string())?;
        if new.agent.state_dir != current.agent.state_dir {
            return Err(format!(
                "agent.state_dir changed ({} to {}): the store cannot move while running; \
                 restart mailcanary instead",
                current.agent.state_dir.display(),
                new.agent.state_dir.display()
            ));
        }
        // The key is the one thing of [agent] read by every probe: try it before stopping.
        crate::config::load_signing_key(&new.agent.secret)
            .map_err(|e| format!("loading the canary signing key: {e:#}"))?;
        for warning in &new.warnings {
            tracing::warn!("{warning}");
        }
        running.stop().await;
        self.agent.release_probes();
        let outcome = match self.agent.configure(&new).await {
            Ok(()) => {
                let changes = changes(current, &new);
                *current = new;
                Ok(changes)
            }
            Err(e) => {
                let error = format!("{e:#}");
                if let Err(e) = self.agent.configure(current).await {
                    tracing::error!(error = %format!("{e:#}"), "the previous config no longer applies either; no probe runs until a reload succeeds");
                }
                Err(error)
            }
        };
        *running = start(self.agent, self.schedule);
        *self.state.probes.write().unwrap_or_else(|e| e.into_inner()) =
            self.agent.probe_list().into();
        outcome
    }
}

/// "N probes: added a, b; removed c; changed d" for the log and the answer. One pass over
/// each config (a reload of 1,000 probes compares 1,000 pairs, not a million).
fn changes(before: &Config, after: &Config) -> String {
    let old: HashMap<&str, String> = before
        .probes
        .iter()
        .map(|p| (p.name.as_str(), format!("{p:?}")))
        .collect();
    let new: BTreeSet<&str> = after.probes.iter().map(|p| p.name.as_str()).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for p in &after.probes {
        match old.get(p.name.as_str()) {
            None => added.push(p.name.as_str()),
            Some(was) if *was != format!("{p:?}") => changed.push(p.name.as_str()),
            Some(_) => {}
        }
    }
    let mut removed: Vec<&str> = old.keys().copied().filter(|n| !new.contains(n)).collect();
    removed.sort_unstable();
    added.sort_unstable();
    let mut text = format!("{} probes", after.probes.len());
    for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            text.push_str(&format!("; {what} {}", list.join(", ")));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(maildir: &Path, probes: &[(&str, &str)]) -> Config {
        let mut text = String::from("[agent]\nid = \"a\"\n");
        for (name, to) in probes {
            text.push_str(&format!(
                "[[probe]]\nname = \"{name}\"\nfrom = \"a@example.test\"\nto = \"{to}\"\n\
                 [probe.smtp]\nhost = \"127.0.0.1\"\n[probe.mailbox]\nprotocol = \"maildir\"\n\
                 path = \"{}\"\n",
                maildir.display()
            ));
        }
        Config::parse(Path::new("/etc/mc/probes.toml"), &text).expect("a valid config")
    }

    #[test]
    fn changes_name_the_probes_added_removed_and_changed() {
        let maildir = tempfile::tempdir().expect("tempdir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(maildir.path().join(sub)).expect("a Maildir");
        }
        let config = |probes: &[(&str, &str)]| config(maildir.path(), probes);
        let before = config(&[("kept", "x@example.test"), ("gone", "x@example.test")]);
        let after = config(&[("kept", "x@example.test"), ("new", "x@example.test")]);
        assert_eq!(
            changes(&before, &after),
            "2 probes; added new; removed gone"
        );
        let moved = config(&[("kept", "y@example.test")]);
        assert_eq!(
            changes(&before, &moved),
            "1 probes; removed gone; changed kept"
        );
        assert_eq!(changes(&before, &before), "2 probes");
    }
}
