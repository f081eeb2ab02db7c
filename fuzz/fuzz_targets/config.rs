//! The config loader on arbitrary text: an error or a config, never a panic; every error names
//! the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailcanary::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(Path::new("/nonexistent/fuzz/probes.toml"), text) {
        assert!(e.to_string().starts_with("/nonexistent/fuzz/probes.toml"), "{e}");
    }
});
