//! Picks a handshake's certificate by the SNI name the client sent: an exact name first,
//! then the longest `*.` wildcard that covers it, else the default (the first certificate).

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Resolver {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*`, dot included (`.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Resolver {
    /// Adds a certificate for `names`; the first one added is also the default. A name
    /// given twice keeps its first certificate, as the config lists them in order.
    pub fn add(&mut self, key: Arc<CertifiedKey>, names: &[String]) {
        for name in names {
            let map = match name.strip_prefix('*') {
                Some(suffix) => (&mut self.wildcard, suffix),
                None => (&mut self.exact, name.as_str()),
            };
            map.0
                .entry(map.1.to_string())
                .or_insert_with(|| key.clone());
        }
        self.default.get_or_insert(key);
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = name {
            // rustls hands the name over lower-cased and without a trailing dot.
            if let Some(k) = self.exact.get(name) {
                return Some(k.clone());
            }
            // A wildcard covers one label: `*.example.com` matches `a.example.com` only.
            if let Some(dot) = name.find('.') {
                if let Some(k) = self.wildcard.get(&name[dot..]) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    fn key(tag: u8) -> Arc<CertifiedKey> {
        let signer = rustls::crypto::ring::sign::any_supported_type(
            &rustls::pki_types::PrivateKeyDer::Pkcs8(
                rcgen::KeyPair::generate().unwrap().serialize_der().into(),
            ),
        )
        .unwrap();
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(vec![tag])],
            signer,
        ))
    }

    fn tag(k: Option<Arc<CertifiedKey>>) -> u8 {
        k.unwrap().cert[0].as_ref()[0]
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let mut r = Resolver::default();
        r.add(key(1), &[]);
        r.add(key(2), &["api.example.com".into()]);
        r.add(key(3), &["*.example.com".into(), "example.org".into()]);
        r.add(key(4), &["api.example.com".into()]);
        assert_eq!(tag(r.pick(None)), 1);
        assert_eq!(tag(r.pick(Some("api.example.com"))), 2, "first listed wins");
        assert_eq!(tag(r.pick(Some("www.example.com"))), 3);
        assert_eq!(tag(r.pick(Some("example.org"))), 3);
        assert_eq!(tag(r.pick(Some("a.b.example.com"))), 1, "one label only");
        assert_eq!(tag(r.pick(Some("example.com"))), 1);
        assert_eq!(tag(r.pick(Some("other.net"))), 1);
    }
}
