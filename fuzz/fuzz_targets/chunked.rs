//! Fuzzes the chunked decoder (`ringway::http::chunked::ChunkedDecoder`): it must never panic,
//! must give the same answer however the input is split across reads (the network decides the
//! split), must never hand out more data than it was given, and what it decodes, re-encoded the
//! way Ringway re-encodes it, must decode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::chunked::ChunkedDecoder;

type Outcome = Result<(Vec<u8>, usize, bool), &'static str>;

fn decode(input: &[u8], step: usize, max_ext: usize, max_trailer: usize) -> Outcome {
    let mut d = ChunkedDecoder::new(max_ext, max_trailer);
    let mut out = Vec::new();
    let mut used = 0;
    for piece in input.chunks(step.max(1)) {
        let n = d
            .decode(piece, |b| out.extend_from_slice(b))
            .map_err(|e| e.0)?;
        assert!(n <= piece.len());
        used += n;
        if d.is_done() {
            break;
        }
        assert_eq!(n, piece.len(), "input left over before the end");
    }
    Ok((out, used, d.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let step = (knob as usize % 13) + 1;
    let max_ext = 4 + (knob as usize >> 4) * 8;
    let max_trailer = 16 + (knob as usize >> 4) * 32;
    let whole = decode(input, input.len(), max_ext, max_trailer);
    let split = decode(input, step, max_ext, max_trailer);
    let bytewise = decode(input, 1, max_ext, max_trailer);
    match (&whole, &split, &bytewise) {
        (Ok(a), Ok(b), Ok(c)) => {
            // Unfinished bodies may have handed out different amounts so far; finished ones
            // must agree exactly.
            assert_eq!(a.2, b.2);
            assert_eq!(a.2, c.2);
            if a.2 {
                assert_eq!(a, b);
                assert_eq!(a, c);
            }
        }
        (Err(a), Err(b), Err(c)) => {
            assert_eq!(a, b);
            assert_eq!(a, c);
        }
        _ => panic!("split changed the outcome: {whole:?} / {split:?} / {bytewise:?}"),
    }
    if let Ok((data, used, true)) = whole {
        assert!(data.len() <= used && used <= input.len());
        let mut enc = Vec::new();
        if !data.is_empty() {
            enc.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            enc.extend_from_slice(&data);
            enc.extend_from_slice(b"\r\n");
        }
        enc.extend_from_slice(b"0\r\n\r\n");
        let (again, n, done) = decode(&enc, enc.len(), 0, 0).expect("re-encoded body decodes");
        assert!(done && n == enc.len() && again == data);
    }
});
