//! A connection's read buffer: bytes received but not yet consumed, refilled in place by
//! ownership-passing io_uring reads, compacted only when the free tail gets short.

use monoio::buf::{IoBuf, IoBufMut, Slice};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::io;

pub struct ConnBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl ConnBuf {
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
            pos: 0,
        }
    }

    /// Bytes received and not yet consumed.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        debug_assert!(self.pos <= self.buf.len());
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Makes room for `total` unconsumed bytes in all, so that the next reads may be that large.
    pub fn reserve_total(&mut self, total: usize) {
        let have = self.buf.capacity() - self.pos;
        if have < total {
            self.buf.reserve(total - (self.buf.len() - self.pos));
        }
    }

    /// Wraps a (possibly recycled) buffer; its contents are discarded.
    pub fn from_vec(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self { buf, pos: 0 }
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Hands over the memory of an empty buffer, leaving none; the next `fill` (or
    /// `reserve_total`) allocates anew.
    pub fn release(&mut self) -> Vec<u8> {
        debug_assert!(self.is_empty());
        self.pos = 0;
        std::mem::take(&mut self.buf)
    }

    /// Reads once more from `r`, appending. Never grows the buffer past `limit` bytes of unconsumed
    /// data. Returns the number of bytes read; 0 means end of stream (or a full buffer, which the
    /// caller sees as `len() >= limit`).
    pub async fn fill<R: AsyncReadRent>(&mut self, r: &mut R, limit: usize) -> io::Result<usize> {
        let unconsumed = self.len();
        if unconsumed >= limit {
            return Ok(0);
        }
        if self.pos > 0 && self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(unconsumed);
            self.pos = 0;
        }
        let spare = self.buf.capacity() - self.buf.len();
        if spare < 1024 {
            let want = (self.buf.capacity()).max(4096).min(limit - unconsumed);
            self.buf.reserve(want.max(1024));
        }
        let start = self.buf.len();
        let end = self.buf.capacity().min(self.pos + limit);
        // The wake-up at its completion prefetches what it reads (proxy/prefetch.rs).
        crate::proxy::prefetch::reading_into(self.buf.as_ptr().wrapping_add(start));
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = r.read(buf.slice_mut(start..end)).await;
        self.buf = slice.into_inner();
        res
    }

    /// Lends the first `n` unconsumed bytes for an owned-buffer write; `restore` must follow.
    pub fn lend(&mut self, n: usize) -> Slice<Vec<u8>> {
        debug_assert!(n <= self.len());
        std::mem::take(&mut self.buf).slice(self.pos..self.pos + n)
    }

    /// Takes the lent buffer back, consuming the `n` bytes when they were written.
    pub fn restore(&mut self, buf: Vec<u8>, n: usize, written: bool) {
        self.buf = buf;
        if written {
            self.consume(n);
        }
    }
}

/// Submits one send of `buf` on `stream` and returns its completion, which holds the socket's fd
/// but not `stream`, so a read can be submitted beside it. On io_uring only (the legacy driver
/// performs an operation when it is first polled, not when it is made).
///
/// Why: a request head and the read of its response go to the kernel together, and the send's
/// completion, left unpolled until the response has come, wakes nothing: one task wake-up and
/// poll less per request.
pub fn send_detached(
    stream: &mut TcpStream,
    buf: Vec<u8>,
) -> impl std::future::Future<Output = monoio::BufResult<usize, Vec<u8>>> + 'static {
    // SAFETY: monoio 0.2.4's `TcpStream::write` submits the send and returns `Op::write()`, a
    // future over the operation alone (which keeps its own clone of the fd); the borrow of the
    // stream ends with the call. The trait's return type cannot say so, hence the `'static`
    // reborrow, which nothing holds past this line.
    let stream: &'static mut TcpStream = unsafe { &mut *(stream as *mut TcpStream) };
    stream.write(buf)
}

/// Writes the whole of `out` and hands the buffer back cleared, so it can be reused.
pub async fn write_all_reuse<W: AsyncWriteRent>(w: &mut W, out: &mut Vec<u8>) -> io::Result<()> {
    let res = write_all_keep(w, out).await;
    out.clear();
    res
}

/// Writes the whole of `out` and hands it back unchanged (to send it again on a retry).
pub async fn write_all_keep<W: AsyncWriteRent>(w: &mut W, out: &mut Vec<u8>) -> io::Result<()> {
    let buf = std::mem::take(out);
    let (res, buf) = w.write_all(buf).await;
    *out = buf;
    res.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reserve_total` makes room for that many unconsumed bytes in all, counting the ones
    /// already held, and never shrinks.
    #[test]
    fn reserve_total_counts_unconsumed_bytes() {
        let mut b = ConnBuf::with_capacity(1024);
        b.reserve_total(64 * 1024);
        assert!(b.capacity() >= 64 * 1024);
        let mut v = Vec::with_capacity(100);
        v.extend_from_slice(&[7u8; 100]);
        let mut b = ConnBuf::from_vec(v);
        b.buf.extend_from_slice(&[1u8; 100]);
        b.consume(40);
        b.reserve_total(1000);
        assert!(b.capacity() - b.pos >= 1000);
        assert_eq!(b.data(), &[1u8; 60][..]);
        let cap = b.capacity();
        b.reserve_total(10);
        assert_eq!(b.capacity(), cap);
    }
}
