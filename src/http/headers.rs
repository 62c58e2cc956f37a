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
    // Length first: nearly every header is rejected on length alone, before any compare.
    match name.len() {
        4 if name.eq_ignore_ascii_case("host") => Class::Host,
        2 if name.eq_ignore_ascii_case("te") => Class::HopByHop,
        6 if name.eq_ignore_ascii_case("expect") => Class::Expect,
        7 if name.eq_ignore_ascii_case("trailer") || name.eq_ignore_ascii_case("upgrade") => {
            Class::HopByHop
        }
        10 if name.eq_ignore_ascii_case("connection") => Class::Connection,
        10 if name.eq_ignore_ascii_case("keep-alive") => Class::HopByHop,
        14 if name.eq_ignore_ascii_case("content-length") => Class::ContentLength,
        14 if lookalike(name, "content-length") => Class::Lookalike,
        16 if name.eq_ignore_ascii_case("proxy-connection") => Class::HopByHop,
        17 if name.eq_ignore_ascii_case("transfer-encoding") => Class::TransferEncoding,
        17 if lookalike(name, "transfer-encoding") => Class::Lookalike,
        19 if name.eq_ignore_ascii_case("proxy-authorization")
            || name.eq_ignore_ascii_case("proxy-authenticate") =>
        {
            Class::HopByHop
        }
        _ => Class::EndToEnd,
    }
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
    names: [&'a str; 8],
    count: usize,
    /// More names than we keep: every listed name still has to go, so the caller refuses.
    pub overflow: bool,
}

impl<'a> ConnectionTokens<'a> {
    pub fn add(&mut self, value: &'a [u8]) {
        let Ok(value) = std::str::from_utf8(value) else {
            self.overflow = true;
            return;
        };
        for tok in value.split(',') {
            let tok = tok.trim_matches([' ', '\t']);
            if tok.is_empty() {
                continue;
            }
            if tok.eq_ignore_ascii_case("close") {
                self.close = true;
            } else if tok.eq_ignore_ascii_case("keep-alive") {
                self.keep_alive = true;
            } else {
                if tok.eq_ignore_ascii_case("upgrade") {
                    self.upgrade = true;
                }
                if self.count < self.names.len() {
                    self.names[self.count] = tok;
                    self.count += 1;
                } else {
                    self.overflow = true;
                }
            }
        }
    }

    /// Whether `name` was listed in Connection (and so must not be forwarded).
    #[inline]
    pub fn lists(&self, name: &str) -> bool {
        self.names[..self.count]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    #[inline]
    pub fn has_names(&self) -> bool {
        self.count > 0
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

    #[test]
    fn connection_tokens() {
        let mut t = ConnectionTokens::default();
        t.add(b"keep-alive, X-Secret ,Upgrade");
        assert!(t.keep_alive && t.upgrade && !t.close);
        assert!(t.lists("x-secret"));
        assert!(!t.lists("x-other"));
    }
}
