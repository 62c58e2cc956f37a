//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies it): read on listeners
//! behind a load balancer, where the header that opens each connection names the real client,
//! and written to the servers of L4 upstreams, so that they learn the client too.

use crate::deadline::{Phase, Watchdog};
use crate::sock::recv_now;
use monoio::net::TcpStream;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The v2 header's first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes, CRLF included (the specification's own bound).
const V1_MAX: usize = 107;
/// Larger v2 headers (addresses plus TLVs) are refused: a balancer's are a few hundred bytes.
const V2_MAX: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    Invalid(&'static str),
    /// The header is `len` bytes long; `source` is the client it names, None when it names
    /// none (v1 UNKNOWN, v2 LOCAL or an address family other than TCP over IPv4 or IPv6).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Parsed::Partial
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 {
            Parsed::Partial
        } else {
            parse_v1(buf)
        };
    }
    Parsed::Invalid("the connection does not start with a PROXY protocol header")
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 line longer than 107 bytes")
        } else {
            Parsed::Partial
        };
    };
    if end + 2 > V1_MAX {
        return Parsed::Invalid("PROXY v1 line longer than 107 bytes");
    }
    let Ok(line) = std::str::from_utf8(&buf[6..end]) else {
        return Parsed::Invalid("PROXY v1 line is not text");
    };
    let len = end + 2;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Parsed::Done { len, source: None };
    }
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Parsed::Invalid("PROXY v1 line needs a family, two addresses and two ports");
    };
    let ip = |s: &str| -> Option<IpAddr> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            _ => None,
        }
    };
    // Ports are decimal without a sign or leading zeros, as the specification writes them.
    let port = |s: &str| -> Option<u16> {
        (s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0')))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (ip(src), ip(dst), port(sport), port(dport)) {
        (Some(ip), Some(_), Some(port), Some(_)) => Parsed::Done {
            len,
            source: Some(SocketAddr::new(ip, port)),
        },
        _ if !matches!(family, "TCP4" | "TCP6") => {
            Parsed::Invalid("PROXY v1 family is not TCP4, TCP6 or UNKNOWN")
        }
        _ => Parsed::Invalid("PROXY v1 address or port does not parse"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let Some(&[ver_cmd, family, hi, lo]) = buf.get(12..16) else {
        return Parsed::Partial;
    };
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("PROXY v2 header with a version other than 2");
    }
    let len = 16 + usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX {
        return Parsed::Invalid("PROXY v2 header longer than 4096 bytes");
    }
    let Some(body) = buf.get(16..len) else {
        return Parsed::Partial;
    };
    match ver_cmd & 0x0f {
        // LOCAL: the balancer's own connection (a health check); the socket's peer stands.
        0 => return Parsed::Done { len, source: None },
        1 => {}
        _ => return Parsed::Invalid("PROXY v2 command is neither LOCAL nor PROXY"),
    }
    let source = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => body.get(..12).map(|a| {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([a[8], a[9]]))
        }),
        0x21 => body.get(..36).map(|a| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            SocketAddr::new(IpAddr::V6(ip), u16::from_be_bytes([a[32], a[33]]))
        }),
        // UNSPEC, UDP or unix sockets: nothing Ringway can use as a client address.
        _ => return Parsed::Done { len, source: None },
    };
    match source {
        Some(source) => Parsed::Done {
            len,
            source: Some(source),
        },
        None => Parsed::Invalid("PROXY v2 address block shorter than its family needs"),
    }
}

/// Reads the header off `stream` within `timeout` and returns the client it names (the
/// socket's own peer when it names none). Only the header is taken off the socket: it is
/// peeked first, so the request or TLS handshake behind it stays for whoever reads next. None
/// when the header is missing, malformed or late: the caller closes the connection.
pub async fn read_header(
    stream: &TcpStream,
    peer: SocketAddr,
    watchdog: &Watchdog,
    timeout: Duration,
) -> Option<SocketAddr> {
    let watch = watchdog.watch(stream.as_raw_fd());
    watch.arm(timeout, Phase::Read);
    let found = take_header(stream).await;
    watch.disarm();
    found.map(|source| source.unwrap_or(peer))
}

/// Peeks until the header is whole, then takes exactly its bytes. The bytes of a header that
/// is not whole yet are taken as they come (they are all header), so the wait for readiness
/// waits for new bytes rather than waking at once for the ones already seen.
async fn take_header(stream: &TcpStream) -> Option<Option<SocketAddr>> {
    let fd = stream.as_raw_fd();
    // Enough for a v1 line or a v2 header with addresses and a few TLVs; grown (to V2_MAX)
    // only for a longer one, so a connection waiting for its header holds little.
    let mut buf = vec![0u8; 256];
    let mut have = 0;
    loop {
        match recv_now(fd, &mut buf[have..], libc::MSG_PEEK) {
            // Closed, or shut down by the deadline.
            Ok(0) => return None,
            Ok(n) => {
                let seen = have + n;
                match parse(&buf[..seen]) {
                    Parsed::Done { len, source } => {
                        // A header whole within the bytes already taken would have parsed then.
                        let rest = len.checked_sub(have)?;
                        let taken = recv_now(fd, &mut buf[have..len], 0).ok()?;
                        return (taken == rest).then_some(source);
                    }
                    Parsed::Invalid(_) => return None,
                    Parsed::Partial => {
                        if recv_now(fd, &mut buf[have..seen], 0).ok()? != n {
                            return None;
                        }
                        have = seen;
                        if have == buf.len() {
                            if have >= V2_MAX {
                                return None;
                            }
                            buf.resize((have * 2).min(V2_MAX), 0);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
        if stream.readable(false).await.is_err() {
            return None;
        }
    }
}

/// Appends the header, in `version` (1 or 2), that names `source` as the client of a
/// connection made to `dest`. An IPv4 address beside an IPv6 one is written IPv4-mapped: a
/// header has one family.
pub fn encode(version: u8, source: SocketAddr, dest: SocketAddr, out: &mut Vec<u8>) {
    let (sport, dport) = (source.port(), dest.port());
    let v4 = match (source.ip(), dest.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some((s, d)),
        _ => None,
    };
    let (s6, d6) = (mapped(source.ip()), mapped(dest.ip()));
    if version == 1 {
        // Writing into a Vec cannot fail.
        let _ = match v4 {
            Some((s, d)) => write!(out, "PROXY TCP4 {s} {d} {sport} {dport}\r\n"),
            None => write!(out, "PROXY TCP6 {s6} {d6} {sport} {dport}\r\n"),
        };
        return;
    }
    out.extend_from_slice(V2_SIGNATURE);
    // Version 2, command PROXY; then the family (TCP over IPv4 or IPv6) and the addresses.
    out.push(0x21);
    match v4 {
        Some((s, d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        None => {
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&s6.octets());
            out.extend_from_slice(&d6.octets());
        }
    }
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
}

/// Appends the header of a connection that carries no client's traffic (a health probe): v1
/// UNKNOWN, v2 LOCAL. The server keeps the connection's own addresses.
pub fn encode_local(version: u8, out: &mut Vec<u8>) {
    if version == 1 {
        out.extend_from_slice(b"PROXY UNKNOWN\r\n");
    } else {
        out.extend_from_slice(V2_SIGNATURE);
        out.extend_from_slice(&[0x20, 0x00, 0, 0]);
    }
}

fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Parsed::Done {
                len: 43,
                source: Some("203.0.113.7:51000".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"),
            Parsed::Done {
                len: 32,
                source: Some("[2001:db8::1]:1".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Parsed::Done {
                len: 24,
                source: None
            }
        );
        for prefix in [&b""[..], b"PRO", b"PROXY TCP4 1.2.3.4"] {
            assert_eq!(parse(prefix), Parsed::Partial, "{prefix:?}");
        }
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers() {
        let ipv4 = [203, 0, 113, 7, 10, 0, 0, 1, 0xc7, 0x38, 1, 187];
        let h = v2(1, 0x11, &ipv4);
        assert_eq!(
            parse(&[h.as_slice(), b"GET /"].concat()),
            Parsed::Done {
                len: 28,
                source: Some("203.0.113.7:51000".parse().unwrap())
            }
        );
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Parsed::Partial, "cut at {cut}");
        }
        let mut ipv6 = [0u8; 36];
        ipv6[..16].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        ipv6[32..34].copy_from_slice(&8080u16.to_be_bytes());
        // TLVs after the addresses are skipped with the header.
        let h = v2(1, 0x21, &[&ipv6[..], &[0x04, 0, 1, 9]].concat());
        assert_eq!(
            parse(&h),
            Parsed::Done {
                len: 16 + 40,
                source: Some("[2001:db8::1]:8080".parse().unwrap())
            }
        );
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Parsed::Done {
                len: 16,
                source: None
            }
        );
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216])),
            Parsed::Done {
                len: 232,
                source: None
            }
        );
    }

    #[test]
    fn what_is_encoded_parses_back() {
        let pairs = [
            ("203.0.113.7:51000", "10.0.0.1:443"),
            ("[2001:db8::7]:40000", "[::1]:8443"),
            ("[2001:db8::7]:1", "127.0.0.1:2"),
        ];
        for (source, dest) in pairs {
            let (source, dest): (SocketAddr, SocketAddr) =
                (source.parse().unwrap(), dest.parse().unwrap());
            for version in [1, 2] {
                let mut h = Vec::new();
                encode(version, source, dest, &mut h);
                let want = match (source, dest) {
                    (SocketAddr::V6(_), SocketAddr::V4(_)) => SocketAddr::V6(
                        std::net::SocketAddrV6::new(mapped(source.ip()), source.port(), 0, 0),
                    ),
                    _ => source,
                };
                assert_eq!(
                    parse(&h),
                    Parsed::Done {
                        len: h.len(),
                        source: Some(want)
                    },
                    "v{version} {source} {dest}"
                );
            }
        }
        for version in [1, 2] {
            let mut h = Vec::new();
            encode_local(version, &mut h);
            assert_eq!(
                parse(&h),
                Parsed::Done {
                    len: h.len(),
                    source: None
                }
            );
        }
        let mut h = Vec::new();
        encode(
            1,
            "203.0.113.7:51000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
            &mut h,
        );
        assert_eq!(h, b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n");
    }

    #[test]
    fn v2_refusals() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        let mut wrong_command = v2(1, 0x11, &[0; 12]);
        wrong_command[12] = 0x22;
        let mut too_long = v2(1, 0x11, &[0; 12]);
        too_long[14..16].copy_from_slice(&5000u16.to_be_bytes());
        for bad in [
            wrong_version,
            wrong_command,
            too_long,
            v2(1, 0x11, &[0; 8]),
            v2(1, 0x21, &[0; 12]),
        ] {
            assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }
}
