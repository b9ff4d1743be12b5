//! Fuzzes the frame decoder with the same body as the `arbitrary_bytes_never_panic`
//! property test: decode a byte stream; every frame that decodes must round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshrpc::wire::fuzz_decode_stream(data);
});
