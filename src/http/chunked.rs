//! Streaming decoder for the chunked transfer coding (RFC 9112 §7.1), strict on purpose: a size
//! is 1-16 hex digits with nothing before it, extensions and trailers are bounded, every line
//! ends in CRLF. Data is handed out as slices of the input; the caller re-encodes or discards,
//! or, while the framing is plain (`decode_verbatim`), forwards the input bytes themselves.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// Whitespace after the size, before ';' (BWS) or CR.
    SizeWs,
    /// Inside a chunk extension; its bytes are counted against the limit.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// What `decode_verbatim` got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbatim {
    /// Input bytes decoded.
    pub used: usize,
    /// The end of the last complete size line, data run or end of message within `used`:
    /// input before it (with any bytes of an unfinished line held from earlier input) can be
    /// forwarded as it is. Bytes from here to `used` are a line not yet complete.
    pub plain: usize,
    /// Decoding stopped at `used`, before a byte that is not plain: the message goes on in
    /// `decode`, re-encoded, from the start of the line that holds it.
    pub decorated: bool,
}

pub struct ChunkedDecoder {
    state: State,
    size: u64,
    ext_len: usize,
    trailer_len: usize,
    max_ext: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    pub fn new(max_ext: usize, max_trailer: usize) -> Self {
        Self {
            state: State::Size { digits: 0 },
            size: 0,
            ext_len: 0,
            trailer_len: 0,
            max_ext,
            max_trailer,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, calling `data` with each run of body bytes.
    /// Returns how many input bytes were consumed (all of them unless the message ended).
    pub fn decode(&mut self, input: &[u8], data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut plain = 0;
        self.run::<false>(input, data, &mut plain)
            .map(|(used, _)| used)
    }

    /// Decodes like `decode` while the framing is plain: bare hex sizes without leading zeros,
    /// no whitespace, no extensions, no trailers, which is exactly how Ringway re-encodes a
    /// body. Forwarding the input bytes unchanged is then the same as re-encoding them. Stops
    /// before the first byte that is not plain, leaving it to `decode`.
    pub fn decode_verbatim(
        &mut self,
        input: &[u8],
        data: impl FnMut(&[u8]),
    ) -> Result<Verbatim, ChunkError> {
        let mut plain = 0;
        let (used, decorated) = self.run::<true>(input, data, &mut plain)?;
        Ok(Verbatim {
            used,
            plain,
            decorated,
        })
    }

    /// The decoding loop; with `VERBATIM`, it records in `plain` the end of the last complete
    /// piece of framing (or data) and returns `(used, true)` before a byte that is not plain.
    #[inline(always)]
    fn run<const VERBATIM: bool>(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
        plain: &mut usize,
    ) -> Result<(usize, bool), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(v) = hex(b) {
                        if digits >= 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        if VERBATIM && digits == 1 && self.size == 0 {
                            // A leading zero: valid, but not how Ringway writes a size.
                            return Ok((i, true));
                        }
                        self.size = (self.size << 4) | v as u64;
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError("invalid chunk size"));
                    } else if VERBATIM && b != b'\r' {
                        // An extension or whitespace: dropped by re-encoding (or refused).
                        return Ok((i, true));
                    } else {
                        match b {
                            b'\r' => self.state = State::SizeLf,
                            b';' => {
                                self.ext_len = 0;
                                self.state = State::Ext;
                            }
                            b' ' | b'\t' => self.state = State::SizeWs,
                            _ => return Err(ChunkError("invalid chunk size")),
                        }
                    }
                    i += 1;
                }
                State::SizeWs => {
                    match b {
                        b' ' | b'\t' => {}
                        b';' => {
                            self.ext_len = 0;
                            self.state = State::Ext;
                        }
                        _ => return Err(ChunkError("whitespace after chunk size")),
                    }
                    i += 1;
                }
                State::Ext => {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError("bare LF in chunk extension")),
                        0..=8 | 10..=31 | 127 => {
                            return Err(ChunkError("control byte in chunk extension"))
                        }
                        _ => {
                            self.ext_len += 1;
                            if self.ext_len > self.max_ext {
                                return Err(ChunkError("chunk extension too long"));
                            }
                        }
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    i += 1;
                    self.state = if self.size == 0 {
                        self.trailer_len = 0;
                        State::TrailerStart
                    } else {
                        *plain = i;
                        State::Data
                    };
                }
                State::Data => {
                    let take = (self.size.min((input.len() - i) as u64)) as usize;
                    data(&input[i..i + take]);
                    i += take;
                    *plain = i;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data longer than its size"));
                    }
                    i += 1;
                    *plain = i;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data not ended by CRLF"));
                    }
                    i += 1;
                    *plain = i;
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    if VERBATIM && b != b'\r' {
                        // A trailer field: dropped by re-encoding.
                        return Ok((i, true));
                    }
                    i += 1;
                    self.state = match b {
                        b'\r' => State::TrailerLf { empty: true },
                        b' ' | b'\t' => return Err(ChunkError("obs-fold in trailer")),
                        b'\n' => return Err(ChunkError("bare LF in trailer")),
                        _ => {
                            self.count_trailer()?;
                            State::TrailerLine
                        }
                    };
                }
                State::TrailerLine => {
                    i += 1;
                    match b {
                        b'\r' => self.state = State::TrailerLf { empty: false },
                        b'\n' => return Err(ChunkError("bare LF in trailer")),
                        0..=8 | 11..=31 | 127 => return Err(ChunkError("control byte in trailer")),
                        _ => self.count_trailer()?,
                    }
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkError("trailer line not ended by CRLF"));
                    }
                    i += 1;
                    if empty {
                        self.state = State::Done;
                        *plain = i;
                        return Ok((i, false));
                    }
                    self.state = State::TrailerStart;
                }
                State::Done => return Ok((i, false)),
            }
        }
        Ok((i, false))
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > self.max_trailer {
            Err(ChunkError("trailer section too large"))
        } else {
            Ok(())
        }
    }
}

#[inline]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(256, 1024);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = d.decode(piece, |b| out.extend_from_slice(b))?;
            used += n;
            if d.is_done() {
                break;
            }
        }
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn decodes_in_any_split() {
        let msg = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..msg.len() {
            let (out, used, done) = decode_all(msg, step).unwrap();
            assert_eq!(out, b"hello world");
            assert!(done);
            assert_eq!(used, msg.len() - 4, "step {step}");
        }
    }

    #[test]
    fn rejects_tricks() {
        for bad in [
            &b"-5\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert!(
                decode_all(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
