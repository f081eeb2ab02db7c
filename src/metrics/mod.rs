//! Metric families, rendered from the probes' books (text exposition format 0.0.4).
//!
//! Counters and histograms must continue across restarts and across `once` runs, and the
//! prometheus crate's own counters cannot be set to a stored value. So nothing here counts:
//! every value comes from the books (the ledgers, which the store keeps durable) at render
//! time; see [`families`]. The text is written by hand ([`text`]) straight into one buffer,
//! family by family, rather than built as objects first: at 1,000 probes a body has some
//! 260,000 series, and objects per series cost more time and memory than the text itself.

mod deliverability;
mod families;
mod text;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ledger::Ledger;
use crate::probe::Probe;

use families::{At, FAMILIES, Series};
use text::Text;

/// Class label of forged canaries that claim a class the probe does not send; keeps an
/// attacker from creating series at will.
pub const UNKNOWN_CLASS: &str = "unknown";

/// The agent-wide values that belong to no probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentFigures {
    /// Failed store commits since start.
    pub state_errors: u64,
}

/// A probe as the renderer sees it: its labels, its mailbox's health and its books.
///
/// A trait rather than the agent's probe type, so the renderer is measured on books built in
/// memory (`benches/render.rs`) exactly as it runs in the agent.
pub trait Books {
    /// The `probe` label.
    fn name(&self) -> &str;
    /// The watched folders in configured order: each has a `delivered_total` series from the
    /// start, at 0.
    fn folders(&self) -> &[String];
    /// The `protocol` label of `mailbox_up`.
    fn protocol(&self) -> &str;
    /// Whether the last mailbox check succeeded.
    fn mailbox_up(&self) -> bool;
    /// How long the steps of the last look at the mailbox took.
    fn steps(&self) -> crate::mailbox::Steps {
        crate::mailbox::Steps::default()
    }
    /// Calls `read` with the books, locked for as long as it runs (keep it short: the probe's
    /// sender and watcher wait for the same lock).
    fn read(&self, read: &mut dyn FnMut(&Ledger));
}

/// Books held in memory under an IMAP mailbox that is up: what the metrics tests and the render
/// benchmark render, so both measure the renderer exactly as the agent runs it.
pub struct BooksInMemory {
    /// The `probe` label.
    pub name: String,
    /// The watched folders.
    pub folders: Vec<String>,
    /// The books.
    pub ledger: std::sync::Mutex<Ledger>,
}

impl BooksInMemory {
    /// `ledger` as probe `name` watching `folders`.
    pub fn new(name: &str, folders: &[&str], ledger: Ledger) -> BooksInMemory {
        BooksInMemory {
            name: name.to_string(),
            folders: folders.iter().map(|f| f.to_string()).collect(),
            ledger: std::sync::Mutex::new(ledger),
        }
    }
}

impl Books for BooksInMemory {
    fn name(&self) -> &str {
        &self.name
    }
    fn folders(&self) -> &[String] {
        &self.folders
    }
    fn protocol(&self) -> &str {
        "imap"
    }
    fn mailbox_up(&self) -> bool {
        true
    }
    fn read(&self, read: &mut dyn FnMut(&Ledger)) {
        read(&self.ledger.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Books for std::sync::Arc<Probe> {
    fn name(&self) -> &str {
        &self.config().name
    }
    fn folders(&self) -> &[String] {
        self.config().mailbox.folders()
    }
    fn protocol(&self) -> &str {
        self.config().mailbox.protocol()
    }
    fn mailbox_up(&self) -> bool {
        Probe::mailbox_up(self)
    }
    fn steps(&self) -> crate::mailbox::Steps {
        self.mailbox_steps()
    }
    fn read(&self, read: &mut dyn FnMut(&Ledger)) {
        self.read_ledger(|ledger| read(ledger));
    }
}

/// Size of the last body rendered: the next one is about as large, so its buffer is made that
/// large at once instead of growing by doubling (each growth may copy, briefly two buffers).
static LAST_BODY_LEN: AtomicUsize = AtomicUsize::new(0);

/// Renders every family for these probes, in-flight ages as of `now_ms`, as one body.
///
/// Family by family, and within a family probe by probe, each probe's books locked while its
/// series of that family are written: the body is written once, in order, into one buffer
/// sized from the last one, so the memory a scrape takes is about one body. The price is that
/// a probe's families are read at slightly different moments (at most one render apart, some
/// tens of milliseconds at 1,000 probes; as with collectors that each read their own value),
/// so two families of a probe may disagree by a canary that moved meanwhile; no series is ever
/// read half-updated, and every counter still only rises.
pub fn render<B: Books>(probes: &[B], agent: AgentFigures, now_ms: u64) -> String {
    let last = LAST_BODY_LEN.load(Ordering::Relaxed);
    let mut body = String::new();
    let whole = Pieces {
        len: usize::MAX,
        capacity: last + last / 16 + 4096,
    };
    render_in_pieces(probes, agent, now_ms, whole, &mut |piece| {
        body = piece;
        true
    });
    body
}

/// How a body is handed out: pieces of at least `len` bytes (whole series), each written
/// into a buffer of `capacity`.
#[derive(Debug, Clone, Copy)]
pub struct Pieces {
    /// Hand out what is written once it is this long.
    pub len: usize,
    /// Room made for each piece at once.
    pub capacity: usize,
}

impl Pieces {
    /// Pieces of 256 KiB: a scrape holds a few of them instead of a whole 20 MiB body, and
    /// each is large enough that handing it over costs nothing next to writing it.
    pub const STREAM: Pieces = Pieces {
        len: 256 * 1024,
        capacity: 288 * 1024,
    };
}

/// [`render`], handed to `send` in pieces of about `pieces.len` bytes (whole series, in order)
/// as they are written, so a scrape of 1,000 probes holds a piece at a time instead of the
/// whole 20 MiB body, and the first bytes leave while the rest is written. Stops early when
/// `send` returns false (the client went away); whether every piece was taken.
pub fn render_in_pieces<B: Books>(
    probes: &[B],
    agent: AgentFigures,
    now_ms: u64,
    pieces: Pieces,
    send: &mut dyn FnMut(String) -> bool,
) -> bool {
    let mut t = Text::with_capacity(pieces.capacity);
    let mut total = 0;
    for family in &FAMILIES {
        t.family(family.name, family.kind, family.help);
        match family.series {
            Series::Agent(write) => write(&mut t, &agent),
            _ => {
                for probe in probes {
                    write_probe(&mut t, family, probe, now_ms);
                    if t.len() >= pieces.len {
                        let piece = t.take_ready(pieces.capacity);
                        total += piece.len();
                        if !send(piece) {
                            return false;
                        }
                    }
                }
            }
        }
    }
    let piece = t.finish();
    total += piece.len();
    LAST_BODY_LEN.store(total, Ordering::Relaxed);
    send(piece)
}

/// One family's series of one probe, its books locked meanwhile.
fn write_probe(t: &mut Text, family: &families::Family, probe: &impl Books, now_ms: u64) {
    let (name, folders, protocol, up, steps) = (
        probe.name(),
        probe.folders(),
        probe.protocol(),
        probe.mailbox_up(),
        probe.steps(),
    );
    probe.read(&mut |ledger| {
        let at = At {
            name,
            folders,
            protocol,
            up,
            steps,
            ledger,
            now_ms,
        };
        family.write_probe(t, &at);
    });
}

#[cfg(test)]
mod tests;
