//! The POP3 reply parser fed arbitrary server bytes, whole and split in two: no panic, and the
//! split never changes the outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcanary::mailbox::pop3::proto::{ReplyParser, capabilities, uidl_listing};

fn parse(mut parser: ReplyParser, data: &[u8], split: usize) -> String {
    let split = split.min(data.len());
    match parser.advance(&data[..split]) {
        Ok(Some((reply, used))) => return format!("{reply:?} {used}"),
        Ok(None) => {}
        Err(e) => return format!("error {e}"),
    }
    match parser.advance(data) {
        Ok(Some((reply, used))) => format!("{reply:?} {used}"),
        Ok(None) => "incomplete".to_string(),
        Err(e) => format!("error {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize;
    let data = data.get(1..).unwrap_or_default();
    let makers = [
        ReplyParser::single as fn() -> ReplyParser,
        || ReplyParser::multi(64 * 1024),
        || ReplyParser::truncating(100, 64 * 1024),
    ];
    for make in makers {
        let whole = parse(make(), data, data.len());
        let halves = parse(make(), data, split);
        assert_eq!(whole, halves, "splitting the input changed the reply");
    }
    let _ = uidl_listing(data);
    let _ = capabilities(data);
});
