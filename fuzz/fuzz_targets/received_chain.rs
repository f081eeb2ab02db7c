//! The Received chain and the per-hop breakdown of arbitrary header blocks: no panic, one hop
//! delay per dated stamp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcanary::delay::{breakdown, received_chain};

fuzz_target!(|data: &[u8]| {
    let chain = received_chain(data);
    let dated = chain.iter().filter(|h| h.date_ms.is_some()).count();
    for server in [None, Some(1_795_875_989_000)] {
        let b = breakdown(1_795_875_988_500, &chain, server);
        assert_eq!(b.hops.len(), dated + usize::from(server.is_some()));
    }
});
