#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| statesnap_fuzz::range_proof(data));
