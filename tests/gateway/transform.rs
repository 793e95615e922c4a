//! Request and response transforms, against an upstream that echoes what it
//! received.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;

/// An upstream answering with JSON describing the request it received.
async fn echo() -> std::net::SocketAddr {
    serve(|request: http::Request<hyper::body::Incoming>| async move {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        // A name sent more than once: its values joined with ", ".
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .keys()
            .map(|k| {
                let values: Vec<&str> = parts
                    .headers
                    .get_all(k)
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect();
                (k.to_string(), json!(values.join(", ")))
            })
            .collect();
        let echoed = json!({
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or(""),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "content_length": parts.headers.get("content-length").map(|v| v.to_str().unwrap().to_string()),
        });
        let status = if parts.uri.path().ends_with("/missing") {
            404
        } else {
            200
        };
        Ok::<_, std::convert::Infallible>(
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("x-internal", "secret-build-42")
                .body(Full::new(Bytes::from(echoed.to_string())))
                .unwrap(),
        )
    })
    .await
}

async fn gateway(upstream: std::net::SocketAddr, plugins: &str) -> Gateway {
    Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { echo: { targets: [ "$U" ] } }
routes:
  - name: items
    match: { path: "/items/{id}" }
    upstream: echo
    plugins:
$PLUGINS
"#,
        &[("U", upstream.to_string()), ("PLUGINS", plugins.to_string())],
    ))
    .await
}

fn post_json(url: &str, body: serde_json::Value, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

#[tokio::test]
async fn request_headers_query_and_json_bodies_are_rewritten_with_templates() {
    let gw = gateway(
        echo().await,
        r#"      request_transform:
        headers:
          add: { x-item: "${path.id}", x-via: gateway }
          set: { x-from: "${header.x-client}/${query.tag}", x-request: "${request_id}", x-team: payments }
          remove: [ x-debug ]
          rename: { x-old: x-new }
        query:
          set: { source: gateway }
          remove: [ token ]
          rename: { q: search }
        json:
          rename: { user.userId: user.id, "items[*].sku": "items[*].code" }
          remove: [ password ]
          set: { meta.item: "${path.id}", meta.fixed: 3 }
          add: { note: default, keep: overwritten }"#,
    )
    .await;
    let reply = send(post_json(
        &gw.url("/items/42?q=shoes&token=t0k&tag=new"),
        json!({ "user": { "userId": "7" }, "items": [ { "sku": "a" }, { "sku": "b" } ], "password": "p", "keep": "mine" }),
        &[("x-client", "app"), ("x-debug", "1"), ("x-old", "o"), ("x-request-id", "req-1"), ("x-team", "forged")],
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    let headers = &seen["headers"];
    assert_eq!(headers["x-item"], "42");
    // Literal values (made once at compile): `set` replaces the client's own.
    assert_eq!(headers["x-team"], "payments");
    assert_eq!(headers["x-via"], "gateway");
    assert_eq!(headers["x-from"], "app/new");
    assert_eq!(headers["x-request"], "req-1");
    assert!(headers["x-debug"].is_null());
    assert_eq!(headers["x-new"], "o");
    let query: Vec<(String, String)> = form_urlencoded::parse(seen["query"].as_str().unwrap().as_bytes())
        .into_owned()
        .collect();
    assert!(query.contains(&("search".into(), "shoes".into())), "{query:?}");
    assert!(query.contains(&("source".into(), "gateway".into())));
    assert!(!query.iter().any(|(k, _)| k == "token"));
    let body: serde_json::Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({ "user": { "id": "7" }, "items": [ { "code": "a" }, { "code": "b" } ], "keep": "mine",
                "meta": { "item": "42", "fixed": 3 }, "note": "default" })
    );
    assert_eq!(
        seen["content_length"],
        seen["body"].as_str().unwrap().len().to_string(),
        "Content-Length follows the new body"
    );
}

#[tokio::test]
async fn responses_are_filtered_their_statuses_mapped_and_other_bodies_stream_untouched() {
    let gw = gateway(
        echo().await,
        r#"      response_transform:
        headers: { remove: [ x-internal ], set: { x-item: "${path.id}" } }
        json: { allow: [ path, query ] }
        status: { 404: 200 }"#,
    )
    .await;
    let reply = get(&gw.url("/items/9?x=1")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({ "path": "/items/9", "query": "x=1" }),
        "only allowed fields"
    );
    assert!(reply.headers.get("x-internal").is_none());
    assert_eq!(reply.header("x-item"), "9");
    assert_eq!(reply.header("content-length"), reply.body.len().to_string());
    let mapped = get(&gw.url("/items/missing")).await;
    assert_eq!(mapped.status, 200, "404 mapped to 200");

    // A body that is not JSON is not read, and not changed.
    let plain = send(
        http::Request::post(gw.url("/items/1"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"not json at all")))
            .unwrap(),
    )
    .await;
    assert_eq!(plain.status, 200);
}

#[tokio::test]
async fn bodies_over_the_cap_and_malformed_json_are_refused() {
    let gw = gateway(
        echo().await,
        "      request_transform: { json: { remove: [ secret ] }, max_body: 1KiB }",
    )
    .await;
    let big = json!({ "data": "x".repeat(2000) });
    send(post_json(&gw.url("/items/1"), big, &[])).await.problem(413);
    let malformed = send(
        http::Request::post(gw.url("/items/1"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"a\": ")))
            .unwrap(),
    )
    .await;
    assert!(malformed.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let ok = send(post_json(&gw.url("/items/1"), json!({ "secret": 1, "a": 2 }), &[])).await;
    assert_eq!(ok.json()["body"], "{\"a\":2}");
}

#[tokio::test]
async fn transform_config_errors_name_the_fix() {
    let errors = match portico::config::build(
        "listeners: [{ name: p, addr: '127.0.0.1:0' }]\nroutes:\n  - { name: r, match: { path: \"/u/{id}\" }, respond: { body: x }, plugins: { request_transform: { headers: { set: { x-a: \"${path.user}\", x-b: \"${nope}\" } }, json: { rename: { \"a[*].b\": c }, remove: [\"a[0]\"] } }, response_transform: { headers: { set: { x-c: \"${header.x}\" } }, status: { 404: 42 } } } }\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "routes[0].plugins.request_transform.headers.set.x-a: ${path.user}: the route captures no {user} (it captures id)",
        "routes[0].plugins.request_transform.headers.set.x-b: ${nope} is not a template value",
        "routes[0].plugins.request_transform.json.rename.a[*].b: both paths must have as many [*]",
        "routes[0].plugins.request_transform.json.remove[0]:",
        "routes[0].plugins.response_transform.headers.set.x-c: response values cannot use ${header.*}",
        "routes[0].plugins.response_transform.status.404:",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(expected)), "{expected}\n{errors:#?}");
    }
}

#[tokio::test]
async fn requests_that_do_not_match_their_schemas_never_reach_the_service() {
    let upstream = Upstream::named("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("order.yaml");
    std::fs::write(
        &schema_file,
        "type: object\nrequired: [item, quantity]\nproperties:\n  item: { type: string, minLength: 1 }\n  quantity: { type: integer, minimum: 1 }\nadditionalProperties: false\n",
    )
    .unwrap();
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { api: { targets: [ "$U" ] } }
routes:
  - name: orders
    match: { path: "/orders/{id}" }
    upstream: api
    plugins:
      validate:
        body_file: "$SCHEMA"
        path: { type: object, properties: { id: { type: string, pattern: "^[0-9]+$" } } }
        query: { type: object, properties: { limit: { type: string, pattern: "^[0-9]{1,3}$" } } }
        headers: { type: object, required: [x-tenant] }
"#,
        &[
            ("U", upstream.addr.to_string()),
            ("SCHEMA", schema_file.display().to_string()),
        ],
    ))
    .await;
    let tenant = [("x-tenant", "acme")];
    let good = json!({ "item": "book", "quantity": 2 });
    let ok = send(post_json(&gw.url("/orders/7?limit=10"), good.clone(), &tenant)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(upstream.last().body, good.to_string(), "a valid body goes on as sent");

    // The head is checked first; a request whose head is valid has its body checked.
    let pointers = |reply: &Reply| -> Vec<String> {
        let problem = reply.problem(400);
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap().to_string())
            .collect()
    };
    let bad_head = send(post_json(&gw.url("/orders/x?limit=5000"), good.clone(), &[])).await;
    assert_eq!(pointers(&bad_head), ["/query/limit", "/path/id", "/headers"]);
    let bad_body = send(post_json(
        &gw.url("/orders/7"),
        json!({ "item": "", "quantity": 0, "extra": 1 }),
        &tenant,
    ))
    .await;
    let found = pointers(&bad_body);
    for expected in ["/body/item", "/body/quantity", "/body"] {
        assert!(found.iter().any(|p| p == expected), "{expected} in {found:?}");
    }
    let text = send(
        http::Request::post(gw.url("/orders/7"))
            .header("content-type", "text/plain")
            .header("x-tenant", "acme")
            .body(Full::new(Bytes::from_static(b"item=book")))
            .unwrap(),
    )
    .await;
    text.problem(415);
    let malformed = send(
        http::Request::post(gw.url("/orders/7"))
            .header("content-type", "application/json")
            .header("x-tenant", "acme")
            .body(Full::new(Bytes::from_static(b"{")))
            .unwrap(),
    )
    .await;
    malformed.problem(400);
    assert_eq!(upstream.count(), 1, "invalid requests never reach the service");

    let errors = match portico::config::build(
        "listeners: [{ name: p, addr: '127.0.0.1:0' }]\nroutes:\n  - { name: r, match: { path: / }, respond: { body: x }, plugins: { validate: { body: { type: 12 } } } }\n  - { name: s, match: { path: /s }, respond: { body: x }, plugins: { validate: { body_file: /nonexistent.json } } }\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[0].plugins.validate.body: not a valid JSON Schema")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[1].plugins.validate.body_file: cannot read")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn answers_that_break_their_schema_are_logged_and_counted_or_replaced_with_502() {
    let echo = echo().await;
    // The echo upstream answers { path, query, headers, body, content_length }.
    let schema = r#"{ type: object, required: [path, total], properties: { path: { type: string } } }"#;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
upstreams: { echo: { targets: [ "$U" ] } }
routes:
  - { name: logged, match: { path: /logged }, upstream: echo, plugins: { validate: { response: $SCHEMA } } }
  - { name: strict, match: { path: /strict }, upstream: echo, plugins: { validate: { response: $SCHEMA, on_invalid_response: reject } } }
  - { name: fine, match: { path: /fine }, upstream: echo, plugins: { validate: { response: { type: object, required: [path] } } } }
  - { name: big-logged, match: { path: /big-logged }, upstream: echo, plugins: { validate: { response: $SCHEMA, max_body: 64 } } }
  - { name: big-strict, match: { path: /big-strict }, upstream: echo, plugins: { validate: { response: $SCHEMA, max_body: 64, on_invalid_response: reject } } }
"#,
        &[("U", echo.to_string()), ("SCHEMA", schema.to_string()), ("TOKEN", ADMIN_TOKEN.to_string())],
    ))
    .await;
    let logged = get(&gw.url("/logged")).await;
    assert_eq!(logged.status, 200, "passed on");
    assert_eq!(logged.json()["path"], "/logged");
    get(&gw.url("/strict")).await.problem(502);
    let fine = get(&gw.url("/fine")).await;
    assert_eq!(fine.status, 200);
    assert_eq!(fine.header("content-length"), fine.body.len().to_string());
    // An answer too large to check: watched only, it goes on whole and
    // unchecked; where a bad one must be refused, it is refused.
    let big = get(&gw.url("/big-logged")).await;
    assert_eq!(big.status, 200, "{}", big.text());
    assert_eq!(big.json()["path"], "/big-logged");
    assert_eq!(big.header("content-length"), big.body.len().to_string());
    assert!(big.body.len() > 64);
    get(&gw.url("/big-strict")).await.problem(502);
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains(r#"portico_response_schema_violations_total{route="logged"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portico_response_schema_violations_total{route="strict"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"portico_response_schema_violations_total{route="fine"}"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"portico_response_schema_violations_total{route="big-logged"}"#),
        "an answer not checked is not a violation: {metrics}"
    );
}
