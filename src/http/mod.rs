//! HTTP/1.1 wire format: request and response head parsing with strict framing, the chunked
//! decoder, connection buffers, and canned responses. No I/O policy lives here.

pub mod buf;
pub mod chunked;
pub mod fmt;
pub mod headers;
pub mod request;
pub mod response;
pub mod status;

/// A request Ringway refuses: the status to answer with and a short reason for the body and log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

impl Reject {
    /// Cold and never inlined: every caller is an error return on the request path, and the
    /// call is what tells LLVM to lay that branch out away from the parse (see `crate::hint`).
    /// So it must not be evaluated eagerly on a success path (`ok_or_else`, not `ok_or`).
    #[cold]
    #[inline(never)]
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }
}
