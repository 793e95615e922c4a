//! `aggregate`: one client call, three real services (users, orders,
//! notifications), one JSON answer.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "mobile-app-key-0123456789";

/// A JSON answer after `delay`.
async fn answer(
    status: u16,
    body: Value,
    delay: Duration,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    tokio::time::sleep(delay).await;
    Ok(http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

/// What a service saw of a request: path and query, and the headers the
/// tests look for.
fn seen(request: &http::Request<hyper::body::Incoming>) -> Value {
    let header = |name: &str| request.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    json!({
        "uri": request.uri().to_string(),
        "authorization": header("authorization"),
        "request_id": header("x-request-id"),
        "x_consumer": header("x-consumer"),
        "x_tag": header("x-tag"),
        "x_request": header("x-request"),
        "x_client": header("x-client"),
        "traceparent": header("traceparent"),
    })
}

/// The users service: `/users/{id}`, 500 ms; `/users/missing` is a 404,
/// `/users/html` answers HTML, `/users/huge` 2 MiB of JSON.
async fn users() -> std::net::SocketAddr {
    serve(|request: http::Request<hyper::body::Incoming>| {
        let id = request.uri().path().trim_start_matches("/users/").to_string();
        let seen = seen(&request);
        async move {
            match id.as_str() {
                "missing" => answer(404, json!({"error": "no such user"}), Duration::ZERO).await,
                "html" => Ok(http::Response::builder()
                    .header("content-type", "text/html")
                    .body(Full::new(Bytes::from_static(b"<html>oops</html>")))
                    .unwrap()),
                "huge" => answer(200, json!({"blob": "x".repeat(2 << 20)}), Duration::ZERO).await,
                "slow" => answer(200, json!({"id": id}), Duration::from_secs(3)).await,
                _ => {
                    let user = json!({"id": id, "name": "Ada", "account_id": format!("acc {id}/x"), "password": "hunter2", "seen": seen});
                    answer(200, user, Duration::from_millis(500)).await
                }
            }
        }
    })
    .await
}

/// The orders service: `/orders?account=…`, 500 ms; echoes what it saw.
async fn orders() -> std::net::SocketAddr {
    serve(|request: http::Request<hyper::body::Incoming>| {
        let seen = seen(&request);
        async move {
            let orders = json!([
                {"id": 1, "status": "open", "total": 10, "seen": seen},
                {"id": 2, "status": "shipped", "total": 20, "seen": seen},
                {"id": 3, "status": "open", "total": 5, "seen": seen},
            ]);
            answer(200, orders, Duration::from_millis(500)).await
        }
    })
    .await
}

/// The notifications service: `/notifications/{id}`, 900 ms; `/slow/…`
/// takes 3 s, `/fail/…` answers 500.
async fn notifications() -> std::net::SocketAddr {
    serve(|request: http::Request<hyper::body::Incoming>| {
        let path = request.uri().path().to_string();
        let seen = seen(&request);
        async move {
            if path.starts_with("/slow/") {
                answer(200, json!({"unread": 1}), Duration::from_secs(3)).await
            } else if path.starts_with("/fail/") {
                answer(500, json!({"error": "down"}), Duration::ZERO).await
            } else {
                answer(200, json!({"unread": 3, "seen": seen}), Duration::from_millis(900)).await
            }
        }
    })
    .await
}

async fn gateway() -> Gateway {
    let (u, o, n) = (users().await, orders().await, notifications().await);
    Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
consumers:
  - { name: mobile, credentials: { api_keys: [ "$KEY" ] } }
upstreams:
  users: { targets: [ "$U" ] }
  orders: { targets: [ "$O" ] }
  notifications: { targets: [ "$N" ] }
routes:
  - name: profile
    match: { path: "/profile/{user_id}", methods: [GET] }
    aggregate:
      calls:
        user: { upstream: users, path: "/users/{user_id}", select: [id, name, account_id] }
        orders: { upstream: orders, path: "/orders?account={user.account_id}&tag=${query.tag}", as: recent_orders, select: [id, status] }
        notifications: { upstream: notifications, path: "/notifications/{user_id}", optional: true, timeout: 2s }
      timeout: 3s
  - name: dashboard
    match: { path: "/dashboard/{user_id}", methods: [GET] }
    plugins: { key_auth: {} }
    aggregate:
      merge: true
      calls:
        user: { upstream: users, path: "/users/{user_id}", select: [name, seen], headers: { x-consumer: "${consumer.name}", x-tag: "${query.tag}", x-request: "${request_id}", x-client: "${header.x-client}" } }
        orders: { upstream: orders, path: "/orders", group_by: status, select: [id, status] }
        history: { upstream: orders, path: "/orders", select: [id] }
        notifications: { upstream: notifications, path: "/fail/{user_id}", optional: true }
      partial: { header: X-Missing, field: missing }
  - name: slow
    match: { path: "/slow/{user_id}" }
    aggregate:
      calls:
        user: { upstream: users, path: "/users/{user_id}" }
        notifications: { upstream: notifications, path: "/slow/{user_id}", optional: true }
      timeout: 1s
"#,
        &[("U", u.to_string()), ("O", o.to_string()), ("N", n.to_string()), ("KEY", KEY.to_string())],
    ))
    .await
}

#[tokio::test]
async fn calls_run_in_parallel_after_what_they_need_and_compose_one_answer() {
    let gw = gateway().await;
    let started = Instant::now();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get_with(
        &gw.url("/profile/7?tag=a%26b"),
        &[
            ("authorization", "Bearer t0k"),
            ("x-request-id", "req-42"),
            ("traceparent", trace),
        ],
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/json");
    let body = reply.json();
    // `user` (500 ms), then `orders` (500 ms), which needs it, beside
    // `notifications` (900 ms): about 1 s, not the 1.9 s of one after another.
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1600),
        "calls did not overlap: {elapsed:?}"
    );
    assert_eq!(
        body["user"],
        json!({"id": "7", "name": "Ada", "account_id": "acc 7/x"}),
        "select keeps only these"
    );
    assert_eq!(
        body["recent_orders"],
        json!([{"id": 1, "status": "open"}, {"id": 2, "status": "shipped"}, {"id": 3, "status": "open"}])
    );
    assert_eq!(body["notifications"]["unread"], 3);
    assert!(body.get("_partial").is_none() && reply.headers.get("x-portico-partial").is_none());

    // The dependent call's path carries the other answer's field, escaped,
    // and the client's query value; client headers reach every call.
    let notification_saw = &body["notifications"]["seen"];
    assert_eq!(notification_saw["uri"], "/notifications/7");
    assert_eq!(notification_saw["authorization"], "Bearer t0k");
    assert_eq!(notification_saw["request_id"], "req-42");
    assert_eq!(
        notification_saw["traceparent"], trace,
        "trace context goes on (tracing is off here)"
    );
}

#[tokio::test]
async fn dependent_calls_get_the_answers_they_name() {
    let (u, o) = (users().await, orders().await);
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { users: { targets: [ "$U" ] }, orders: { targets: [ "$O" ] } }
routes:
  - name: r
    match: { path: "/p/{user_id}" }
    aggregate:
      calls:
        user: { upstream: users, path: "/users/{user_id}" }
        orders: { upstream: orders, path: "/orders?account={user.account_id}&tag=${query.tag}", select: [seen] }
"#,
        &[("U", u.to_string()), ("O", o.to_string())],
    ))
    .await;
    let body = get_with(&gw.url("/p/7?tag=a%26b"), &[("x-request-id", "req-9")])
        .await
        .json();
    let saw = &body["orders"][0]["seen"];
    assert_eq!(saw["uri"], "/orders?account=acc%207%2Fx&tag=a%26b");
    assert_eq!(saw["request_id"], "req-9");
    assert_eq!(body["user"]["password"], "hunter2", "without select, the whole answer");
}

#[tokio::test]
async fn merged_grouped_answers_and_templates_from_every_source() {
    let gw = gateway().await;
    let reply = get_with(
        &gw.url("/dashboard/7?tag=blue"),
        &[("x-api-key", KEY), ("x-client", "ios"), ("x-request-id", "req-1")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    // Merged: the user's fields and the grouped orders at the top; an array
    // answer cannot merge and keeps its key.
    assert_eq!(body["name"], "Ada");
    assert_eq!(
        body["open"],
        json!([{"id": 1, "status": "open"}, {"id": 3, "status": "open"}])
    );
    assert_eq!(body["shipped"], json!([{"id": 2, "status": "shipped"}]));
    assert_eq!(body["history"], json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    // The optional call failed (500): null, and said so where configured.
    assert_eq!(body["notifications"], Value::Null);
    assert_eq!(body["missing"], json!(["notifications"]));
    assert_eq!(reply.header("x-missing"), "notifications");

    // Templates from the consumer, query, request id and client headers.
    let saw = &body["seen"];
    assert_eq!(saw["x_consumer"], "mobile");
    assert_eq!(saw["x_tag"], "blue");
    assert_eq!(saw["x_request"], "req-1");
    assert_eq!(saw["x_client"], "ios");

    // Authentication applies to the composite as to any route.
    get(&gw.url("/dashboard/7")).await.problem(401);
}

#[tokio::test]
async fn a_required_failure_is_a_502_naming_the_call_and_optional_ones_are_partial() {
    let gw = gateway().await;
    let missing = get(&gw.url("/profile/missing")).await;
    let problem = missing.problem(502);
    assert_eq!(problem["call"], "user");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("call \"user\" failed") && detail.contains("404"),
        "{detail}"
    );

    let html = get(&gw.url("/profile/html")).await.problem(502);
    assert!(html["detail"].as_str().unwrap().contains("other than JSON"), "{html}");
    let huge = get(&gw.url("/profile/huge")).await.problem(502);
    assert!(huge["detail"].as_str().unwrap().contains("over"), "{huge}");

    // An optional call past its time: null, the answer on time, and marked.
    let started = Instant::now();
    let slow = get(&gw.url("/slow/7")).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(slow.json()["notifications"], Value::Null);
    assert_eq!(slow.json()["_partial"], json!(["notifications"]));
    assert_eq!(slow.header("x-portico-partial"), "notifications");

    // A required call past the aggregate's timeout: 504 naming it.
    let late = get(&gw.url("/slow/slow")).await.problem(504);
    assert_eq!(late["call"], "user");
}

#[tokio::test]
async fn aggregate_config_errors_name_the_fix() {
    let errors = match portico::config::build(
        r#"
listeners: [{ name: p, addr: "127.0.0.1:0" }]
upstreams: { users: { targets: [ "127.0.0.1:9" ] } }
routes:
  - name: cycle
    match: { path: "/a/{id}" }
    aggregate:
      calls:
        a: { upstream: users, path: "/a?x={c.id}" }
        b: { upstream: users, path: "/b?x={a.id}" }
        c: { upstream: users, path: "/c?x={b.id}" }
  - name: wrong
    match: { path: "/b/{id}" }
    aggregate:
      calls:
        a: { upstream: userz, path: "/a/{idd}" }
        b: { upstream: users, path: "b", method: "G ET" }
  - name: both
    match: { path: /c }
    upstream: users
    aggregate: { calls: { a: { upstream: users, path: /a } } }
"#,
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "routes[0].aggregate.calls: the calls wait for each other in a cycle: a → c → b → a",
        "routes[1].aggregate.calls.a.upstream: unknown upstream \"userz\" (did you mean \"users\"?)",
        "routes[1].aggregate.calls.a.path: {idd} names neither a parameter of the route (id) nor a call (a, b)",
        "routes[1].aggregate.calls.b.path: a call's path starts with /",
        "routes[1].aggregate.calls.b.method: \"G ET\" is not an HTTP method",
        "routes[2]: a route has one of `upstream`, `respond` or `aggregate`",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
}

#[tokio::test]
async fn the_example_answers_as_the_readme_says() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/aggregate.yaml")).unwrap();
    // The example calls itself: give it a free port of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = Gateway::start(&text.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))).await;
    let reply = get(&gw.url("/profile/7")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-portico-partial"), "notifications");
    assert_eq!(
        reply.json(),
        json!({
            "user": {"id": 7, "name": "Ada Lovelace", "account_id": "acc-7"},
            "recent_orders": {
                "open": [{"id": 1, "status": "open", "total": 12.5}],
                "shipped": [{"id": 2, "status": "shipped", "total": 30}]
            },
            "notifications": null,
            "_partial": ["notifications"]
        })
    );
}
