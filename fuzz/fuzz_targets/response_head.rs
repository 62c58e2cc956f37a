//! Fuzzes the upstream response head parser (`ringway::http::response::parse`): it must never
//! panic, and whatever it accepts must have a valid status and one unambiguous framing, must
//! only be reusable when the body is delimited, and must not depend on bytes after the head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::request::Body;
use ringway::http::response::parse;
use std::mem::MaybeUninit;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let head_request = knob & 1 == 1;
    let max_head = 256 + (knob as usize >> 1) * 64;
    let mut slots = [MaybeUninit::uninit(); 32];
    let res = parse(input, &mut slots, head_request, max_head);
    if let Ok(Some(h)) = res {
        assert!((100..=599).contains(&h.status));
        assert!(h.head_len <= input.len());
        let count = |name: &str| {
            h.headers
                .iter()
                .filter(|x| x.name.eq_ignore_ascii_case(name))
                .count()
        };
        let te = count("transfer-encoding");
        assert!(te <= 1);
        let no_body = head_request || h.status < 200 || h.status == 204 || h.status == 304;
        if !no_body {
            assert!(
                te == 0 || count("content-length") == 0,
                "CL with TE accepted"
            );
        }
        match h.body {
            Body::Chunked => assert!(!no_body && te == 1 && !h.close_delimited),
            Body::Length(_) => assert!(!no_body && te == 0),
            Body::None => assert!(!no_body || !h.close_delimited),
        }
        if h.reusable {
            assert!(!h.close_delimited && h.status != 101);
        }
        let (hl, body, cd, reuse) = (h.head_len, h.body, h.close_delimited, h.reusable);
        let mut slots2 = [MaybeUninit::uninit(); 32];
        let again = parse(&input[..hl], &mut slots2, head_request, max_head)
            .expect("the head alone parses")
            .expect("the head alone is complete");
        assert_eq!(
            (
                again.head_len,
                again.body,
                again.close_delimited,
                again.reusable
            ),
            (hl, body, cd, reuse)
        );
    }
});
