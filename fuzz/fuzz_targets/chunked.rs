//! Fuzzes the chunked decoder (`ringway::http::chunked::ChunkedDecoder`): it must never panic,
//! must give the same answer however the input is split across reads (the network decides the
//! split), must never hand out more data than it was given, and what it decodes, re-encoded the
//! way Ringway re-encodes it, must decode to the same bytes. Verbatim decoding, stopped at the
//! first decoration and carried on by `decode`, must come to the same answer as `decode`
//! alone, and what it calls plain must be a prefix that decodes on its own.
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

/// `decode_verbatim` for as long as it goes, then `decode`, over pieces of `step` bytes.
fn decode_verbatim_first(input: &[u8], step: usize, max_ext: usize, max_trailer: usize) -> Outcome {
    let mut d = ChunkedDecoder::new(max_ext, max_trailer);
    let mut out = Vec::new();
    let mut used = 0;
    let mut verbatim = true;
    for piece in input.chunks(step.max(1)) {
        let mut at = 0;
        if verbatim {
            let v = d
                .decode_verbatim(piece, |b| out.extend_from_slice(b))
                .map_err(|e| e.0)?;
            assert!(v.plain <= v.used && v.used <= piece.len());
            at = v.used;
            verbatim = !v.decorated;
        }
        if !verbatim && !d.is_done() {
            at += d
                .decode(&piece[at..], |b| out.extend_from_slice(b))
                .map_err(|e| e.0)?;
        }
        used += at;
        if d.is_done() {
            break;
        }
        assert_eq!(at, piece.len(), "input left over before the end");
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
    // Stopping at a decoration hands `decode` the very state it would have had itself.
    let verbatim = decode_verbatim_first(input, step, max_ext, max_trailer);
    match (&whole, &verbatim) {
        (Ok(a), Ok(b)) if a.2 || b.2 => assert_eq!(a, b),
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("verbatim changed the outcome: {whole:?} / {verbatim:?}"),
    }
    // A whole plain prefix decodes alone to what the full decode gave for it.
    let mut d = ChunkedDecoder::new(max_ext, max_trailer);
    if let Ok(v) = d.decode_verbatim(input, |_| {}) {
        if d.is_done() && !v.decorated {
            assert_eq!(v.plain, v.used);
            let (again, n, done) = decode(&input[..v.plain], v.plain, 0, 0).expect("plain decodes");
            assert!(done && n == v.plain);
            assert_eq!(Ok((again, n, done)), whole);
        }
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
