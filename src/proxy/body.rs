//! Streams a message body from one connection to another through one reused buffer, never
//! holding more than a buffer's worth: Content-Length bodies are copied as is, chunked bodies
//! are decoded and re-encoded (normalised), close-delimited bodies are read to EOF.

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
    loop {
        if buf.is_empty() {
            grow_for_streaming(buf, fills);
            fills += 1;
            fill(s, buf, d).await?;
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
        scratch.clear();
        scratch.reserve(buf.len() + CHUNK_FRAMING_SLACK);
        if encode == Encode::Chunked {
            push_hex(scratch, buf.len() as u64);
            scratch.extend_from_slice(b"\r\n");
            scratch.extend_from_slice(buf.data());
            scratch.extend_from_slice(b"\r\n");
        } else {
            scratch.extend_from_slice(buf.data());
        }
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
