//! What the receiving side wrote about a delivered canary: its authentication results (SPF,
//! DKIM, DMARC, ARC) and its spam filters' verdicts (SpamAssassin, rspamd, Microsoft's SCL).
//!
//! A canary that arrives on time but in the spam folder, or with DKIM failing, is a delivery
//! problem all the same; these are the fields that say so. Pure: it reads the head an adapter
//! fetched (bounded), nothing else.
//!
//! # Who wrote a field
//!
//! Anyone can put any field in a mail, so a field counts only when something ties it to the
//! receiving side, named by its trusted ids (its `authserv-id`s and host names):
//!
//! - `Authentication-Results:` carries the id of the server that wrote it (RFC 8601). One with a
//!   trusted id counts wherever it sits, because a receiving side that follows RFC 8601 §5
//!   removes the copies a sender put in with its id; one that does not lets a sender claim
//!   its own results.
//! - The *receiving boundary* is the lowest `Received:` field stamped `by` a trusted host: the
//!   point where the mail reached the receiving side. Every field above it was written later,
//!   by the receiving side (MTAs prepend). Microsoft's SCL counts only there.
//! - Milters append their fields at the bottom of the head, below every `Received:`, where the
//!   sender's own fields are too. A filter writes its fields together, a *run* of its own field
//!   names with no other field between them, one of which names the host it ran on
//!   (`X-Rspamd-Server:`, `X-Spam-Checker-Version: … on HOST`). A run counts when that host is
//!   trusted, or when the run sits above the boundary. Of several counted runs of one filter,
//!   one above the boundary wins (the topmost), else the last at the bottom (milters append
//!   after the sender's fields); within a run, the last field of each name.
//!
//! A sender can also forge a `Received:` stamped by a trusted host, below the real ones; the
//! boundary then moves down to it and the sender's fields above that forged line count as the
//! receiving side's. Nothing in a head tells the two apart: a receiving side that cares removes
//! or renames such fields on entry, as it should its own `Authentication-Results:` id.

mod auth_results;
mod fields;
mod lex;
mod spam;

use fields::fields;
use lex::Token;

/// Most bytes of a head read: what the mailbox adapters fetch at most. A longer head is read
/// as far as this.
pub const MAX_HEAD: usize = 64 * 1024;

/// The header fields [`read`] looks at besides `Received:`, for adapters that fetch only the
/// fields they need (IMAP `HEADER.FIELDS`, which keeps their order).
pub const FIELDS: [&str; 16] = [
    "Authentication-Results",
    "X-Spamd-Result",
    "X-Rspamd-Score",
    "X-Rspamd-Server",
    "X-Rspamd-Action",
    "X-Rspamd-Queue-Id",
    "X-Spam",
    "X-Rspamd-Pre-Result",
    "X-Spam-Flag",
    "X-Spam-Status",
    "X-Spam-Level",
    "X-Spam-Report",
    "X-Spam-Checker-Version",
    "X-Spam-Score",
    "X-MS-Exchange-Organization-SCL",
    "X-Forefront-Antispam-Report",
];

/// Most `Authentication-Results:` fields looked at, top first.
pub const MAX_AUTH_FIELDS: usize = 16;

/// Most results looked at in one `Authentication-Results:` field.
pub const MAX_RESULTS_PER_FIELD: usize = 32;

/// An authentication method whose result is reported (RFC 8601 and its registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthMethod {
    /// Sender Policy Framework (RFC 7208): may the sending host send for the envelope domain.
    Spf,
    /// DomainKeys Identified Mail (RFC 6376): does a signature verify.
    Dkim,
    /// DMARC (RFC 7489): does an aligned SPF or DKIM pass, and what the domain's policy is.
    Dmarc,
    /// Authenticated Received Chain (RFC 8617): results vouched for across forwarders.
    Arc,
}

impl AuthMethod {
    /// Every method, in the order [`Verdicts::auth`] lists them.
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::Spf,
        AuthMethod::Dkim,
        AuthMethod::Dmarc,
        AuthMethod::Arc,
    ];

    /// The method's name as `Authentication-Results:` writes it, and as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Spf => "spf",
            AuthMethod::Dkim => "dkim",
            AuthMethod::Dmarc => "dmarc",
            AuthMethod::Arc => "arc",
        }
    }

    /// The method a name stands for, any case; `None` for methods not reported.
    pub fn parse(name: &str) -> Option<AuthMethod> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

/// The result of one authentication method (RFC 8601 §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthResult {
    /// Authenticated.
    Pass,
    /// Checked and failed (`hardfail`, RFC 7601's deprecated SPF word, reads as this).
    Fail,
    /// SPF: the domain says the host is probably not allowed.
    SoftFail,
    /// Checked, but the domain makes no assertion.
    Neutral,
    /// Nothing to check (no record, no signature).
    None,
    /// A transient error (DNS timeout): may pass later.
    TempError,
    /// A permanent error (a broken record or signature).
    PermError,
    /// Passed or not, the receiving side's local policy overrode it.
    Policy,
}

impl AuthResult {
    /// Every result, in declaration order.
    pub const ALL: [AuthResult; 8] = [
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::SoftFail,
        AuthResult::Neutral,
        AuthResult::None,
        AuthResult::TempError,
        AuthResult::PermError,
        AuthResult::Policy,
    ];

    /// The result's word as `Authentication-Results:` writes it, and as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
            AuthResult::Policy => "policy",
        }
    }

    /// The result a word stands for, any case; `None` for a word not in RFC 8601's registry.
    pub fn parse(word: &str) -> Option<AuthResult> {
        if word.eq_ignore_ascii_case("hardfail") {
            return Some(AuthResult::Fail);
        }
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(word))
    }
}

/// A spam filter whose verdict is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpamFilter {
    /// Apache SpamAssassin (`X-Spam-Status`, `X-Spam-Flag`), usually through a milter.
    SpamAssassin,
    /// rspamd (`X-Spamd-Result`, `X-Rspamd-*`), usually through its milter protocol.
    Rspamd,
    /// Exchange Online Protection's spam confidence level (`SCL`).
    Microsoft,
}

impl SpamFilter {
    /// Every filter, in the order [`Verdicts::spam`] lists them.
    pub const ALL: [SpamFilter; 3] = [
        SpamFilter::SpamAssassin,
        SpamFilter::Rspamd,
        SpamFilter::Microsoft,
    ];

    /// The filter's name as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SpamFilter::SpamAssassin => "spamassassin",
            SpamFilter::Rspamd => "rspamd",
            SpamFilter::Microsoft => "microsoft",
        }
    }
}

/// What one spam filter of the receiving side said about the mail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpamVerdict {
    /// The filter.
    pub filter: SpamFilter,
    /// Whether it judged the mail spam. A filter that gave only a score reads as not spam: the
    /// filters name the mail when they mean it (a flag, an action), not by the score alone.
    pub spam: bool,
    /// Its score when it gave one: finite, clamped to ±[`MAX_SCORE`]. For Microsoft the SCL
    /// (−1 to 9).
    pub score: Option<f64>,
}

/// Largest score magnitude kept; a filter's fields are text anyone may have written, and a
/// score of 1e300 would make every sum and chart that uses it meaningless.
pub const MAX_SCORE: f64 = 1_000.0;

/// Everything read from one head.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdicts {
    /// One result per method found, in [`AuthMethod::ALL`] order: `Pass` if any counted result
    /// of that method passed (a mail with two signatures, one broken, is still authenticated),
    /// else the first one seen from the top (the latest written).
    pub auth: Vec<(AuthMethod, AuthResult)>,
    /// One verdict per filter found, in [`SpamFilter::ALL`] order.
    pub spam: Vec<SpamVerdict>,
}

impl Verdicts {
    /// The result of `method`, if one counted.
    pub fn auth_result(&self, method: AuthMethod) -> Option<AuthResult> {
        self.auth
            .iter()
            .find_map(|&(m, r)| (m == method).then_some(r))
    }

    /// The verdict of `filter`, if one counted.
    pub fn spam_verdict(&self, filter: SpamFilter) -> Option<SpamVerdict> {
        self.spam.iter().copied().find(|v| v.filter == filter)
    }
}

/// Reads the verdicts from `head`, the raw header block of a delivered mail (top first, LF or
/// CRLF, possibly only some of its fields, read up to [`MAX_HEAD`] bytes), trusting what
/// `trusted_authserv_ids` wrote (see the module docs). No trusted id, nothing read.
pub fn read(head: &[u8], trusted_authserv_ids: &[String]) -> Verdicts {
    let trusted = Trusted(trusted_authserv_ids);
    if !trusted.any() {
        return Verdicts::default();
    }
    let head = String::from_utf8_lossy(head.get(..MAX_HEAD).unwrap_or(head));
    let boundary = boundary(&head, trusted);
    let mut auth = auth_results::Tally::default();
    let mut spam = spam::Reader::new(trusted, boundary);
    let mut auth_fields = 0;
    for (index, field) in fields(&head).enumerate() {
        if field.is("Authentication-Results") && auth_fields < MAX_AUTH_FIELDS {
            auth_fields += 1;
            auth.read(&field.value, trusted);
        }
        spam.field(index, &field);
    }
    Verdicts {
        auth: auth.results(),
        spam: spam.verdicts(),
    }
}

/// The receiving side's ids, as configured. Empty entries never match.
#[derive(Debug, Clone, Copy)]
struct Trusted<'a>(&'a [String]);

impl<'a> Trusted<'a> {
    fn ids(self) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .map(|id| id.trim())
            .filter(|id| !id.is_empty())
    }

    fn any(self) -> bool {
        self.ids().next().is_some()
    }

    /// Whether `id` is one of the ids (an `authserv-id`: the exact name, any case).
    fn id(self, id: &str) -> bool {
        self.ids().any(|t| t.eq_ignore_ascii_case(id))
    }

    /// Whether `host` is one of the ids or a subdomain of one (`mx1.example.test` for
    /// `example.test`): a receiving side's hosts share its domain, its `authserv-id` often.
    fn host(self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        self.ids().any(|id| {
            let id = id.as_bytes();
            host.eq_ignore_ascii_case(id)
                || host.len() > id.len()
                    && host
                        .get(host.len() - id.len() - 1..)
                        .and_then(|tail| tail.split_first())
                        .is_some_and(|(dot, tail)| *dot == b'.' && tail.eq_ignore_ascii_case(id))
        })
    }
}

/// Index (among [`fields`]) of the lowest `Received:` field stamped `by` a trusted host.
fn boundary(head: &str, trusted: Trusted<'_>) -> Option<usize> {
    fields(head)
        .enumerate()
        .filter(|(_, f)| f.is("Received"))
        .filter(|(_, f)| by_host(&f.value).is_some_and(|host| trusted.host(host)))
        .map(|(index, _)| index)
        .last()
}

/// The host of a `Received:` value's `by` clause. The value is read as clauses
/// (`from X`, `by Y`, `via`, `with`, `id`, `for`), each keyword taking the word after it, so a
/// host or id that happens to be called `by` is not mistaken for the keyword; comments are
/// skipped wherever they are, and the date after `;` is never read.
fn by_host(value: &str) -> Option<&str> {
    const KEYWORDS: [&str; 5] = ["from", "via", "with", "id", "for"];
    let mut tokens = lex::tokens(value);
    while let Some(token) = tokens.next() {
        let Token::Word(word) = token else {
            if token == Token::Semicolon {
                return None;
            }
            continue;
        };
        if word.eq_ignore_ascii_case("by") {
            return match tokens.next() {
                Some(Token::Word(host)) => Some(host),
                _ => None,
            };
        }
        if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word)) {
            tokens.next();
        }
    }
    None
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod syntax_tests;
#[cfg(test)]
mod tests;
