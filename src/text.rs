//! Text that came from a server, a mailbox or another program, made fit for a log line, an
//! error message or a page: one line of printable characters, bounded in length. Anyone can
//! write a bounce's diagnostic or a token endpoint's error; neither may break a log line or
//! flood it.

/// `text` trimmed, control characters as spaces, at most `max` characters (then `…`).
pub fn printable(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// The first line of `text` that is not blank, trimmed.
pub fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_one_bounded_line_of_printable_characters() {
        assert_eq!(printable("  a\r\nb\u{7}c ", 10), "a  b c");
        assert_eq!(printable(&"x".repeat(5), 3), "xxx…");
        assert_eq!(printable("xxx", 3), "xxx");
        assert_eq!(first_line("\n  \n second \nthird"), Some("second"));
        assert_eq!(first_line(" \n"), None);
    }
}
