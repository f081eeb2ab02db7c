//! Tokens of a structured header value (RFC 5322 §3.2), comments skipped.
//!
//! `Authentication-Results:`, `Received:` and the filters' fields put free text in comments, and
//! that text is written by whoever wants it to be misread: `(dkim=pass; spf=pass)` inside a
//! comment, or a `;` inside a quoted reason, must not start a result of its own. So the values
//! are read as tokens, never split on a character first.
//!
//! One pass over the bytes, no allocation, no recursion: nested comments are a depth counter,
//! so a value of 60 KiB of `(` costs a loop, not a stack.

/// One token. Comments and white space (CR and LF included) separate tokens and are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token<'a> {
    /// A run of characters that are neither white space nor one of `( ) " ; = /`.
    Word(&'a str),
    /// The content of a quoted-string, still with its `\` escapes (see [`unquote`]).
    Quoted(&'a str),
    /// `;`
    Semicolon,
    /// `=`
    Equals,
    /// `/`
    Slash,
}

/// The tokens of `value`, left to right.
pub(super) fn tokens(value: &str) -> Tokens<'_> {
    Tokens { text: value, at: 0 }
}

/// Iterator over the tokens of a value; see [`tokens`].
#[derive(Debug, Clone)]
pub(super) struct Tokens<'a> {
    text: &'a str,
    /// Byte offset of what is not read yet; always at a character boundary or past the end,
    /// since it only ever stops on or right after an ASCII byte.
    at: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' | b')' => self.at += 1,
                b'(' => self.at = skip_comment(bytes, self.at),
                b';' | b'=' | b'/' => {
                    self.at += 1;
                    return Some(match b {
                        b';' => Token::Semicolon,
                        b'=' => Token::Equals,
                        _ => Token::Slash,
                    });
                }
                b'"' => {
                    let end = quoted_end(bytes, self.at + 1);
                    let content = self.text.get(self.at + 1..end).unwrap_or_default();
                    self.at = end + 1;
                    return Some(Token::Quoted(content));
                }
                _ => {
                    let start = self.at;
                    while bytes.get(self.at).is_some_and(|&b| !is_delimiter(b)) {
                        self.at += 1;
                    }
                    return Some(Token::Word(
                        self.text.get(start..self.at).unwrap_or_default(),
                    ));
                }
            }
        }
        None
    }
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'"' | b';' | b'=' | b'/'
    )
}

/// Offset just past the comment that opens at `open`, nested comments and `\` quoting included;
/// the end of the value for a comment never closed.
fn skip_comment(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut at = open;
    while let Some(&b) = bytes.get(at) {
        match b {
            b'\\' => at += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return at + 1;
                }
            }
            _ => {}
        }
        at += 1;
    }
    bytes.len()
}

/// Offset of the `"` that closes a quoted-string whose content starts at `start`; the end of
/// the value for one never closed.
fn quoted_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start;
    while let Some(&b) = bytes.get(at) {
        match b {
            b'\\' => at += 1,
            b'"' => return at,
            _ => {}
        }
        at += 1;
    }
    bytes.len()
}

/// A quoted-string's content without its `\` escapes.
pub(super) fn unquote(content: &str) -> std::borrow::Cow<'_, str> {
    if !content.contains('\\') {
        return content.into();
    }
    let mut out = String::with_capacity(content.len());
    let mut escaped = false;
    for c in content.chars() {
        if c == '\\' && !escaped {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out.into()
}

/// A token as text: a word as it is, a quoted-string unquoted; `None` for a special.
pub(super) fn text<'a>(token: Token<'a>) -> Option<std::borrow::Cow<'a, str>> {
    match token {
        Token::Word(w) => Some(w.into()),
        Token::Quoted(q) => Some(unquote(q)),
        _ => None,
    }
}
