//! The canary header: finding it in a raw head, parsing it, verifying it. Nothing may panic,
//! and anything that parses must re-render to a header that parses to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcanary::canary::{SigningKey, find_header, parse_header};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::new(b"fuzz".to_vec()).expect("non-empty key");
    let value = find_header(data).unwrap_or_else(|| String::from_utf8_lossy(data).into_owned());
    if let Ok(claimed) = parse_header(&value) {
        let _ = claimed.verify(&key);
        let again = parse_header(&claimed.canary.header_value(&key)).expect("re-rendered header parses");
        assert_eq!(again.canary, claimed.canary);
        assert!(again.verify(&key).is_ok());
    }
});
