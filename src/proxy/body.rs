//! Streams a message body from one connection to another through one reused buffer, never
//! holding more than a buffer's worth: Content-Length bodies are copied as is, chunked bodies
//! are decoded and forwarded as they came while their framing is plain, re-encoded
//! (normalised) from the first decoration on, close-delimited bodies are read to EOF.

use crate::deadline::{Phase, Watch};
use crate::http::buf::{write_all_reuse, ConnBuf};
use crate::http::chunked::ChunkedDecoder;
use crate::http::fmt::push_hex;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::time::Duration;

/// The largest read while streaming a body.
pub const STREAM_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side the body comes from.
    Src,
    /// The side it goes to.
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Io,
    /// The source closed before the body ended.
    Eof,
    Timeout,
    /// The source broke the chunked framing.
    Framing(&'static str),
    /// More than the allowed body size.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError {
    pub side: Side,
    pub failure: Failure,
}

const fn src(failure: Failure) -> BodyError {
    BodyError {
        side: Side::Src,
        failure,
    }
}

const fn dst(failure: Failure) -> BodyError {
    BodyError {
        side: Side::Dst,
        failure,
    }
}

/// The deadlines of a copy, enforced through each side's watch.
#[derive(Clone, Copy)]
pub struct Deadlines<'a> {
    /// Longest wait for the next bytes from the source.
    pub read: Duration,
    pub src: &'a Watch,
    /// Longest a single write to the destination may take.
    pub write: Duration,
    pub dst: &'a Watch,
}

/// How the body is written out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    Chunked,
    Raw,
}

async fn fill<S: AsyncReadRent>(
    s: &mut S,
    buf: &mut ConnBuf,
    d: &Deadlines<'_>,
) -> Result<(), BodyError> {
    d.src.arm(d.read, Phase::Read);
    let res = buf.fill(s, STREAM_CHUNK).await;
    d.src.disarm();
    match res {
        _ if d.src.fired() => Err(src(Failure::Timeout)),
        Ok(0) => Err(src(Failure::Eof)),
        Ok(_) => Ok(()),
        Err(_) => Err(src(Failure::Io)),
    }
}

/// Maps a write result, telling a deadline that fired from a plain I/O error.
pub fn write_result(res: std::io::Result<()>, watch: &Watch) -> Result<(), BodyError> {
    match res {
        Ok(()) => Ok(()),
        Err(_) if watch.fired() => Err(dst(Failure::Timeout)),
        Err(_) => Err(dst(Failure::Io)),
    }
}

/// Writes all of `out` (cleared after) under the destination's write deadline.
pub async fn write<D: AsyncWriteRent>(
    dst_io: &mut D,
    out: &mut Vec<u8>,
    watch: &Watch,
    limit: Duration,
) -> Result<(), BodyError> {
    watch.arm(limit, Phase::Write);
    let res = write_all_reuse(dst_io, out).await;
    watch.disarm();
    write_result(res, watch)
}

/// Copies exactly `n` body bytes; `buf` may already hold some of them.
pub async fn copy_length<S: AsyncReadRent, D: AsyncWriteRent>(
    s: &mut S,
    buf: &mut ConnBuf,
    d_io: &mut D,
    mut n: u64,
    d: &Deadlines<'_>,
) -> Result<(), BodyError> {
    // A long body moves in reads of up to STREAM_CHUNK: the buffer it starts with (16 KiB for
    // a response) would take four times the reads, writes and wake-ups.
    buf.reserve_total(n.min(STREAM_CHUNK as u64) as usize);
    while n > 0 {
        if buf.is_empty() {
            fill(s, buf, d).await?;
        }
        let k = (buf.len() as u64).min(n) as usize;
        d.dst.arm(d.write, Phase::Write);
        // The write is awaited here, not through a helper: each nested future is one more
        // state line to load per poll, and at high concurrency each is a cache miss.
        let (res, slice) = d_io.write_all(buf.lend(k)).await;
        buf.restore(slice.into_inner(), k, res.is_ok());
        d.dst.disarm();
        let res = res.map(|_| ());
        write_result(res, d.dst)?;
        n -= k as u64;
    }
    Ok(())
}

/// Re-encoded chunk framing a buffer's worth of data may add (size lines and CRLFs).
const CHUNK_FRAMING_SLACK: usize = 256;

/// A body of unknown length that needed a second read is a long one: it moves on in reads of
/// up to STREAM_CHUNK, as a long Content-Length body does. The first read keeps the buffer's
/// size, so a short chunked response does not grow a buffer it does not need.
fn grow_for_streaming(buf: &mut ConnBuf, fills: u32) {
    if fills == 1 {
        buf.reserve_total(STREAM_CHUNK);
    }
}

/// Limits on a chunked body.
#[derive(Clone, Copy)]
pub struct ChunkLimits {
    /// Body bytes; past it the copy fails with `TooLarge`.
    pub body: u64,
    pub extension: usize,
    pub trailer: usize,
}

/// Decodes a chunked body and writes it re-encoded (`Encode::Chunked`) or raw. Trailers are
/// dropped. `scratch` is reused for the output.
///
/// While a body to re-encode has plain framing (see `ChunkedDecoder::decode_verbatim`), its
/// bytes are forwarded as they came, straight from `buf`: re-encoding would produce the same
/// bytes at the cost of copying every one of them once more. A size line is forwarded only
/// once it is complete, so the first extension, whitespace, leading zero or trailer switches
/// the rest of the message to re-encoding at a line boundary.
pub async fn copy_chunked<S: AsyncReadRent, D: AsyncWriteRent>(
    s: &mut S,
    buf: &mut ConnBuf,
    d_io: &mut D,
    encode: Encode,
    scratch: &mut Vec<u8>,
    limits: ChunkLimits,
    d: &Deadlines<'_>,
) -> Result<(), BodyError> {
    let limit = limits.body;
    let mut dec = ChunkedDecoder::new(limits.extension, limits.trailer);
    let mut total: u64 = 0;
    let mut fills = 0u32;
    let mut verbatim = encode == Encode::Chunked;
    // Bytes at the front of `buf` decoded but not yet forwarded: an unfinished line.
    let mut held = 0;
    loop {
        if buf.len() == held {
            grow_for_streaming(buf, fills);
            fills += 1;
            fill(s, buf, d).await?;
        }
        if verbatim {
            let v = dec
                .decode_verbatim(&buf.data()[held..], |data| total += data.len() as u64)
                .map_err(|e| src(Failure::Framing(e.0)))?;
            if total > limit {
                return Err(src(Failure::TooLarge));
            }
            let forward = if v.plain > 0 { held + v.plain } else { 0 };
            held = held + v.used - forward;
            if forward > 0 {
                write_buffered(d_io, buf, forward, d).await?;
            }
            if v.decorated {
                // The decoder has the held bytes; re-encoding writes their line anew.
                buf.consume(held);
                held = 0;
                verbatim = false;
            } else if dec.is_done() {
                return Ok(());
            }
            continue;
        }
        scratch.clear();
        // Room for what this buffer decodes to, at once: grown step by step, a 64 KiB read
        // would cost five reallocations and their copies on every response.
        scratch.reserve(buf.len() + CHUNK_FRAMING_SLACK);
        let used = dec
            .decode(buf.data(), |data| {
                total += data.len() as u64;
                if encode == Encode::Chunked {
                    push_hex(scratch, data.len() as u64);
                    scratch.extend_from_slice(b"\r\n");
                    scratch.extend_from_slice(data);
                    scratch.extend_from_slice(b"\r\n");
                } else {
                    scratch.extend_from_slice(data);
                }
            })
            .map_err(|e| src(Failure::Framing(e.0)))?;
        buf.consume(used);
        if total > limit {
            return Err(src(Failure::TooLarge));
        }
        let done = dec.is_done();
        if done && encode == Encode::Chunked {
            scratch.extend_from_slice(b"0\r\n\r\n");
        }
        if !scratch.is_empty() {
            write(d_io, scratch, d.dst, d.write).await?;
        }
        if done {
            return Ok(());
        }
    }
}

/// Writes the first `n` bytes of `buf` to the destination straight from the buffer, and
/// consumes them.
async fn write_buffered<D: AsyncWriteRent>(
    d_io: &mut D,
    buf: &mut ConnBuf,
    n: usize,
    d: &Deadlines<'_>,
) -> Result<(), BodyError> {
    d.dst.arm(d.write, Phase::Write);
    let (res, slice) = d_io.write_all(buf.lend(n)).await;
    buf.restore(slice.into_inner(), n, res.is_ok());
    d.dst.disarm();
    write_result(res.map(|_| ()), d.dst)
}

/// How much of `buf` is a whole chunked body with plain framing (see
/// `ChunkedDecoder::decode_verbatim`), so it can go out with the head in one write; `None`
/// when the body is not all here or needs re-encoding.
pub fn whole_plain_chunked(buf: &[u8]) -> Option<usize> {
    let mut dec = ChunkedDecoder::new(0, 0);
    let v = dec.decode_verbatim(buf, |_| {}).ok()?;
    (dec.is_done() && !v.decorated).then_some(v.used)
}

/// Copies everything until the source closes (a close-delimited response).
pub async fn copy_to_eof<S: AsyncReadRent, D: AsyncWriteRent>(
    s: &mut S,
    buf: &mut ConnBuf,
    d_io: &mut D,
    encode: Encode,
    scratch: &mut Vec<u8>,
    d: &Deadlines<'_>,
) -> Result<(), BodyError> {
    let mut fills = 0u32;
    loop {
        if buf.is_empty() {
            grow_for_streaming(buf, fills);
            fills += 1;
            match fill(s, buf, d).await {
                Ok(()) => {}
                Err(BodyError {
                    failure: Failure::Eof,
                    ..
                }) => break,
                Err(e) => return Err(e),
            }
        }
        if encode == Encode::Raw {
            write_buffered(d_io, buf, buf.len(), d).await?;
            continue;
        }
        scratch.clear();
        scratch.reserve(buf.len() + CHUNK_FRAMING_SLACK);
        push_hex(scratch, buf.len() as u64);
        scratch.extend_from_slice(b"\r\n");
        scratch.extend_from_slice(buf.data());
        scratch.extend_from_slice(b"\r\n");
        buf.clear();
        write(d_io, scratch, d.dst, d.write).await?;
    }
    if encode == Encode::Chunked {
        scratch.clear();
        scratch.extend_from_slice(b"0\r\n\r\n");
        write(d_io, scratch, d.dst, d.write).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! `copy_chunked` against in-memory ends, so every split of the input across reads can be
    //! tried: the network decides the split, and forwarding verbatim must not depend on it.
    use super::*;
    use crate::deadline::Watchdog;
    use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
    use monoio::BufResult;

    /// A source that hands out one piece per read.
    struct Pieces<'a> {
        rest: std::slice::Iter<'a, &'a [u8]>,
        cur: &'a [u8],
    }

    impl AsyncReadRent for Pieces<'_> {
        async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            if self.cur.is_empty() {
                self.cur = self.rest.next().copied().unwrap_or(&[]);
            }
            self.cur.read(buf).await
        }

        async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            self.cur.readv(buf).await
        }
    }

    /// A destination that keeps what it is given.
    #[derive(Default)]
    struct Sink(Vec<u8>);

    impl AsyncWriteRent for Sink {
        async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            // SAFETY: an IoBuf's first `bytes_init` bytes at `read_ptr` are initialised.
            let bytes = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            self.0.extend_from_slice(bytes);
            (Ok(bytes.len()), buf)
        }

        async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            (Err(std::io::ErrorKind::Unsupported.into()), buf)
        }

        async fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        async fn shutdown(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Copies `msg` split into pieces of `step` bytes; returns what was written and what was
    /// left unread (in the buffer or never read).
    fn copy(msg: &[u8], step: usize, encode: Encode) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let pieces: Vec<&[u8]> = msg.chunks(step).collect();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dog = Watchdog::default();
            let (sw, dw) = (dog.watch(-1), dog.watch(-1));
            let d = Deadlines {
                read: Duration::from_secs(60),
                src: &sw,
                write: Duration::from_secs(60),
                dst: &dw,
            };
            let mut src = Pieces {
                rest: pieces.iter(),
                cur: &[],
            };
            let (mut buf, mut sink, mut scratch) =
                (ConnBuf::with_capacity(64), Sink::default(), Vec::new());
            let limits = ChunkLimits {
                body: u64::MAX,
                extension: 64,
                trailer: 256,
            };
            copy_chunked(
                &mut src,
                &mut buf,
                &mut sink,
                encode,
                &mut scratch,
                limits,
                &d,
            )
            .await?;
            let mut left = buf.data().to_vec();
            left.extend_from_slice(src.cur);
            src.rest.for_each(|p| left.extend_from_slice(p));
            Ok((sink.0, left))
        })
    }

    fn decoded(body: &[u8]) -> (Vec<u8>, bool) {
        let mut dec = ChunkedDecoder::new(64, 256);
        let mut out = Vec::new();
        dec.decode(body, |d| out.extend_from_slice(d))
            .expect("decodes");
        (out, dec.is_done())
    }

    const DATA: &[u8] = b"hello world, chunked";

    #[test]
    fn plain_framing_is_forwarded_byte_for_byte_however_it_is_split() {
        let body: &[u8] = b"5\r\nhello\r\nF\r\n world, chunked\r\n0\r\n\r\n";
        let msg = [body, b"NEXT"].concat();
        for step in 1..=msg.len() {
            let (out, left) = copy(&msg, step, Encode::Chunked).expect("copies");
            assert_eq!(out, body, "step {step}");
            assert_eq!(left, b"NEXT", "step {step}");
            let (raw, _) = copy(&msg, step, Encode::Raw).expect("copies");
            assert_eq!(raw, DATA, "step {step}");
        }
    }

    #[test]
    fn decorations_after_plain_chunks_are_dropped_however_they_are_split() {
        for body in [
            &b"5\r\nhello\r\n1;ext=1\r\n \r\nE\r\nworld, chunked\r\n0\r\n\r\n"[..],
            b"5\r\nhello\r\nF \t;x\r\n world, chunked\r\n0\r\n\r\n",
            b"5\r\nhello\r\n00f\r\n world, chunked\r\n0\r\n\r\n",
            b"5\r\nhello\r\nF\r\n world, chunked\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"5\r\nhello\r\nF\r\n world, chunked\r\n0;last\r\n\r\n",
            b"5\r\nhello\r\nF\r\n world, chunked\r\n000\r\n\r\n",
            b"5;a\r\nhello\r\nF\r\n world, chunked\r\n0\r\n\r\n",
        ] {
            let msg = [body, b"NEXT"].concat();
            for step in 1..=msg.len() {
                let what = format!("{:?} step {step}", String::from_utf8_lossy(body));
                let (out, left) = copy(&msg, step, Encode::Chunked).expect(&what);
                assert_eq!(decoded(&out), (DATA.to_vec(), true), "{what}");
                assert_eq!(left, b"NEXT", "{what}");
                // What went out is plain: nothing Ringway drops reached the other side.
                let mut dec = ChunkedDecoder::new(0, 0);
                let v = dec.decode_verbatim(&out, |_| {}).expect(&what);
                assert!(
                    dec.is_done() && !v.decorated && v.used == out.len(),
                    "{what}: {out:?}"
                );
            }
        }
    }

    #[test]
    fn broken_framing_after_plain_chunks_fails_the_copy() {
        let msg = b"5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n";
        for step in 1..=msg.len() {
            let err = copy(msg, step, Encode::Chunked).expect_err("broken framing");
            assert!(
                matches!(err.failure, Failure::Framing(_)),
                "step {step}: {err:?}"
            );
        }
    }

    #[test]
    fn whole_plain_chunked_needs_the_whole_plain_body() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(
            whole_plain_chunked(&[&body[..], b"NEXT"].concat()),
            Some(body.len())
        );
        assert_eq!(whole_plain_chunked(&body[..body.len() - 1]), None);
        assert_eq!(whole_plain_chunked(b"5;x\r\nhello\r\n0\r\n\r\n"), None);
        assert_eq!(
            whole_plain_chunked(b"5\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
            None
        );
    }
}
