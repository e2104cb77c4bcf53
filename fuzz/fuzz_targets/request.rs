#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    finstream_broker::fuzzing::request(bytes::Bytes::copy_from_slice(data))
});
