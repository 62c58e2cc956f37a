//! JWT bearer tokens with the `jsonwebtoken` crate (ring backend): HS256/384/512 with a shared
//! secret, RS*/PS* and ES256/384 with PEM keys or a JWKS file (matched by `kid`). `exp`, `nbf`,
//! `iss` and `aud` are checked with a clock-skew allowance; extra required claims and scopes are
//! checked here. Decoding keys and validation settings are built once per core, not per request.

use super::{authorization, Failure, Identity};
use crate::config::{JwtAuth, JwtKey};
use httparse::Header;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::rc::Rc;

pub const INSUFFICIENT_SCOPE: &str = "insufficient scope";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(a: Algorithm) -> Family {
    use Algorithm::*;
    match a {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Ed,
    }
}

struct Key {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

pub struct Jwt {
    keys: Vec<Key>,
    /// One validation per key family: the crate insists every listed algorithm fits the key.
    validations: Vec<(Family, Validation)>,
    required_claims: Vec<String>,
    required_scopes: Vec<String>,
    consumer_claim: String,
    pub claims_to_headers: Vec<(String, String)>,
}

const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "aud", "iss", "sub"];

impl Jwt {
    pub fn new(j: &JwtAuth) -> Self {
        let mut keys = Vec::new();
        for k in &j.keys {
            // Every key was decoded once at config load; one failing now would be a crate bug,
            // and skipping it only makes tokens signed with it fail.
            let key = match k {
                JwtKey::Secret(s) => Some((None, Family::Hmac, DecodingKey::from_secret(s))),
                JwtKey::RsaPem(p) => DecodingKey::from_rsa_pem(p)
                    .ok()
                    .map(|d| (None, Family::Rsa, d)),
                JwtKey::EcPem(p) => DecodingKey::from_ec_pem(p)
                    .ok()
                    .map(|d| (None, Family::Ec, d)),
                JwtKey::Jwk(jwk) => {
                    let fam = match &jwk.algorithm {
                        AlgorithmParameters::RSA(_) => Family::Rsa,
                        AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                        AlgorithmParameters::OctetKey(_) => Family::Hmac,
                        AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                    };
                    DecodingKey::from_jwk(jwk)
                        .ok()
                        .map(|d| (jwk.common.key_id.clone(), fam, d))
                }
            };
            if let Some((kid, family, key)) = key {
                keys.push(Key { kid, family, key });
            }
        }
        let spec: Vec<&str> = j
            .required_claims
            .iter()
            .map(String::as_str)
            .filter(|c| SPEC_CLAIMS.contains(c))
            .collect();
        let mut validations = Vec::new();
        for fam in [Family::Hmac, Family::Rsa, Family::Ec, Family::Ed] {
            let algs: Vec<Algorithm> = j
                .algorithms
                .iter()
                .copied()
                .filter(|a| family(*a) == fam)
                .collect();
            let Some(first) = algs.first() else { continue };
            let mut v = Validation::new(*first);
            v.algorithms = algs;
            v.leeway = j.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            v.set_required_spec_claims(&spec);
            if j.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&j.audiences);
            }
            if !j.issuers.is_empty() {
                v.set_issuer(&j.issuers);
            }
            validations.push((fam, v));
        }
        Self {
            keys,
            validations,
            required_claims: j
                .required_claims
                .iter()
                .filter(|c| !SPEC_CLAIMS.contains(&c.as_str()))
                .cloned()
                .collect(),
            required_scopes: j.required_scopes.clone(),
            consumer_claim: j.consumer_claim.clone(),
            claims_to_headers: j.claims_to_headers.clone(),
        }
    }

    pub fn authenticate(&self, headers: &[Header<'_>]) -> Result<Identity, Failure> {
        let Some(token) = authorization(headers, "bearer") else {
            return Err(Failure::Missing);
        };
        let token = std::str::from_utf8(token).map_err(|_| Failure::Invalid("malformed token"))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Failure::Invalid("malformed token"))?;
        let fam = family(header.alg);
        let Some((_, validation)) = self
            .validations
            .iter()
            .find(|(f, v)| *f == fam && v.algorithms.contains(&header.alg))
        else {
            return Err(Failure::Invalid("algorithm not accepted"));
        };
        let mut last = Failure::Invalid("no key for this token");
        for k in self.keys.iter().filter(|k| {
            k.family == fam
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        }) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, validation) {
                Ok(data) => return self.admit(data.claims),
                Err(e) => {
                    last = Failure::Invalid(reason(e.kind()));
                    // Only a bad signature can be cured by another key.
                    if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// Checks past the signature and the registered claims: required claims and scopes.
    fn admit(&self, claims: Map<String, Value>) -> Result<Identity, Failure> {
        if self.required_claims.iter().any(|c| !claims.contains_key(c)) {
            return Err(Failure::Invalid("required claim missing"));
        }
        if !has_scopes(&claims, &self.required_scopes) {
            return Err(Failure::Forbidden(INSUFFICIENT_SCOPE));
        }
        let consumer: Rc<str> = match claims.get(&self.consumer_claim) {
            Some(Value::String(s)) => Rc::from(s.as_str()),
            Some(Value::Number(n)) => Rc::from(n.to_string().as_str()),
            _ => Rc::from(""),
        };
        Ok(Identity {
            consumer,
            claims: Some(Box::new(claims)),
        })
    }
}

fn reason(k: &ErrorKind) -> &'static str {
    match k {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "required claim missing",
        ErrorKind::InvalidAlgorithm => "algorithm not accepted",
        _ => "malformed token",
    }
}

/// Whether the token grants every scope in `want` (`scope` as a space-separated string, or
/// `scp` as a list, as issuers differ).
pub fn has_scopes(claims: &Map<String, Value>, want: &[String]) -> bool {
    if want.is_empty() {
        return true;
    }
    let mut granted: Vec<&str> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => granted.extend(s.split(' ')),
            Some(Value::Array(a)) => granted.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    want.iter().all(|w| granted.contains(&w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey};
    use serde_json::json;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn policy() -> Jwt {
        Jwt::new(&JwtAuth {
            algorithms: vec![Algorithm::HS256],
            keys: vec![JwtKey::Secret(SECRET.to_vec())],
            issuers: vec!["https://issuer".into()],
            audiences: vec!["api".into()],
            leeway: Duration::from_secs(30),
            required_claims: vec!["exp".into()],
            required_scopes: vec!["orders:read".into()],
            consumer_claim: "sub".into(),
            claims_to_headers: vec![],
        })
    }

    fn check(j: &Jwt, claims: Value) -> Result<Identity, Failure> {
        let t = encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let v = format!("Bearer {t}").into_bytes();
        j.authenticate(&[Header {
            name: "Authorization",
            value: &v,
        }])
    }

    fn base() -> Value {
        json!({"sub": "alice", "iss": "https://issuer", "aud": "api", "exp": now() + 60,
               "scope": "orders:read profile"})
    }

    #[test]
    fn claim_checks() {
        let j = policy();
        assert_eq!(&*check(&j, base()).unwrap().consumer, "alice");
        let mut c = base();
        c["exp"] = json!(now() - 120);
        assert_eq!(check(&j, c).err(), Some(Failure::Invalid("token expired")));
        // Within the 30 s leeway an expired token still passes.
        let mut c = base();
        c["exp"] = json!(now() - 10);
        assert!(check(&j, c).is_ok());
        let mut c = base();
        c["nbf"] = json!(now() + 120);
        assert_eq!(
            check(&j, c).err(),
            Some(Failure::Invalid("token not yet valid"))
        );
        let mut c = base();
        c["iss"] = json!("https://evil");
        assert_eq!(check(&j, c).err(), Some(Failure::Invalid("wrong issuer")));
        let mut c = base();
        c["aud"] = json!("other");
        assert_eq!(check(&j, c).err(), Some(Failure::Invalid("wrong audience")));
        let mut c = base();
        c.as_object_mut().unwrap().remove("exp");
        assert!(matches!(check(&j, c), Err(Failure::Invalid(_))));
        let mut c = base();
        c["scope"] = json!("profile");
        assert_eq!(
            check(&j, c).err(),
            Some(Failure::Forbidden(INSUFFICIENT_SCOPE))
        );
    }

    #[test]
    fn tampered_and_missing() {
        let j = policy();
        let t = encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &base(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut c = base();
        c["sub"] = json!("mallory");
        use base64::Engine;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
        let v = format!("Bearer {}", parts.join(".")).into_bytes();
        let r = j.authenticate(&[Header {
            name: "authorization",
            value: &v,
        }]);
        assert_eq!(r.err(), Some(Failure::Invalid("bad signature")));
        assert_eq!(j.authenticate(&[]).err(), Some(Failure::Missing));
        let v = b"Bearer not.a.token".to_vec();
        assert!(matches!(
            j.authenticate(&[Header {
                name: "authorization",
                value: &v
            }]),
            Err(Failure::Invalid(_))
        ));
    }

    #[test]
    fn scopes() {
        let c = json!({"scp": ["a", "b"]});
        let m = c.as_object().unwrap();
        assert!(has_scopes(m, &["a".into()]));
        assert!(!has_scopes(m, &["c".into()]));
    }
}
