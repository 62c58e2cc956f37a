//! Validation of a listener's `tls` table: certificate files, SNI names, oldest version and
//! handshake timeout. The certificates are read and checked here (by `crate::tls`), so a
//! broken one is refused at start or reload like any other key.

use super::raw::RawTls;
use super::{ConfigError, ListenerTls, Validator};
use crate::tls::{CertFiles, Settings};
use std::time::Duration;

/// nginx's `ssl_handshake_timeout` is 60 s; a proxy at the edge has less patience to spare.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Validator<'_> {
    pub(super) fn listener_tls(&self, key: &str, t: &RawTls) -> Result<ListenerTls, ConfigError> {
        let mut certs = vec![CertFiles {
            cert: self.rel_path(&t.cert),
            key: self.rel_path(&t.key),
            names: Vec::new(),
        }];
        for (i, s) in t.sni.iter().enumerate() {
            let k = format!("{key}.sni[{i}]");
            if s.server_names.is_empty() {
                return Err(self.err(format!("{k}.server_names"), "name at least one host"));
            }
            let names = s
                .server_names
                .iter()
                .map(|n| self.server_name(&format!("{k}.server_names"), n))
                .collect::<Result<Vec<_>, _>>()?;
            certs.push(CertFiles {
                cert: self.rel_path(&s.cert),
                key: self.rel_path(&s.key),
                names,
            });
        }
        let tls13_only = match t.min_version.as_deref() {
            None | Some("1.2") => false,
            Some("1.3") => true,
            Some(other) => {
                return Err(self.err(
                    format!("{key}.min_version"),
                    format!("unknown version {other:?} (known: \"1.2\", \"1.3\")"),
                ))
            }
        };
        let timeout_key = format!("{key}.handshake_timeout");
        let handshake_timeout = self.duration(
            &timeout_key,
            t.handshake_timeout.as_ref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
        )?;
        if handshake_timeout.is_zero() {
            return Err(self.err(timeout_key, "must be longer than 0"));
        }
        let server = crate::tls::server_config(&Settings { certs, tls13_only }).map_err(|e| {
            // `certs[0]` is the table's own pair, `certs[i]` its `sni[i - 1]`.
            let table = match e.cert {
                0 => key.to_string(),
                i => format!("{key}.sni[{}]", i - 1),
            };
            self.err(format!("{table}.{}", e.field), e.reason)
        })?;
        Ok(ListenerTls {
            server,
            handshake_timeout,
        })
    }

    /// A host name as SNI carries it: lower-case, no port, no trailing dot; `*.` may lead.
    fn server_name(&self, key: &str, name: &str) -> Result<String, ConfigError> {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        let host = n.strip_prefix("*.").unwrap_or(&n);
        let ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(self.err(
                key,
                format!("{name:?} is not a host name (a `*.` wildcard may lead it)"),
            ));
        }
        Ok(n)
    }
}
