//! HTTP Basic against bcrypt hashes. bcrypt is slow on purpose (milliseconds per check), and a
//! worker thread must not pay that on every request of a keep-alive client, so a successful
//! check is remembered per core for a minute, keyed by the exact header value. Failed checks are
//! never cached, so a flood of wrong guesses would stall the worker: each worker runs at most
//! `VERIFY_PER_SECOND` bcrypt checks a second and answers 503 with Retry-After past that.

use super::{authorization, Failure, Identity};
use crate::config::BasicAuth;
use base64::Engine;
use httparse::Header;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 1024;
/// bcrypt checks a worker may run per second (at cost 10, tens of ms each: this bounds the
/// share of a core that password guessing can take).
const VERIFY_PER_SECOND: u32 = 8;

/// Verified `Authorization` values: the user and when the check was made.
type VerifiedCache = RefCell<HashMap<Box<[u8]>, (Rc<str>, Instant)>>;

pub struct Basic {
    pub realm: String,
    users: HashMap<String, (Rc<str>, String)>,
    verified: VerifiedCache,
    /// Start of the current one-second window and the checks run in it.
    budget: Cell<(Instant, u32)>,
}

impl Basic {
    pub fn new(b: &BasicAuth) -> Self {
        Self {
            realm: b.realm.clone(),
            users: b
                .users
                .iter()
                .map(|(n, h)| (n.clone(), (Rc::from(n.as_str()), h.clone())))
                .collect(),
            verified: RefCell::new(HashMap::new()),
            budget: Cell::new((Instant::now(), 0)),
        }
    }

    /// Takes one bcrypt check from this second's budget.
    fn take_check(&self, now: Instant) -> bool {
        let (start, used) = self.budget.get();
        if now.duration_since(start) >= Duration::from_secs(1) {
            self.budget.set((now, 1));
            return true;
        }
        if used >= VERIFY_PER_SECOND {
            return false;
        }
        self.budget.set((start, used + 1));
        true
    }

    pub fn authenticate(&self, headers: &[Header<'_>]) -> Result<Identity, Failure> {
        let Some(cred) = authorization(headers, "basic") else {
            return Err(Failure::Missing);
        };
        let now = Instant::now();
        if let Some((user, at)) = self.verified.borrow().get(cred) {
            if now.duration_since(*at) < CACHE_TTL {
                return Ok(Identity {
                    consumer: user.clone(),
                    claims: None,
                });
            }
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(cred)
            .map_err(|_| Failure::Invalid("malformed Basic credential"))?;
        let text = std::str::from_utf8(&decoded)
            .map_err(|_| Failure::Invalid("malformed Basic credential"))?;
        let (name, password) = text
            .split_once(':')
            .ok_or(Failure::Invalid("malformed Basic credential"))?;
        if !self.take_check(now) {
            return Err(Failure::Busy);
        }
        let Some((user, hash)) = self.users.get(name) else {
            // Spend the same time as for a known user so timing does not reveal user names.
            let _ = bcrypt::verify(password, DUMMY_HASH);
            return Err(Failure::Invalid("wrong user or password"));
        };
        match bcrypt::verify(password, hash) {
            Ok(true) => {
                let mut cache = self.verified.borrow_mut();
                if cache.len() >= CACHE_MAX {
                    cache.retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(cred.into(), (user.clone(), now));
                Ok(Identity {
                    consumer: user.clone(),
                    claims: None,
                })
            }
            _ => Err(Failure::Invalid("wrong user or password")),
        }
    }

    pub fn write_challenge(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"www-authenticate: Basic realm=\"");
        out.extend_from_slice(self.realm.as_bytes());
        out.extend_from_slice(b"\", charset=\"UTF-8\"\r\n");
    }
}

/// bcrypt of a random string at cost 10, only ever compared against for unknown users.
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(v: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
        .into_bytes()
    }

    #[test]
    fn verify_and_cache() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let b = Basic::new(&BasicAuth {
            realm: "r".into(),
            users: vec![("alice".into(), hash)],
        });
        let good = hdr("alice:s3cret");
        let h = [Header {
            name: "Authorization",
            value: &good,
        }];
        assert_eq!(&*b.authenticate(&h).unwrap().consumer, "alice");
        assert_eq!(b.verified.borrow().len(), 1);
        assert_eq!(&*b.authenticate(&h).unwrap().consumer, "alice");
        let bad = hdr("alice:wrong");
        let h = [Header {
            name: "authorization",
            value: &bad,
        }];
        assert!(matches!(b.authenticate(&h), Err(Failure::Invalid(_))));
        assert_eq!(b.authenticate(&[]).err(), Some(Failure::Missing));
    }

    #[test]
    fn guessing_is_bounded_per_second_but_cached_logins_pass() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let b = Basic::new(&BasicAuth {
            realm: "r".into(),
            users: vec![("alice".into(), hash)],
        });
        let good = hdr("alice:s3cret");
        let ok = [Header {
            name: "authorization",
            value: &good,
        }];
        assert!(b.authenticate(&ok).is_ok());
        let mut busy = 0;
        for i in 0..(VERIFY_PER_SECOND * 2) {
            let guess = hdr(&format!("alice:guess{i}"));
            let h = [Header {
                name: "authorization",
                value: &guess,
            }];
            if b.authenticate(&h).err() == Some(Failure::Busy) {
                busy += 1;
            }
        }
        // One check went to the good login: the budget leaves VERIFY_PER_SECOND - 1 guesses.
        assert!(busy > VERIFY_PER_SECOND, "{busy}");
        // A login already verified does not need a check and still passes.
        assert!(b.authenticate(&ok).is_ok());
    }
}
