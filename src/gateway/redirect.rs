//! Redirect routes: a 301/302/303/307/308 whose Location is a template over the request
//! (`"https://new.example.com${path}?${query}"`). Answered locally, nothing goes upstream.

use super::headers::{render, Escape, Vars};
use crate::config::Redirect;

/// Appends the `location` header line for `r` rendered against `v`.
pub fn write_location(r: &Redirect, v: &Vars<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"location: ");
    let start = out.len();
    render(&r.location, v, Escape::Header, out);
    // "${path}?${query}" with an empty query would leave a dangling '?'.
    if out.len() > start && out.last() == Some(&b'?') {
        out.pop();
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Template;

    #[test]
    fn location() {
        let r = Redirect {
            status: 308,
            location: Template::parse("https://new.example.com${path}?${query}").unwrap(),
        };
        let mut v = Vars {
            req: crate::gateway::Request {
                method: "GET",
                host: "old.example.com",
                target: "/a/b?x=1",
                headers: &[],
                client_ip: "1.2.3.4",
            },
            route: "r",
            request_id: b"",
            consumer: "",
            claims: None,
            pattern: None,
        };
        let mut out = Vec::new();
        write_location(&r, &v, &mut out);
        assert_eq!(out, b"location: https://new.example.com/a/b?x=1\r\n");
        v.req.target = "/a";
        out.clear();
        write_location(&r, &v, &mut out);
        assert_eq!(out, b"location: https://new.example.com/a\r\n");
    }
}
