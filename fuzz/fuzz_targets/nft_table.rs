//! `nft -j list table` output, as the agent reads its tables back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = agent::nft::parse_table(text);
    }
});
