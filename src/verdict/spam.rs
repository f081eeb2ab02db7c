//! The spam filters' verdicts.
//!
//! rspamd and SpamAssassin usually run as milters, which append their fields at the bottom of
//! the head: below every `Received:`, right after the sender's own fields, where position says
//! nothing about who wrote them. What does: a filter writes its fields together, as a *run* of
//! its own field names with no other field in between, and one of them names the host it ran
//! on (the *writer field*: `X-Rspamd-Server: HOST`, `X-Spam-Checker-Version: SpamAssassin … on
//! HOST`). A run counts when that host is trusted, or when the run sits above the receiving
//! boundary (a filter that ran before a later hop, written by the receiving side).
//!
//! When several runs of one filter count, a run above the boundary wins (the topmost: written
//! last), else the last run in header order (milters append, so the filter's own run comes after
//! any the sender wrote). Within a run the last field of each name is the one read, for the same
//! reason: a sender's fields that end right where the milter's begin make one run with them.
//!
//! Microsoft's SCL is written by Exchange, which inserts its fields at the top like any MTA; it
//! counts only above the boundary, the topmost field winning.

use super::fields::Field;
use super::{MAX_SCORE, SpamFilter, SpamVerdict, Trusted, lex};

/// What a filter's field says, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// `X-Spamd-Result` (rspamd) or `X-Spam-Status` (SpamAssassin): verdict and score.
    Summary,
    /// `X-Spam: Yes` (rspamd) or `X-Spam-Flag: YES` (SpamAssassin).
    Flag,
    /// `X-Rspamd-Score` or `X-Spam-Score`.
    Score,
    /// `X-Rspamd-Action`.
    Action,
    /// `X-Rspamd-Server` or `X-Spam-Checker-Version`: the host the filter ran on.
    Writer,
    /// A field of the run that says nothing read here (queue id, level stars, report).
    Other,
}

/// The field names of each filter's run, and what each says. `X-Spamd-Bar` (rspamd's score as
/// a bar of `+` or `-`) says nothing read here, but rspamd writes it among its other fields, and
/// a name left out would cut its run in two.
const NAMES: [(&str, SpamFilter, Name); 14] = [
    ("X-Spamd-Result", SpamFilter::Rspamd, Name::Summary),
    ("X-Rspamd-Score", SpamFilter::Rspamd, Name::Score),
    ("X-Rspamd-Server", SpamFilter::Rspamd, Name::Writer),
    ("X-Rspamd-Action", SpamFilter::Rspamd, Name::Action),
    ("X-Rspamd-Queue-Id", SpamFilter::Rspamd, Name::Other),
    ("X-Spam", SpamFilter::Rspamd, Name::Flag),
    ("X-Rspamd-Pre-Result", SpamFilter::Rspamd, Name::Other),
    ("X-Spamd-Bar", SpamFilter::Rspamd, Name::Other),
    ("X-Spam-Flag", SpamFilter::SpamAssassin, Name::Flag),
    ("X-Spam-Status", SpamFilter::SpamAssassin, Name::Summary),
    ("X-Spam-Level", SpamFilter::SpamAssassin, Name::Other),
    ("X-Spam-Report", SpamFilter::SpamAssassin, Name::Other),
    (
        "X-Spam-Checker-Version",
        SpamFilter::SpamAssassin,
        Name::Writer,
    ),
    ("X-Spam-Score", SpamFilter::SpamAssassin, Name::Score),
];

/// Which filter's run a field belongs to, and what it says; `None` for any other field.
fn name_of(field: &Field<'_>) -> Option<(SpamFilter, Name)> {
    NAMES
        .iter()
        .find(|(name, _, _)| field.is(name))
        .map(|&(_, filter, name)| (filter, name))
}

/// Run filters, by their index in the chosen-verdict arrays.
const RUN_FILTERS: [SpamFilter; 2] = [SpamFilter::SpamAssassin, SpamFilter::Rspamd];

/// Reads the filters' fields one at a time, top first.
#[derive(Debug)]
pub(super) struct Reader<'t> {
    trusted: Trusted<'t>,
    boundary: Option<usize>,
    run: Option<Run>,
    /// Per run filter: the topmost counted run above the boundary.
    above: [Option<SpamVerdict>; 2],
    /// Per run filter: the last counted run below the boundary.
    below: [Option<SpamVerdict>; 2],
    microsoft: Option<SpamVerdict>,
}

impl<'t> Reader<'t> {
    /// A reader for a head whose receiving boundary is the field at index `boundary`.
    pub fn new(trusted: Trusted<'t>, boundary: Option<usize>) -> Self {
        Reader {
            trusted,
            boundary,
            run: None,
            above: [None; 2],
            below: [None; 2],
            microsoft: None,
        }
    }

    /// Reads the field at `index` (among the head's fields, top first).
    pub fn field(&mut self, index: usize, field: &Field<'_>) {
        let Some((filter, name)) = name_of(field) else {
            self.end_run();
            self.microsoft(index, field);
            return;
        };
        if self.run.as_ref().is_some_and(|run| run.filter != filter) {
            self.end_run();
        }
        let run = self.run.get_or_insert_with(|| Run::new(filter, index));
        run.read(name, &field.value, self.trusted);
    }

    /// One verdict per filter that gave one, in [`SpamFilter::ALL`] order.
    pub fn verdicts(mut self) -> Vec<SpamVerdict> {
        self.end_run();
        let runs = self.above.into_iter().zip(self.below);
        runs.map(|(above, below)| above.or(below))
            .chain([self.microsoft])
            .flatten()
            .collect()
    }

    fn is_above(&self, index: usize) -> bool {
        self.boundary.is_some_and(|boundary| index < boundary)
    }

    fn end_run(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        let above = self.is_above(run.start);
        if !(above || run.writer_trusted) {
            return;
        }
        let Some(verdict) = run.verdict() else {
            return;
        };
        let Some(slot) = RUN_FILTERS.iter().position(|&f| f == run.filter) else {
            return;
        };
        if above {
            if let Some(chosen) = self.above.get_mut(slot) {
                chosen.get_or_insert(verdict);
            }
        } else if let Some(chosen) = self.below.get_mut(slot) {
            *chosen = Some(verdict);
        }
    }

    fn microsoft(&mut self, index: usize, field: &Field<'_>) {
        if self.microsoft.is_some() || !self.is_above(index) {
            return;
        }
        let scl = if field.is("X-MS-Exchange-Organization-SCL") {
            scl(&field.value)
        } else if field.is("X-Forefront-Antispam-Report") {
            field.value.split(';').find_map(|item| {
                let (key, value) = item.split_once(':')?;
                key.trim().eq_ignore_ascii_case("SCL").then(|| scl(value))?
            })
        } else {
            None
        };
        self.microsoft = scl.map(|scl| SpamVerdict {
            filter: SpamFilter::Microsoft,
            spam: scl >= 5,
            score: Some(f64::from(scl)),
        });
    }
}

/// A spam confidence level: −1 (trusted, not scanned) to 9; anything else is not one.
fn scl(value: &str) -> Option<i8> {
    value
        .trim()
        .parse::<i8>()
        .ok()
        .filter(|scl| (-1..=9).contains(scl))
}

/// What one run of a filter's fields said so far (the last field of each name wins).
#[derive(Debug)]
struct Run {
    filter: SpamFilter,
    /// Index of its first field.
    start: usize,
    writer_trusted: bool,
    /// From the summary field: its verdict and its score.
    summary: (Option<bool>, Option<f64>),
    flag: Option<bool>,
    score: Option<f64>,
    action: Option<bool>,
}

impl Run {
    fn new(filter: SpamFilter, start: usize) -> Self {
        Run {
            filter,
            start,
            writer_trusted: false,
            summary: (None, None),
            flag: None,
            score: None,
            action: None,
        }
    }

    fn read(&mut self, name: Name, value: &str, trusted: Trusted<'_>) {
        let rspamd = self.filter == SpamFilter::Rspamd;
        match name {
            Name::Summary if rspamd => self.summary = rspamd_result(value),
            Name::Summary => self.summary = spamassassin_status(value),
            Name::Flag => self.flag = yes_or_no(value),
            Name::Score => self.score = first_word(value).and_then(score),
            Name::Action => self.action = rspamd_action(value),
            Name::Writer => {
                let host = if rspamd {
                    lex::tokens(value).next().and_then(lex::text)
                } else {
                    spamassassin_host(value)
                };
                self.writer_trusted = host.is_some_and(|host| trusted.host(&host));
            }
            Name::Other => {}
        }
    }

    /// The run's verdict; `None` when it gave neither a verdict nor a score.
    fn verdict(&self) -> Option<SpamVerdict> {
        let (said, summary_score) = self.summary;
        let (spam, score) = if self.filter == SpamFilter::Rspamd {
            // Any of them saying spam is rspamd saying spam: the action is what it did.
            let says = [said, self.flag, self.action];
            let spam = if says.contains(&Some(true)) {
                Some(true)
            } else {
                says.into_iter().flatten().next()
            };
            (spam, self.score.or(summary_score))
        } else {
            (said.or(self.flag), summary_score.or(self.score))
        };
        (spam.is_some() || score.is_some()).then_some(SpamVerdict {
            filter: self.filter,
            spam: spam.unwrap_or(false),
            score,
        })
    }
}

/// `X-Spamd-Result: default: False [-0.90 / 6.00]; SYMBOL(score)[…]; …` → verdict, score.
fn rspamd_result(value: &str) -> (Option<bool>, Option<f64>) {
    let head = value.split(';').next().unwrap_or_default();
    // The metric's name (`default:`) is optional in old versions.
    let verdict = match head.split_once(':') {
        Some((metric, rest)) if !metric.contains('[') => rest,
        _ => head,
    };
    let said = match first_word(verdict.split('[').next().unwrap_or_default()) {
        Some(w) if w.eq_ignore_ascii_case("true") => Some(true),
        Some(w) if w.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    };
    let score = verdict
        .split_once('[')
        .and_then(|(_, bracket)| bracket.split(['/', ']']).next())
        .and_then(|s| score(s.trim()));
    (said, score)
}

/// `X-Spam-Status: No, score=-1.2 required=5.0 tests=… autolearn=… version=…` → verdict,
/// score (`hits=` in SpamAssassin 2).
fn spamassassin_status(value: &str) -> (Option<bool>, Option<f64>) {
    let mut words = value.split(|c: char| c == ',' || c.is_ascii_whitespace());
    let said = words.next().and_then(yes_or_no);
    let score = words.find_map(|w| {
        let (key, number) = w.split_once('=')?;
        let known = key.eq_ignore_ascii_case("score") || key.eq_ignore_ascii_case("hits");
        known.then(|| score(number))?
    });
    (said, score)
}

/// `SpamAssassin 4.0.1 (2024-03-25) on HOST` → `HOST`; `None` for a field that does not name
/// SpamAssassin as its writer.
fn spamassassin_host(value: &str) -> Option<std::borrow::Cow<'_, str>> {
    let mut words = lex::tokens(value).filter_map(lex::text);
    if !words.next()?.eq_ignore_ascii_case("SpamAssassin") {
        return None;
    }
    words.find(|w| w.eq_ignore_ascii_case("on"))?;
    words.next()
}

/// rspamd's action: those that mark or refuse the mail are a spam verdict, the others
/// (`no action`, `greylist`, `soft reject`: a delay, not a judgement) are not.
fn rspamd_action(value: &str) -> Option<bool> {
    let is = |phrase: &&str| {
        let mut words = value.split_ascii_whitespace();
        phrase
            .split(' ')
            .all(|p| words.next().is_some_and(|w| w.eq_ignore_ascii_case(p)))
            && words.next().is_none()
    };
    if ["add header", "rewrite subject", "reject"].iter().any(is) {
        Some(true)
    } else if ["no action", "greylist", "soft reject"].iter().any(is) {
        Some(false)
    } else {
        None
    }
}

/// `Yes` / `No` in any case, as the first word of `value`.
fn yes_or_no(value: &str) -> Option<bool> {
    match first_word(value)? {
        w if w.eq_ignore_ascii_case("yes") => Some(true),
        w if w.eq_ignore_ascii_case("no") => Some(false),
        _ => None,
    }
}

fn first_word(value: &str) -> Option<&str> {
    value.split_ascii_whitespace().next()
}

/// Longest number text parsed as a score: `-1000.000000` and then some.
const SCORE_TEXT_MAX: usize = 32;

/// A score: a finite number, clamped to ±[`MAX_SCORE`].
fn score(text: &str) -> Option<f64> {
    if text.len() > SCORE_TEXT_MAX {
        return None;
    }
    let score: f64 = text.parse().ok()?;
    score
        .is_finite()
        .then(|| score.clamp(-MAX_SCORE, MAX_SCORE))
}
