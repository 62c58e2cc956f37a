//! API keys from a header or a query parameter, each key naming its consumer. Lookup is a hash
//! map with the standard library's randomly keyed SipHash, so response time does not reveal how
//! much of a guessed key was right.

use super::{header, Failure, Identity};
use crate::config::ApiKeyAuth;
use crate::gateway::headers::query_param;
use httparse::Header;
use std::collections::HashMap;
use std::rc::Rc;

pub struct ApiKeys {
    pub header: Option<String>,
    pub query: Option<String>,
    keys: HashMap<Box<[u8]>, Rc<str>>,
}

impl ApiKeys {
    pub fn new(a: &ApiKeyAuth) -> Self {
        Self {
            header: a.header.clone(),
            query: a.query.clone(),
            keys: a
                .keys
                .iter()
                .map(|(name, key)| (key.as_bytes().into(), Rc::from(name.as_str())))
                .collect(),
        }
    }

    pub fn authenticate(&self, headers: &[Header<'_>], target: &str) -> Result<Identity, Failure> {
        let presented = self
            .header
            .as_deref()
            .and_then(|h| header(headers, h))
            .or_else(|| {
                self.query
                    .as_deref()
                    .and_then(|q| query_param(target, q))
                    .map(str::as_bytes)
            });
        let Some(key) = presented else {
            return Err(Failure::Missing);
        };
        match self.keys.get(key) {
            Some(consumer) => Ok(Identity {
                consumer: consumer.clone(),
                claims: None,
            }),
            None => Err(Failure::Invalid("unknown API key")),
        }
    }

    pub fn write_challenge(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"www-authenticate: ApiKey realm=\"ringway\"");
        if let Some(h) = &self.header {
            out.extend_from_slice(b", header=\"");
            out.extend_from_slice(h.as_bytes());
            out.push(b'"');
        }
        if let Some(q) = &self.query {
            out.extend_from_slice(b", query=\"");
            out.extend_from_slice(q.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_then_query() {
        let k = ApiKeys::new(&ApiKeyAuth {
            header: Some("x-api-key".into()),
            query: Some("apikey".into()),
            keys: vec![("acme".into(), "k-acme-123456".into())],
        });
        let h = [Header {
            name: "X-Api-Key",
            value: b"k-acme-123456",
        }];
        assert_eq!(&*k.authenticate(&h, "/").unwrap().consumer, "acme");
        assert_eq!(
            &*k.authenticate(&[], "/x?a=1&apikey=k-acme-123456")
                .unwrap()
                .consumer,
            "acme"
        );
        assert_eq!(k.authenticate(&[], "/x").err(), Some(Failure::Missing));
        assert!(matches!(
            k.authenticate(&[], "/x?apikey=nope"),
            Err(Failure::Invalid(_))
        ));
    }
}
