//! Fuzzes the PROXY protocol header parser (`ringway::server::proxy_protocol::parse`): it must
//! never panic, a header it accepts must lie within the input and parse the same without the
//! bytes after it, and every shorter prefix of it must ask for more bytes (the reader peeks
//! until the header is whole, so an early verdict would cut a header or reject a good one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::server::proxy_protocol::{parse, Parsed};

fuzz_target!(|input: &[u8]| {
    match parse(input) {
        Parsed::Done { len, source } => {
            assert!(len <= input.len());
            assert_eq!(parse(&input[..len]), Parsed::Done { len, source });
            for cut in 0..len {
                assert_eq!(parse(&input[..cut]), Parsed::Partial, "cut at {cut}");
            }
        }
        Parsed::Partial => {
            // A header still waiting for bytes stays within the largest one accepted.
            assert!(input.len() < 4096 + 16);
        }
        Parsed::Invalid(_) => {}
    }
});
