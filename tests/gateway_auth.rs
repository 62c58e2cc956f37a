//! Authentication through the real binary: API keys (header and query), Basic with bcrypt
//! hashes, JWT with HS256, ES256 from a JWKS file and RS256 from a PEM key. Each accepts the
//! right credential and rejects missing, wrong, expired and tampered ones with 401 and a
//! challenge (or 403 when the credential is valid but not admitted), and the upstream never
//! sees the credential unless the route says so.

mod gateway_common;

use base64::Engine;
use gateway_common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "a-very-secret-hmac-key-0123456789";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn good_claims() -> Value {
    json!({"sub": "alice", "iss": "https://id.test", "aud": "orders-api",
           "exp": now() + 300, "scope": "orders:read", "tenant": "t-1"})
}

#[test]
fn api_key_header_and_query() {
    let up = Upstream::echo("svc");
    let rw = Ringway::start(
        &format!(
            r#"{}
[auth.partners]
type = "api_key"
header = "x-api-key"
query = "apikey"
keys = [{{ name = "acme", key = "key-acme-0001" }}]
keys_file = "keys.txt"

[[route]]
match = {{ path_prefix = "/strip" }}
strip_prefix = true
auth = "partners"
upstream = "svc"

[[route]]
match = {{ path_prefix = "/only-acme/" }}
auth = {{ policy = "partners", consumers = ["acme"] }}
upstream = "svc"

[[route]]
auth = "partners"
upstream = "svc"
"#,
            upstream_cfg("svc", &up)
        ),
        &[("keys.txt", "# consumer:key\nbeta:key-beta-0002\n")],
    );
    let a = rw.addr;

    let r = get(
        a,
        "/v1/items",
        &["X-Api-Key: key-acme-0001", "X-Consumer: spoofed"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = up.last();
    assert_eq!(
        s.all("x-consumer"),
        ["acme"],
        "consumer named, client's copy dropped"
    );
    assert_eq!(
        s.header("x-api-key"),
        None,
        "credential must not be forwarded"
    );

    // From the keys file, and from the query string (removed before forwarding).
    let r = get(a, "/v1/items?x=1&apikey=key-beta-0002&y=2", &[]);
    assert_eq!(r.status, 200);
    let s = up.last();
    assert_eq!(s.target, "/v1/items?x=1&y=2");
    assert_eq!(s.header("x-consumer"), Some("beta"));

    // Credential removal and strip_prefix together.
    assert_eq!(
        get(a, "/strip/items?api_key=x&apikey=key-beta-0002&z=1", &[]).status,
        200
    );
    assert_eq!(up.last().target, "/items?api_key=x&z=1");

    let seen_before = up.seen().len();
    let r = get(a, "/v1/items", &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("ApiKey"));
    let r = get(a, "/v1/items", &["X-Api-Key: key-acme-0009"]);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    let r = get(a, "/v1/items?apikey=nope", &[]);
    assert_eq!(r.status, 401);

    // A valid key this route does not admit.
    let r = get(a, "/only-acme/x", &["X-Api-Key: key-beta-0002"]);
    assert_eq!(r.status, 403);
    let r = get(a, "/only-acme/x", &["X-Api-Key: key-acme-0001"]);
    assert_eq!(r.status, 200);
    assert_eq!(
        up.seen().len(),
        seen_before + 1,
        "rejected requests never reach the upstream"
    );
}

#[test]
fn basic_with_bcrypt() {
    let up = Upstream::echo("svc");
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    let rw = Ringway::start(
        &format!(
            r#"{}
[auth.staff]
type = "basic"
realm = "staff area"
users = [{{ name = "alice", password_hash = "{hash}" }}]

[[route]]
match = {{ path_prefix = "/fwd/" }}
auth = {{ policy = "staff", forward_credential = true }}
upstream = "svc"

[[route]]
auth = "staff"
upstream = "svc"
"#,
            upstream_cfg("svc", &up)
        ),
        &[],
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let good = format!("Authorization: Basic {}", b64("alice:correct horse"));
    let r = get(rw.addr, "/", &[&good]);
    assert_eq!(r.status, 200);
    let s = up.last();
    assert_eq!(s.header("authorization"), None);
    assert_eq!(s.header("x-consumer"), Some("alice"));
    // Served again from the per-core cache of verified credentials.
    assert_eq!(get(rw.addr, "/", &[&good]).status, 200);

    for bad in [
        format!("Authorization: Basic {}", b64("alice:wrong")),
        format!("Authorization: Basic {}", b64("mallory:correct horse")),
        "Authorization: Basic !!!not-base64".to_string(),
        format!("Authorization: Bearer {}", b64("alice:correct horse")),
    ] {
        let r = get(rw.addr, "/", &[&bad]);
        assert_eq!(r.status, 401, "{bad}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"staff area\", charset=\"UTF-8\"")
        );
    }
    assert_eq!(get(rw.addr, "/", &[]).status, 401);

    // The route that forwards the credential on purpose.
    assert_eq!(get(rw.addr, "/fwd/x", &[&good]).status, 200);
    assert!(up.last().header("authorization").is_some());
}

#[test]
fn jwt_hs256_claims() {
    let up = Upstream::echo("svc");
    let rw = Ringway::start(
        &format!(
            r#"{}
[auth.users]
type = "jwt"
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "https://id.test"
audience = "orders-api"
leeway = "30s"
required_scopes = ["orders:read"]
claims_to_headers = {{ sub = "x-user-id", tenant = "x-tenant" }}

[[route]]
auth = "users"
upstream = "svc"
request_headers = {{ set = {{ "x-caller" = "${{claim.sub}}@${{claim.tenant}}" }} }}
"#,
            upstream_cfg("svc", &up)
        ),
        &[],
    );
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    let r = get(
        rw.addr,
        "/orders",
        &[&bearer(&hs256(&good_claims())), "X-User-Id: evil"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = up.last();
    assert_eq!(s.all("x-user-id"), ["alice"]);
    assert_eq!(s.header("x-tenant"), Some("t-1"));
    assert_eq!(s.header("x-caller"), Some("alice@t-1"));
    assert_eq!(s.header("authorization"), None);

    let r = get(rw.addr, "/orders", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"ringway\"")
    );

    let mut expired = good_claims();
    expired["exp"] = json!(now() - 3600);
    let r = get(rw.addr, "/orders", &[&bearer(&hs256(&expired))]);
    assert_eq!(r.status, 401);
    let wa = r.header("www-authenticate").unwrap();
    assert!(
        wa.contains("invalid_token") && wa.contains("expired"),
        "{wa}"
    );

    // Tampered: payload changed, signature kept.
    let t = hs256(&good_claims());
    let mut parts: Vec<&str> = t.split('.').collect();
    let mut evil = good_claims();
    evil["sub"] = json!("admin");
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(evil.to_string());
    parts[1] = &forged;
    let r = get(rw.addr, "/orders", &[&bearer(&parts.join("."))]);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("bad signature"));

    // Signed with another secret; "none" algorithm; garbage.
    let other = encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(b"another-secret-entirely-000000"),
    )
    .unwrap();
    assert_eq!(get(rw.addr, "/orders", &[&bearer(&other)]).status, 401);
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    assert_eq!(get(rw.addr, "/orders", &[&bearer(&none)]).status, 401);
    assert_eq!(get(rw.addr, "/orders", &[&bearer("garbage")]).status, 401);

    let mut aud = good_claims();
    aud["aud"] = json!("billing-api");
    assert_eq!(
        get(rw.addr, "/orders", &[&bearer(&hs256(&aud))]).status,
        401
    );
    let mut iss = good_claims();
    iss["iss"] = json!("https://evil.test");
    assert_eq!(
        get(rw.addr, "/orders", &[&bearer(&hs256(&iss))]).status,
        401
    );
    let mut nbf = good_claims();
    nbf["nbf"] = json!(now() + 3600);
    assert_eq!(
        get(rw.addr, "/orders", &[&bearer(&hs256(&nbf))]).status,
        401
    );

    // Valid token without the scope: authenticated but not allowed.
    let mut scope = good_claims();
    scope["scope"] = json!("profile");
    let r = get(rw.addr, "/orders", &[&bearer(&hs256(&scope))]);
    assert_eq!(r.status, 403);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
}

#[test]
fn jwt_es256_from_jwks() {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = SystemRandom::new();
    let key = |rng: &SystemRandom| {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng)
            .unwrap();
        let public = pair.public_key().as_ref().to_vec();
        (pkcs8.as_ref().to_vec(), public)
    };
    let (priv1, pub1) = key(&rng);
    let (priv2, _) = key(&rng);
    let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                                "x": b64u(&pub1[1..33]), "y": b64u(&pub1[33..65])}]});
    let up = Upstream::echo("svc");
    let rw = Ringway::start(
        &format!(
            r#"{}
[auth.idp]
type = "jwt"
algorithms = ["ES256"]
jwks_file = "jwks.json"

[[route]]
auth = "idp"
upstream = "svc"
"#,
            upstream_cfg("svc", &up)
        ),
        &[("jwks.json", &jwks.to_string())],
    );
    let sign = |der: &[u8], kid: &str| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_string());
        encode(
            &h,
            &json!({"sub": "svc-a", "exp": now() + 300}),
            &EncodingKey::from_ec_der(der),
        )
        .unwrap()
    };
    let r = get(
        rw.addr,
        "/",
        &[&format!("Authorization: Bearer {}", sign(&priv1, "k1"))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().header("x-consumer"), Some("svc-a"));
    // Right kid, wrong key; unknown kid.
    let r = get(
        rw.addr,
        "/",
        &[&format!("Authorization: Bearer {}", sign(&priv2, "k1"))],
    );
    assert_eq!(r.status, 401);
    let r = get(
        rw.addr,
        "/",
        &[&format!("Authorization: Bearer {}", sign(&priv1, "k9"))],
    );
    assert_eq!(r.status, 401);
    // An HS256 token is refused by an ES256-only policy (no algorithm confusion).
    let r = get(
        rw.addr,
        "/",
        &[&format!("Authorization: Bearer {}", hs256(&good_claims()))],
    );
    assert_eq!(r.status, 401);
}

#[test]
fn jwt_rs256_from_pem() {
    let dir = TempDir::new();
    let key = dir.0.join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping RS256: the openssl command is not available to make a key");
        return;
    }
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success());
    let private = std::fs::read(&key).unwrap();
    let up = Upstream::echo("svc");
    let rw = Ringway::start(
        &format!(
            r#"{}
[auth.rsa]
type = "jwt"
algorithms = ["RS256"]
public_key_file = "pub.pem"

[[route]]
auth = "rsa"
upstream = "svc"
"#,
            upstream_cfg("svc", &up)
        ),
        &[("pub.pem", &String::from_utf8(public.stdout).unwrap())],
    );
    let t = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "bob", "exp": now() + 60}),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        get(rw.addr, "/", &[&format!("Authorization: Bearer {t}")]).status,
        200
    );
    let expired = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "bob", "exp": now() - 600}),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        get(rw.addr, "/", &[&format!("Authorization: Bearer {expired}")]).status,
        401
    );
}

#[test]
fn example_gateway_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml");
    let (ok, output) = gateway_common::check_file(std::path::Path::new(path));
    assert!(ok, "{output}");
}

#[test]
fn bad_gateway_config_names_file_key_reason() {
    let cases = [
        (
            "[[route]]\nauth = \"nobody\"\nrespond = {}\n",
            "route[0].auth",
            "unknown auth policy",
        ),
        (
            "[auth.a]\ntype = \"basic\"\nusers = [{ name = \"u\", password_hash = \"plain\" }]\n[[route]]\nrespond = {}\n",
            "auth.a.users",
            "bcrypt",
        ),
        (
            "[auth.a]\ntype = \"api_key\"\nsecret = \"0123456789abcdef0\"\nkeys = [{ name = \"n\", key = \"12345678\" }]\n[[route]]\nrespond = {}\n",
            "auth.a.secret",
            "jwt",
        ),
        (
            "[[route]]\nrate_limit = { rate = 10, key = \"consumer\" }\nrespond = {}\n",
            "route[0].rate_limit.key",
            "needs `auth`",
        ),
        (
            "[[route]]\nrequest_headers = { set = { \"x-a\" = \"${nope}\" } }\nrespond = {}\n",
            "route[0].request_headers.set.x-a",
            "unknown variable",
        ),
        (
            "[auth.j]\ntype = \"jwt\"\njwks_file = \"missing.json\"\n[[route]]\nrespond = {}\n",
            "auth.j.jwks_file",
            "cannot read",
        ),
    ];
    for (body, key, reason) in cases {
        let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{body}");
        let (ok, out) = check(&text);
        assert!(!ok, "{body} was accepted");
        assert!(out.contains(&format!("c.toml: {key}: ")), "{out}");
        assert!(out.contains(reason), "{out}");
    }
}
