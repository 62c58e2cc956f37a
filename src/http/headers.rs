//! Header classification shared by requests and responses: hop-by-hop headers (RFC 9110 §7.6.1),
//! the tokens of a Connection header, and the framing headers that Ringway always rewrites.

/// Headers that describe one connection, never forwarded; plus the framing and `Host`-like
/// headers the proxy writes itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// Forward as is.
    EndToEnd,
    /// Drop: connection-specific.
    HopByHop,
    ContentLength,
    TransferEncoding,
    Connection,
    Host,
    Expect,
    /// `Content_Length`, `Transfer_Encoding` and the like: not framing headers to us, but
    /// servers that map `_` to `-` (CGI-style environments) would read them as framing. Requests
    /// carrying one are refused; responses lose it.
    Lookalike,
}

#[inline]
pub fn classify(name: &str) -> Class {
    let n = name.as_bytes();
    // Length first: nearly every header is rejected on length alone, before any compare.
    match n.len() {
        4 if name_is(n, b"host") => Class::Host,
        2 if name_is(n, b"te") => Class::HopByHop,
        6 if name_is(n, b"expect") => Class::Expect,
        7 if name_is(n, b"trailer") || name_is(n, b"upgrade") => Class::HopByHop,
        10 if name_is(n, b"connection") => Class::Connection,
        10 if name_is(n, b"keep-alive") => Class::HopByHop,
        14 if name_is(n, b"content-length") => Class::ContentLength,
        14 if lookalike(name, "content-length") => Class::Lookalike,
        16 if name_is(n, b"proxy-connection") => Class::HopByHop,
        17 if name_is(n, b"transfer-encoding") => Class::TransferEncoding,
        17 if lookalike(name, "transfer-encoding") => Class::Lookalike,
        19 if name_is(n, b"proxy-authorization") || name_is(n, b"proxy-authenticate") => {
            Class::HopByHop
        }
        _ => Class::EndToEnd,
    }
}

/// The values (untrimmed) of the fields named `lower` in a head kept as bytes (a stored
/// response, one sent to a client): the first line is the status line.
pub fn raw_fields<'a>(head: &'a [u8], lower: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|b| *b == b'\n').skip(1).filter_map(move |line| {
        let colon = line.iter().position(|b| *b == b':')?;
        name_is(&line[..colon], lower).then(|| &line[colon + 1..])
    })
}

/// `name` equals `lower` (a lower-case literal) ignoring ASCII case, exactly as
/// `eq_ignore_ascii_case` would answer, but eight bytes per compare: with `lower` a constant,
/// each word is one OR and one compare, where the byte loop cost ~7 instructions a byte on
/// every header of every request and response.
#[inline(always)]
pub fn name_is(name: &[u8], lower: &[u8]) -> bool {
    let n = lower.len();
    if name.len() != n {
        return false;
    }
    match n {
        0 => true,
        1..=3 => name
            .iter()
            .zip(lower)
            .all(|(a, b)| a.to_ascii_lowercase() == *b),
        4..=7 => {
            // Two overlapping 4-byte words cover 4 to 7 bytes.
            let w =
                |s: &[u8], at: usize| u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
            eq_word(w(name, 0) as u64, w(lower, 0) as u64)
                && eq_word(w(name, n - 4) as u64, w(lower, n - 4) as u64)
        }
        _ => {
            let w = |s: &[u8], at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&s[at..at + 8]);
                u64::from_le_bytes(b)
            };
            let mut at = 0;
            while at + 8 < n {
                if !eq_word(w(name, at), w(lower, at)) {
                    return false;
                }
                at += 8;
            }
            // The last word overlaps the one before when the length is not a multiple of 8.
            eq_word(w(name, n - 8), w(lower, n - 8))
        }
    }
}

/// One word of `name` against the same word of the lower-case literal: the 0x20 bit is
/// forced on only where the literal has a letter, so `A`/`a` match `a` and nothing else does
/// (a `-` or digit must match exactly, and `\r` | 0x20 is no longer `-`).
#[inline(always)]
fn eq_word(name: u64, lower: u64) -> bool {
    let mut mask = 0u64;
    let mut i = 0;
    while i < 8 {
        let b = (lower >> (i * 8)) as u8;
        if b.is_ascii_lowercase() {
            mask |= 0x20 << (i * 8);
        }
        i += 1;
    }
    name | mask == lower
}

/// `name` equals the lower-case `framing` header name when `_` is read as `-`. Reached only
/// for names of the same length that are not the header itself.
#[cold]
fn lookalike(name: &str, framing: &str) -> bool {
    name.bytes()
        .zip(framing.bytes())
        .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// What a Connection header said: close / keep-alive, and the extra header names it lists,
/// which are hop-by-hop for this message.
#[derive(Default)]
pub struct ConnectionTokens<'a> {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// More names (or more Connection lines naming them) than we keep: every listed name
    /// still has to go, so the caller refuses.
    pub overflow: bool,
    names: u8,
    lines: u8,
    /// The Connection lines that name other headers, read again by `lists`. Only messages
    /// that name extra hop-by-hop headers pay for that; a table of the names themselves cost
    /// every message its zeroing and copies.
    values: [&'a str; MAX_CONNECTION_LINES],
}

/// Most header names a Connection header may list.
const MAX_CONNECTION_NAMES: u8 = 8;
/// Most Connection lines listing header names.
const MAX_CONNECTION_LINES: usize = 4;

/// The options of a Connection value, blanks trimmed, empty ones skipped.
fn options(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|t| t.trim_matches([' ', '\t']))
        .filter(|t| !t.is_empty())
}

fn is_persistence(option: &str) -> bool {
    option.eq_ignore_ascii_case("close") || option.eq_ignore_ascii_case("keep-alive")
}

impl<'a> ConnectionTokens<'a> {
    pub fn add(&mut self, value: &'a [u8]) {
        let Ok(value) = std::str::from_utf8(value) else {
            self.overflow = true;
            return;
        };
        let mut named = false;
        for tok in options(value) {
            if tok.eq_ignore_ascii_case("close") {
                self.close = true;
            } else if tok.eq_ignore_ascii_case("keep-alive") {
                self.keep_alive = true;
            } else {
                if tok.eq_ignore_ascii_case("upgrade") {
                    self.upgrade = true;
                }
                named = true;
                self.names = self.names.saturating_add(1);
            }
        }
        if named {
            match self.values.get_mut(self.lines as usize) {
                Some(slot) => {
                    *slot = value;
                    self.lines += 1;
                }
                None => self.overflow = true,
            }
        }
        if self.names > MAX_CONNECTION_NAMES {
            self.overflow = true;
        }
    }

    /// Whether `name` was listed in Connection (and so must not be forwarded).
    #[inline]
    pub fn lists(&self, name: &str) -> bool {
        self.values[..self.lines as usize]
            .iter()
            .flat_map(|v| options(v))
            .any(|o| o.eq_ignore_ascii_case(name) && !is_persistence(o))
    }

    #[inline]
    pub fn has_names(&self) -> bool {
        self.names > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify("Content-Length"), Class::ContentLength);
        assert_eq!(classify("TRANSFER-ENCODING"), Class::TransferEncoding);
        assert_eq!(classify("Keep-Alive"), Class::HopByHop);
        assert_eq!(classify("x-custom"), Class::EndToEnd);
        assert_eq!(classify("Accept"), Class::EndToEnd);
        assert_eq!(classify("Content_Length"), Class::Lookalike);
        assert_eq!(classify("transfer_encoding"), Class::Lookalike);
        assert_eq!(classify("Content-Lengths"), Class::EndToEnd);
        assert_eq!(classify("Content-Langth"), Class::EndToEnd);
    }

    /// The word compare answers as the byte compare does, for every byte in every position.
    #[test]
    fn name_is_matches_eq_ignore_ascii_case() {
        for lower in [
            &b"te"[..],
            b"via",
            b"host",
            b"expect",
            b"upgrade",
            b"keep-alive",
            b"content-length",
            b"x-forwarded-for",
            b"proxy-connection",
            b"transfer-encoding",
            b"proxy-authorization",
        ] {
            assert!(name_is(&lower.to_ascii_uppercase(), lower));
            for at in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut name = lower.to_vec();
                    name[at] = b;
                    assert_eq!(
                        name_is(&name, lower),
                        name.eq_ignore_ascii_case(lower),
                        "{lower:?} with byte {b:#x} at {at}"
                    );
                }
            }
            assert!(!name_is(&lower[1..], lower));
        }
    }

    #[test]
    fn connection_tokens() {
        let mut t = ConnectionTokens::default();
        t.add(b"keep-alive, X-Secret ,Upgrade");
        assert!(t.keep_alive && t.upgrade && !t.close);
        assert!(t.lists("x-secret"));
        assert!(t.lists("upgrade"));
        assert!(!t.lists("x-other"));
        assert!(!t.lists("keep-alive"));
        t.add(b"close, x-second");
        assert!(t.close && t.lists("X-Second") && t.lists("x-secret"));
        assert!(!t.overflow);
    }

    #[test]
    fn connection_tokens_past_the_limits_overflow() {
        let mut names = ConnectionTokens::default();
        names.add(b"a, b, c, d, e, f, g, h");
        assert!(!names.overflow);
        names.add(b"i");
        assert!(names.overflow);
        let mut lines = ConnectionTokens::default();
        for _ in 0..MAX_CONNECTION_LINES {
            lines.add(b"x-one");
        }
        lines.add(b"close");
        assert!(!lines.overflow, "a line naming no header takes no slot");
        lines.add(b"x-two");
        assert!(lines.overflow);
    }
}
