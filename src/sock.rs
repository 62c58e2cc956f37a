//! Socket reads made beside the runtime, that must never wait: a peek at what a client or an
//! upstream sent, or a drain before a close. On io_uring the sockets may be in blocking mode,
//! so every call carries MSG_DONTWAIT; readiness, when needed, comes from the runtime.

use std::io;
use std::os::fd::RawFd;

/// `recv(2)` into `buf` with `flags | MSG_DONTWAIT`: the bytes read (0 at end of stream), or
/// the error, `WouldBlock` when nothing is waiting.
#[inline]
pub fn recv_now(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: writes at most `buf.len()` bytes into a live buffer; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
