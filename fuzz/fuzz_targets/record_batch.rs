#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| finstream_broker::fuzzing::record_batch(data));
