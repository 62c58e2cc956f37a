//! Fuzzes the request head parser (`ringway::http::request::parse`): it must never panic, and
//! whatever it accepts must satisfy the framing rules Ringway relies on (CRLF-only head, at most
//! one framing header, body kind consistent with them, ASCII target, within the limits), and
//! bytes after the head must not change how the head was read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::request::{parse, Body, Limits};
use std::mem::MaybeUninit;

fuzz_target!(|data: &[u8]| {
    // The first byte varies the limits so that 414/431 paths are reached with small inputs.
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_request_line: 64 + (knob as usize & 0x0f) * 64,
        max_head_size: 1024 + (knob as usize >> 4) * 512,
    };
    let n_slots = 8 + (knob as usize % 24);
    let mut slots = [MaybeUninit::uninit(); 32];
    let res = parse(input, &mut slots[..n_slots], &limits);
    match res {
        Ok(Some(h)) => {
            let head = &input[..h.head_len];
            assert!(h.head_len <= limits.max_head_size);
            assert!(head.ends_with(b"\r\n\r\n"));
            for (i, b) in head.iter().enumerate() {
                if *b == b'\n' {
                    assert!(i > 0 && head[i - 1] == b'\r', "bare LF accepted");
                }
                if *b == b'\r' {
                    assert_eq!(head.get(i + 1), Some(&b'\n'), "bare CR accepted");
                }
            }
            // Empty lines (CRLF) may precede the request line; the limit is on the line itself.
            let mut start = 0;
            while head[start..].starts_with(b"\r\n") {
                start += 2;
            }
            let line_end = start + head[start..].iter().position(|b| *b == b'\n').unwrap();
            assert!(
                line_end - start <= limits.max_request_line,
                "request line over the limit"
            );
            let count = |name: &str| {
                h.headers
                    .iter()
                    .filter(|x| x.name.eq_ignore_ascii_case(name))
                    .count()
            };
            let (cl, te, host) = (
                count("content-length"),
                count("transfer-encoding"),
                count("host"),
            );
            assert!(cl <= 1 && te <= 1 && cl + te <= 1, "ambiguous framing");
            assert!(host <= 1);
            match h.body {
                Body::Chunked => assert_eq!(te, 1),
                Body::Length(n) => assert!(cl == 1 && n > 0),
                Body::None => assert_eq!(te, 0),
            }
            assert!(h.path.is_ascii() && !h.path.contains('#'));
            assert!(h.path.starts_with('/') || h.path == "*");
            for x in h.headers {
                assert!(!x.name.contains('_') || !x.name.eq_ignore_ascii_case("content_length"));
                assert!(!x
                    .value
                    .iter()
                    .any(|b| *b < 0x20 && *b != b'\t' || *b == 0x7f));
            }
            // Whatever follows the head (a body, the next request) cannot change the head.
            let (hl, body) = (h.head_len, h.body);
            let mut slots2 = [MaybeUninit::uninit(); 32];
            let again = parse(&input[..hl], &mut slots2[..n_slots], &limits)
                .expect("the head alone parses")
                .expect("the head alone is complete");
            assert_eq!((again.head_len, again.body), (hl, body));
        }
        Ok(None) => {
            assert!(input.len() < limits.max_head_size);
        }
        Err(r) => assert!(
            matches!(r.status, 400 | 405 | 414 | 417 | 431 | 501 | 505),
            "unexpected status {}",
            r.status
        ),
    }
});
