//! Validation of `[cache.NAME]` tables and of a route's `cache = "NAME"`: sizes, freshness by
//! status, the stale window and the status header.

use super::raw::{RawCache, RawRoute};
use super::{
    defined, httparse_token, Action, CacheBypass, CacheZone, ConfigError, Route, Validator,
};
use std::time::Duration;

const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;
const DEFAULT_MAX_ENTRY_SIZE: u64 = 1024 * 1024;
/// nginx's `proxy_cache_lock_timeout`.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl Validator<'_> {
    pub(super) fn cache_zone(
        &self,
        name: &str,
        c: &RawCache,
        workers: usize,
    ) -> Result<CacheZone, ConfigError> {
        let key = format!("cache.{name}");
        let max_size = self.size(
            &format!("{key}.max_size"),
            c.max_size.as_ref(),
            DEFAULT_MAX_SIZE,
        )?;
        let max_entry_size = self.size(
            &format!("{key}.max_entry_size"),
            c.max_entry_size.as_ref(),
            DEFAULT_MAX_ENTRY_SIZE,
        )?;
        let per_worker = max_size / workers.max(1) as u64;
        if max_entry_size == 0 || max_entry_size > per_worker {
            return Err(self.err(
                format!("{key}.max_entry_size"),
                format!(
                    "{max_entry_size} bytes must be above 0 and fit one worker's share of max_size \
                     ({max_size} bytes over {workers} workers is {per_worker} each)"
                ),
            ));
        }
        let mut valid = Vec::new();
        let mut valid_any = None;
        for (status, d) in c.valid.iter().flatten() {
            let k = format!("{key}.valid.{status}");
            let d = self.duration(&k, Some(d), Duration::ZERO)?;
            if status == "any" {
                valid_any = Some(d);
                continue;
            }
            match status.parse::<u16>() {
                // 206 and 304 answer a particular request; they are never stored.
                Ok(s) if (200..=599).contains(&s) && s != 206 && s != 304 => valid.push((s, d)),
                _ => {
                    return Err(self.err(
                        k,
                        "expected a final status other than 206 and 304 (200..=599), or \"any\"",
                    ))
                }
            }
        }
        valid.sort_unstable_by_key(|(s, _)| *s);
        let status_header = match c.status_header.as_deref() {
            None => Some("x-cache".to_string()),
            Some("") => None,
            Some(h) if httparse_token(h) => Some(h.to_ascii_lowercase()),
            Some(h) => {
                return Err(self.err(
                    format!("{key}.status_header"),
                    format!("{h:?} is not a header name (\"\" turns it off)"),
                ))
            }
        };
        Ok(CacheZone {
            name: name.to_string(),
            max_size,
            max_size_per_worker: per_worker,
            max_entry_size,
            valid,
            valid_any,
            use_stale: self.duration(
                &format!("{key}.use_stale"),
                c.use_stale.as_ref(),
                Duration::ZERO,
            )?,
            revalidate: c.revalidate.unwrap_or(true),
            status_header,
            lock_timeout: self.duration(
                &format!("{key}.lock_timeout"),
                c.lock_timeout.as_ref(),
                DEFAULT_LOCK_TIMEOUT,
            )?,
            bypass: c
                .bypass
                .iter()
                .flatten()
                .map(|b| self.bypass(&format!("{key}.bypass"), b))
                .collect::<Result<_, _>>()?,
        })
    }

    /// `"header:NAME"`, `"cookie:NAME"` or `"cookie:PREFIX*"`.
    fn bypass(&self, key: &str, b: &str) -> Result<CacheBypass, ConfigError> {
        let bad = || {
            self.err(
                key,
                format!("{b:?} is not \"header:NAME\", \"cookie:NAME\" or \"cookie:PREFIX*\""),
            )
        };
        match b.split_once(':') {
            Some(("header", name)) if httparse_token(name) => {
                Ok(CacheBypass::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) => {
                let (name, prefix) = match name.strip_suffix('*') {
                    Some(n) => (n, true),
                    None => (name, false),
                };
                if !httparse_token(name) {
                    return Err(bad());
                }
                Ok(CacheBypass::Cookie {
                    name: name.to_string(),
                    prefix,
                })
            }
            _ => Err(bad()),
        }
    }

    /// The cache a route names, if any; only `upstream` routes are cached.
    pub(super) fn route_cache(
        &self,
        i: usize,
        r: &RawRoute,
        route: &Route,
        caches: &[CacheZone],
    ) -> Result<Option<usize>, ConfigError> {
        let Some(name) = &r.cache else {
            return Ok(None);
        };
        let key = format!("route[{i}].cache");
        if !matches!(route.action, Action::Forward(_)) {
            return Err(self.err(key, "only `upstream` routes are cached"));
        }
        match caches.iter().position(|c| &c.name == name) {
            Some(idx) => Ok(Some(idx)),
            None => Err(self.err(
                key,
                format!(
                    "unknown cache {name:?} (defined: {})",
                    defined(
                        caches.iter().map(|c| c.name.as_str()),
                        "none; add [cache.NAME]"
                    )
                ),
            )),
        }
    }
}
