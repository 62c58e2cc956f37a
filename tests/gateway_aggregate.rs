//! Response aggregation through the real binary: one client request fans out to three
//! upstreams concurrently, the answers are merged into one JSON object, a slow part is reported
//! as timed out (or fails the whole response when it is required), and an upstream error is
//! reported per part.

mod gateway_common;

use gateway_common::*;
use serde_json::Value;
use std::time::Duration;

fn json_upstream(body: &'static str) -> Upstream {
    Upstream::start(move |_| {
        let mut r = Reply::ok(body);
        r.headers
            .push(("content-type".into(), "application/json".into()));
        r
    })
}

fn slow_upstream() -> Upstream {
    Upstream::start(|_| Reply {
        status: 200,
        headers: vec![],
        body: b"{\"late\":true}".to_vec(),
        // Far longer than the part's 300 ms deadline.
        delay: Duration::from_secs(10),
    })
}

fn config(users: &Upstream, orders: &Upstream, recs: &Upstream, failing: &Upstream) -> String {
    format!(
        r#"{}{}{}{}
[auth.keys]
type = "api_key"
keys = [{{ name = "acme", key = "key-acme-0001" }}]

[[route]]
name = "dashboard"
match = {{ path_pattern = "/dashboard/{{id}}" }}
auth = "keys"
aggregate = [
  {{ name = "user", upstream = "users", path = "/users/${{param.id}}", timeout = "2s" }},
  {{ name = "orders", upstream = "orders", path = "/orders?user=${{param.id}}&limit=${{query.limit}}", timeout = "2s" }},
  {{ name = "recommendations", upstream = "recs", path = "/recs/${{param.id}}", timeout = "300ms" }},
]

[[route]]
name = "strict"
match = {{ path_pattern = "/strict/{{id}}" }}
aggregate = [
  {{ name = "user", upstream = "users", path = "/users/${{param.id}}" }},
  {{ name = "recommendations", upstream = "recs", path = "/recs/${{param.id}}", timeout = "300ms", required = true }},
]

[[route]]
name = "partial"
match = {{ path = "/partial" }}
aggregate = [
  {{ name = "user", upstream = "users", path = "/users/1" }},
  {{ name = "broken", upstream = "failing", path = "/x" }},
  {{ name = "text", upstream = "orders", path = "/plain", max_size = 4 }},
]
"#,
        upstream_cfg("users", users),
        upstream_cfg("orders", orders),
        upstream_cfg("recs", recs),
        upstream_cfg("failing", failing),
    )
}

#[test]
fn merges_three_and_reports_the_slow_one() {
    let users = json_upstream(r#"{"id": 7, "name": "Ada"}"#);
    let orders = json_upstream(r#"[{"id": 1}, {"id": 2}]"#);
    let recs = slow_upstream();
    let failing = Upstream::start(|_| Reply {
        status: 500,
        headers: vec![],
        body: b"boom".to_vec(),
        delay: Duration::ZERO,
    });
    let rw = Ringway::start(&config(&users, &orders, &recs, &failing), &[]);

    let r = get(
        rw.addr,
        "/dashboard/7?limit=5",
        &["X-Api-Key: key-acme-0001"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["user"]["name"], "Ada");
    assert_eq!(v["orders"][1]["id"], 2);
    assert_eq!(v["recommendations"], Value::Null);
    assert_eq!(v["errors"]["recommendations"]["error"], "timeout");
    assert!(v["errors"].get("user").is_none());

    // Each part saw its own rendered path, and the consumer.
    let u = users.last();
    assert_eq!(u.target, "/users/7");
    assert_eq!(u.header("x-consumer"), Some("acme"));
    // And the client's address, as a forwarded request would.
    assert_eq!(u.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(orders.last().target, "/orders?user=7&limit=5");
    // All three went out even though one never answered in time.
    recs.wait_for(1);
    assert_eq!(recs.last().target, "/recs/7");
    // The id that the parts got is one and the same.
    assert_eq!(
        u.header("x-request-id"),
        orders.last().header("x-request-id")
    );

    // The filters run before the fan-out.
    assert_eq!(get(rw.addr, "/dashboard/7", &[]).status, 401);

    // A required part that times out fails the whole response.
    let r = get(rw.addr, "/strict/7", &[]);
    assert_eq!(r.status, 504);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["part"], "recommendations");
}

#[test]
fn upstream_errors_and_size_bounds_are_per_part() {
    let users = json_upstream(r#"{"id": 1}"#);
    let orders = Upstream::start(|_| Reply::ok("more than four bytes"));
    let recs = slow_upstream();
    let failing = Upstream::start(|_| Reply {
        status: 500,
        headers: vec![],
        body: b"boom".to_vec(),
        delay: Duration::ZERO,
    });
    let rw = Ringway::start(&config(&users, &orders, &recs, &failing), &[]);
    let r = get(rw.addr, "/partial", &[]);
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["user"]["id"], 1);
    assert_eq!(v["errors"]["broken"]["status"], 500);
    assert_eq!(v["errors"]["text"]["error"], "part response too large");
    // Keep-alive pooled connections are reused by the next aggregation.
    let r = get(rw.addr, "/partial", &[]);
    assert_eq!(r.status, 200);
}
