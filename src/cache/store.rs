//! One worker's share of a response cache: entries by key (and by the request headers they
//! vary on), least recently used evicted first, held under a byte budget.

use super::policy::header_values;
use super::Pending;
use crate::config::CacheZone;
use crate::telemetry::bump;
use bytes::Bytes;
use httparse::Header;
use lru::LruCache;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

/// Variants kept per key (one per combination of the headers it varies on); the oldest goes.
const MAX_VARIANTS: usize = 4;
/// Bookkeeping counted per entry on top of its bytes (the map slot, the `Rc`, the vectors).
const ENTRY_OVERHEAD: u64 = 192;

/// A request header a stored response varies on (lower-case) and the value it was made for.
pub type VaryValue = (Box<str>, Box<[u8]>);

/// A stored response.
pub struct Entry {
    pub status: u16,
    /// The head as a keep-alive HTTP/1.1 client gets it: status line, headers (hop-by-hop and
    /// `Age` removed) and `content-length`, each line ending in CRLF, then one more CRLF.
    pub head: Box<[u8]>,
    pub body: Bytes,
    /// Request headers it varies on and the values the stored response was made for.
    vary: Box<[VaryValue]>,
    /// The worker's clock (seconds) when it was stored.
    stored_at: u64,
    /// Its age then.
    age_at_store: u64,
    lifetime: u64,
    /// Seconds past expiry it may still answer when the upstream fails.
    stale_window: u64,
}

/// How an entry stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Expired, but may answer when the upstream fails.
    StaleUsable,
    Stale,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        status: u16,
        head: Box<[u8]>,
        body: Bytes,
        vary: Vec<VaryValue>,
        now: u64,
        age: u64,
        lifetime: u64,
        stale_window: u64,
    ) -> Self {
        Self {
            status,
            head,
            body,
            vary: vary.into_boxed_slice(),
            stored_at: now,
            age_at_store: age,
            lifetime,
            stale_window,
        }
    }

    /// Its current age in seconds (RFC 9111 §4.2.3, with the upstream's `Age` on arrival).
    pub fn age(&self, now: u64) -> u64 {
        self.age_at_store + now.saturating_sub(self.stored_at)
    }

    pub fn freshness(&self, now: u64) -> Freshness {
        let age = self.age(now);
        if age < self.lifetime {
            Freshness::Fresh
        } else if age < self.lifetime.saturating_add(self.stale_window) {
            Freshness::StaleUsable
        } else {
            Freshness::Stale
        }
    }

    /// The same response, validated again now by a 304 (`policy::revalidated`).
    pub fn refreshed(&self, now: u64, age: u64, lifetime: u64) -> Entry {
        Entry {
            status: self.status,
            head: self.head.clone(),
            body: self.body.clone(),
            vary: self.vary.clone(),
            stored_at: now,
            age_at_store: age,
            lifetime,
            stale_window: self.stale_window,
        }
    }

    /// Seconds it was fresh for when stored.
    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    /// The stored head's value of header `lower`, if any.
    pub fn header<'a>(&'a self, lower: &'a [u8]) -> Option<&'a [u8]> {
        crate::http::headers::raw_fields(&self.head, lower)
            .next()
            .map(<[u8]>::trim_ascii)
    }

    fn matches(&self, request: &[Header<'_>]) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| request_value(request, name.as_bytes()) == **value)
    }

    fn same_variant(&self, other: &Entry) -> bool {
        self.vary == other.vary
    }

    fn cost(&self, key: &[u8]) -> u64 {
        let vary: usize = self.vary.iter().map(|(n, v)| n.len() + v.len()).sum();
        (key.len() + self.head.len() + self.body.len() + vary) as u64 + ENTRY_OVERHEAD
    }
}

/// A request's value of a header a response varies on: every field line's value, trimmed and
/// joined with ", ", so that the same header sent on one line or on two compares equal.
pub fn request_value(request: &[Header<'_>], lower: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in header_values(request, lower) {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v.trim_ascii());
    }
    out
}

struct Slot {
    variants: Vec<Rc<Entry>>,
    bytes: u64,
}

/// Counters of one worker's cache, printed with the worker's statistics at exit.
#[derive(Default)]
pub struct Stats {
    pub hits: Cell<u64>,
    pub misses: Cell<u64>,
    /// Answered by an expired entry because the upstream failed.
    pub stale: Cell<u64>,
    /// Expired entries a 304 from the upstream made fresh again.
    pub revalidated: Cell<u64>,
    pub stores: Cell<u64>,
    pub evictions: Cell<u64>,
}

pub enum Lookup {
    Fresh(Rc<Entry>),
    /// Expired; kept to answer if the upstream fails (`StaleUsable`) or only to say EXPIRED.
    Expired(Rc<Entry>),
    Miss,
}

pub struct Cache {
    pub zone: CacheZone,
    map: LruCache<Box<[u8]>, Slot>,
    bytes: u64,
    pub stats: Stats,
    /// Keys being fetched now by a request that holds their lock (`lock.rs`).
    pub(super) pending: HashMap<Box<[u8]>, Rc<Pending>>,
    /// Where a request's key is built, reused so a lookup allocates nothing.
    pub key_buf: Vec<u8>,
}

impl Cache {
    pub fn new(zone: CacheZone) -> Self {
        Self {
            zone,
            map: LruCache::unbounded(),
            bytes: 0,
            stats: Stats::default(),
            pending: HashMap::new(),
            key_buf: Vec::new(),
        }
    }

    /// Bytes held now (entries, keys and bookkeeping).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry stored for `key` that fits this request's varying headers.
    pub fn lookup(&mut self, key: &[u8], request: &[Header<'_>], now: u64) -> Lookup {
        let Some(slot) = self.map.get(key) else {
            return Lookup::Miss;
        };
        match slot.variants.iter().rev().find(|e| e.matches(request)) {
            Some(e) if e.freshness(now) == Freshness::Fresh => Lookup::Fresh(e.clone()),
            Some(e) => Lookup::Expired(e.clone()),
            None => Lookup::Miss,
        }
    }

    /// Stores `entry` under `key`, replacing the variant it matches; evicts the least recently
    /// used keys until the budget holds again. Returns it as stored.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Rc<Entry> {
        let cost = entry.cost(key);
        let entry = Rc::new(entry);
        if cost > self.zone.max_size_per_worker {
            return entry;
        }
        let stored = entry.clone();
        if let Some(slot) = self.map.get_mut(key) {
            // The variant it replaces, else the oldest when the key holds all it may.
            let replaced = slot
                .variants
                .iter()
                .position(|e| e.same_variant(&entry))
                .or((slot.variants.len() >= MAX_VARIANTS).then_some(0));
            if let Some(i) = replaced {
                let freed = slot.variants.remove(i).cost(key);
                slot.bytes -= freed;
                self.bytes -= freed;
            }
            slot.variants.push(entry);
            slot.bytes += cost;
        } else {
            self.map.push(
                key.into(),
                Slot {
                    variants: vec![entry],
                    bytes: cost,
                },
            );
        }
        self.bytes += cost;
        bump(&self.stats.stores);
        while self.bytes > self.zone.max_size_per_worker {
            let Some((_, slot)) = self.map.pop_lru() else {
                break;
            };
            self.bytes -= slot.bytes;
            bump(&self.stats.evictions);
        }
        stored
    }

    /// Drops everything stored for `key`.
    pub fn remove(&mut self, key: &[u8]) {
        if let Some(slot) = self.map.pop(key) {
            self.bytes -= slot.bytes;
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: u64) -> Cache {
        Cache::new(crate::cache::test_zone(max))
    }

    fn entry(body: &str, vary: &[(&str, &str)], lifetime: u64, stale: u64) -> Entry {
        Entry::new(
            200,
            b"HTTP/1.1 200 OK\r\netag: \"x\"\r\ncontent-length: 1\r\n\r\n"[..].into(),
            Bytes::copy_from_slice(body.as_bytes()),
            vary.iter()
                .map(|(n, v)| (Box::from(*n), Box::from(v.as_bytes())))
                .collect(),
            100,
            0,
            lifetime,
            stale,
        )
    }

    fn body(l: Lookup) -> Option<String> {
        match l {
            Lookup::Fresh(e) => Some(String::from_utf8(e.body.to_vec()).unwrap()),
            _ => None,
        }
    }

    #[test]
    fn entries_age_from_fresh_to_stale() {
        let e = entry("a", &[], 10, 5);
        assert_eq!(e.freshness(109), Freshness::Fresh);
        assert_eq!(e.freshness(110), Freshness::StaleUsable);
        assert_eq!(e.freshness(115), Freshness::Stale);
        assert_eq!(e.age(112), 12);
        assert_eq!(e.header(b"etag"), Some(&b"\"x\""[..]));
        assert_eq!(e.header(b"age"), None);
    }

    #[test]
    fn variants_are_told_apart_by_the_headers_they_vary_on() {
        let mut c = cache(1 << 20);
        c.insert(b"k", entry("gzip", &[("accept-encoding", "gzip")], 10, 0));
        c.insert(b"k", entry("plain", &[("accept-encoding", "")], 10, 0));
        let gz = [Header {
            name: "Accept-Encoding",
            value: b" gzip ",
        }];
        assert_eq!(body(c.lookup(b"k", &gz, 100)).as_deref(), Some("gzip"));
        assert_eq!(body(c.lookup(b"k", &[], 100)).as_deref(), Some("plain"));
        let br = [Header {
            name: "accept-encoding",
            value: b"br",
        }];
        assert!(matches!(c.lookup(b"k", &br, 100), Lookup::Miss));
        // The same variant again replaces, not adds.
        c.insert(b"k", entry("gzip2", &[("accept-encoding", "gzip")], 10, 0));
        assert_eq!(body(c.lookup(b"k", &gz, 100)).as_deref(), Some("gzip2"));
        assert!(matches!(c.lookup(b"k", &gz, 111), Lookup::Expired(_)));
    }

    #[test]
    fn the_byte_budget_evicts_least_recently_used_keys() {
        let one = entry("x", &[], 10, 0).cost(b"k0");
        let mut c = cache(one * 3);
        for k in [b"k0", b"k1", b"k2"] {
            c.insert(k, entry("x", &[], 10, 0));
        }
        assert_eq!(c.len(), 3);
        assert!(
            body(c.lookup(b"k0", &[], 100)).is_some(),
            "k0 now most recent"
        );
        c.insert(b"k3", entry("x", &[], 10, 0));
        assert_eq!(c.len(), 3);
        assert!(matches!(c.lookup(b"k1", &[], 100), Lookup::Miss), "evicted");
        assert!(body(c.lookup(b"k0", &[], 100)).is_some());
        assert_eq!(c.stats.evictions.get(), 1);
        assert!(c.bytes() <= one * 3);
        c.remove(b"k0");
        assert!(matches!(c.lookup(b"k0", &[], 100), Lookup::Miss));
        assert_eq!(c.bytes(), one * 2);
    }
}
