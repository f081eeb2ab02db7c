//! The fields of a raw header block, top first, one pass, bounded.
//!
//! Written here rather than taken from `mail-parser` because the verdicts depend on where each
//! field sits relative to the others (above or below a `Received:` line, next to which other
//! fields), and a parser that groups fields by name loses exactly that. It is also the one place
//! that has to be right about hostile input: a line that is not a field is skipped, not
//! guessed at, and no more than [`MAX_FIELDS`] fields are ever yielded.

use std::borrow::Cow;

/// Most fields read from one header block. A real head has a few dozen; a mail with more is
/// trying to make someone do work, and the fields a receiving side writes are near the top or
/// (milters) right after the sender's own, well inside this.
pub(super) const MAX_FIELDS: usize = 1_000;

/// One header field: its name as written and its value with the line breaks of folding removed
/// (the white space that starts each continuation line stays, as RFC 5322 §2.2.3 unfolds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field<'a> {
    /// The name, without the colon and any white space before it.
    pub name: &'a str,
    /// The unfolded value, trimmed.
    pub value: Cow<'a, str>,
}

impl Field<'_> {
    /// Whether the field is called `name` (field names are case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// The fields of `head`, top first, up to the first blank line and at most [`MAX_FIELDS`].
pub(super) fn fields(head: &str) -> Fields<'_> {
    Fields {
        rest: head,
        yielded: 0,
    }
}

/// Iterator over the fields of a header block; see [`fields`].
#[derive(Debug, Clone)]
pub(super) struct Fields<'a> {
    /// What has not been read yet, starting at the beginning of a line.
    rest: &'a str,
    yielded: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        while self.yielded < MAX_FIELDS && !self.rest.is_empty() {
            let (line, after) = split_line(self.rest);
            if line.is_empty() {
                // The blank line that ends a head: what follows is a body.
                self.rest = "";
                return None;
            }
            self.rest = after;
            // A continuation line here belongs to a line that was not a field: skipped with it.
            let Some((name, first)) = name_and_rest(line) else {
                continue;
            };
            let mut value = Cow::Borrowed(first);
            while self.rest.starts_with([' ', '\t']) {
                let (continuation, after) = split_line(self.rest);
                self.rest = after;
                // Owned from the first continuation on: the line break has to go.
                value.to_mut().push_str(continuation);
            }
            self.yielded += 1;
            return Some(Field {
                name,
                value: trim(value),
            });
        }
        None
    }
}

/// The first line of `text` without its line end (LF or CRLF), and what follows that line end.
fn split_line(text: &str) -> (&str, &str) {
    let (line, after) = text.split_once('\n').unwrap_or((text, ""));
    (line.strip_suffix('\r').unwrap_or(line), after)
}

/// `Name: value` → the name and the rest of the line after the colon; `None` for a line that is
/// not the start of a field (no colon, an empty name, or a name with characters RFC 5322 does
/// not allow: anything but printable ASCII, white space being allowed only before the colon).
fn name_and_rest(line: &str) -> Option<(&str, &str)> {
    let (name, rest) = line.split_once(':')?;
    let name = name.trim_end_matches([' ', '\t']);
    let printable = |b: u8| (b'!'..=b'~').contains(&b);
    (!name.is_empty() && name.bytes().all(printable)).then_some((name, rest))
}

fn trim(value: Cow<'_, str>) -> Cow<'_, str> {
    match value {
        Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
        Cow::Owned(mut v) => {
            v.truncate(v.trim_end().len());
            let leading = v.len() - v.trim_start().len();
            v.drain(..leading);
            Cow::Owned(v)
        }
    }
}
