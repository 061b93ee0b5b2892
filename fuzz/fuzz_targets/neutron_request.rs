//! A Neutron request body or list query, parsed into a model request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| api::fuzzing::neutron_request(data));
