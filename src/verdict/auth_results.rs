//! `Authentication-Results:` (RFC 8601 §2.2), as far as the verdicts need it:
//!
//! ```text
//! authserv-id [version] ; method[/version]=result [reason=value] [ptype.property=value ...] ; ...
//! authserv-id [version] ; none
//! ```
//!
//! Only the `authserv-id` and each result's `method=result` are read; the reasons and
//! properties after them are skipped up to the next `;` that is neither in a comment nor in a
//! quoted-string. A field whose id is not trusted is not read past its id.

use std::iter::Peekable;

use super::lex::{self, Token, Tokens};
use super::{AuthMethod, AuthResult, MAX_RESULTS_PER_FIELD, Trusted};

/// The results counted so far, one per method.
#[derive(Debug, Clone, Default)]
pub(super) struct Tally([Option<AuthResult>; AuthMethod::ALL.len()]);

impl Tally {
    /// Counts the results of one field's `value`, if its `authserv-id` is trusted.
    pub fn read(&mut self, value: &str, trusted: Trusted<'_>) {
        let mut tokens = lex::tokens(value).peekable();
        let Some(id) = tokens.next().and_then(lex::text) else {
            return;
        };
        if !trusted.id(&id) {
            return;
        }
        for _ in 0..MAX_RESULTS_PER_FIELD {
            // Past the version, or past the rest of the previous result.
            if !tokens.by_ref().any(|t| t == Token::Semicolon) {
                return;
            }
            if let Some((method, result)) = method_and_result(&mut tokens) {
                self.note(method, result);
            }
        }
    }

    /// `Pass` wins over anything; otherwise the first result seen stays.
    fn note(&mut self, method: AuthMethod, result: AuthResult) {
        let Some(slot) = self.0.get_mut(method as usize) else {
            return;
        };
        match slot {
            None => *slot = Some(result),
            Some(_) if result == AuthResult::Pass => *slot = Some(result),
            Some(_) => {}
        }
    }

    /// One result per method, in [`AuthMethod::ALL`] order.
    pub fn results(&self) -> Vec<(AuthMethod, AuthResult)> {
        AuthMethod::ALL
            .into_iter()
            .zip(self.0)
            .filter_map(|(method, result)| Some((method, result?)))
            .collect()
    }
}

/// `method[/version]=result` at the start of a result; `None` when it is malformed or names a
/// method or result not reported. Stops before a `;`, which starts the next result.
fn method_and_result(tokens: &mut Peekable<Tokens<'_>>) -> Option<(AuthMethod, AuthResult)> {
    let Token::Word(method) = next_in_result(tokens)? else {
        return None;
    };
    let mut after = next_in_result(tokens)?;
    if after == Token::Slash {
        let Token::Word(version) = next_in_result(tokens)? else {
            return None;
        };
        if !version.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        after = next_in_result(tokens)?;
    }
    if after != Token::Equals {
        return None;
    }
    let Token::Word(result) = next_in_result(tokens)? else {
        return None;
    };
    Some((AuthMethod::parse(method)?, AuthResult::parse(result)?))
}

/// The next token of the current result; `None` at its end (a `;` is left for the caller).
fn next_in_result<'a>(tokens: &mut Peekable<Tokens<'a>>) -> Option<Token<'a>> {
    tokens.next_if(|t| *t != Token::Semicolon)
}
