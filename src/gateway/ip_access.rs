//! Client address rules of a route (nginx's allow/deny, HAProxy's `acl src`): addresses and
//! CIDR blocks denied, and, when an allow list is given, the only ones admitted.

use std::net::IpAddr;

/// An address block: `addr/prefix`, or one address (the full prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    mask: u128,
    v4: bool,
}

impl Cidr {
    /// `"10.0.0.0/8"`, `"2001:db8::/32"`, `"192.0.2.7"`; the reason when it is none of them.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        // Not `key`: a block written in IPv6 stays IPv6, whatever its bits.
        let (bits, v4) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, true),
            IpAddr::V6(a) => (u128::from(a), false),
        };
        let width = if v4 { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.trim().parse::<u32>() {
                Ok(n) if n <= width => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {width}")),
            },
        };
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        if bits & !mask != 0 {
            return Err(format!(
                "{s:?} has bits set past its /{prefix} prefix (write the block's first address)"
            ));
        }
        Ok(Cidr {
            net: bits & mask,
            mask,
            v4,
        })
    }

    /// Whether the address `key` gave lies in the block.
    fn contains(&self, (bits, v4): (u128, bool)) -> bool {
        v4 == self.v4 && bits & self.mask == self.net
    }
}

/// An address as the blocks compare it: its bits left-aligned in 128, and whether it is IPv4.
/// A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; they count as IPv4.
fn key(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, true),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)) << 96, true),
            None => (u128::from(a), false),
        },
    }
}

/// A route's rules: denied blocks first, then, if any are listed, the allowed ones.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl IpRules {
    /// Whether `client` (as the request path renders it) may use the route. An address that
    /// does not parse is not admitted where an allow list exists.
    pub fn admits(&self, client: &str) -> bool {
        let Ok(ip) = client.parse::<IpAddr>() else {
            return self.allow.is_empty() && self.deny.is_empty();
        };
        let ip = key(ip);
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let p = |v: &[&str]| v.iter().map(|s| Cidr::parse(s).unwrap()).collect();
        IpRules {
            allow: p(allow),
            deny: p(deny),
        }
    }

    #[test]
    fn blocks_and_addresses() {
        let r = rules(
            &["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
            &["10.1.0.0/16"],
        );
        for (ip, ok) in [
            ("10.2.3.4", true),
            ("10.1.2.3", false),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("::ffff:10.9.9.9", true),
            ("::ffff:10.1.9.9", false),
            ("2001:db8:1::5", true),
            ("2001:db9::5", false),
            // An IPv4 block does not match the IPv6 address with the same bits.
            ("::a02:304", false),
            ("not an address", false),
        ] {
            assert_eq!(r.admits(ip), ok, "{ip}");
        }
        let deny_only = rules(&[], &["203.0.113.0/24", "::1"]);
        assert!(deny_only.admits("198.51.100.1"));
        assert!(!deny_only.admits("203.0.113.200"));
        assert!(!deny_only.admits("::1"));
        let everyone = rules(&["0.0.0.0/0", "::/0"], &[]);
        assert!(everyone.admits("8.8.8.8") && everyone.admits("2001:db8::1"));
    }

    #[test]
    fn refusals() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "2001:db8::1/32",
            "10.0.0",
            "10.0.0.0/x",
            "",
            "all",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
