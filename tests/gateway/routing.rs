//! Routes chosen by path, method, host, header and query, with a documented precedence.

use crate::config;
use crate::support::*;

#[tokio::test]
async fn api_versions_by_path_header_and_query_reach_different_upstreams() {
    let v1 = Upstream::named("v1").await;
    let v2 = Upstream::named("v2").await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  v1: { targets: ["$U1"] }
  v2: { targets: ["$U2"] }
routes:
  - { name: by-path-v1, match: { path: /v1/items }, upstream: v1 }
  - { name: by-path-v2, match: { path: /v2/items }, upstream: v2 }
  - { name: by-header-v2, match: { path: /items, headers: { x-api-version: "2" } }, upstream: v2 }
  - { name: by-query-v2, match: { path: /items, query: { version: "2" } }, upstream: v2 }
  - { name: default-v1, match: { path: /items }, upstream: v1 }
"#,
        &[("U1", v1.addr.to_string()), ("U2", v2.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    assert_eq!(get(&gw.url("/v1/items")).await.text(), "v1");
    assert_eq!(get(&gw.url("/v2/items/9")).await.text(), "v2");
    assert_eq!(
        get_with(&gw.url("/items"), &[("x-api-version", "2")]).await.text(),
        "v2"
    );
    assert_eq!(get(&gw.url("/items?version=2")).await.text(), "v2");
    assert_eq!(get(&gw.url("/items?version=1")).await.text(), "v1");
    assert_eq!(get(&gw.url("/items")).await.text(), "v1");
    assert_eq!(
        v2.last().uri.query(),
        Some("version=2"),
        "the query goes upstream as sent"
    );
}

#[tokio::test]
async fn precedence_exact_then_template_then_prefix_and_priority_overrides() {
    let yaml = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - { name: prefix, match: { path: /users }, respond: { body: prefix } }
  - { name: template, match: { path: "/users/{id}" }, respond: { body: template } }
  - { name: exact, match: { path: "= /users/me" }, respond: { body: exact } }
  - { name: longer-prefix, match: { path: /users/7/orders }, respond: { body: longer-prefix } }
  - { name: regex, match: { path: "~ ^/users/[0-9]+/files$" }, respond: { body: regex } }
  - { name: pinned, priority: 10, match: { path: /users/pinned }, respond: { body: pinned } }
  - { name: pinned-exact, match: { path: "= /users/pinned" }, respond: { body: pinned-exact } }
"#;
    let gw = Gateway::start(yaml).await;
    for (path, route) in [
        ("/users/me", "exact"),
        ("/users/7", "template"),
        ("/users", "prefix"),
        ("/users/7/orders/1", "longer-prefix"),
        ("/users/7/x", "prefix"),
        ("/users/7/files", "regex"),
        ("/users/pinned", "pinned"),
    ] {
        assert_eq!(get(&gw.url(path)).await.text(), route, "{path}");
    }
}

#[tokio::test]
async fn no_route_is_404_and_wrong_method_is_405_with_allow() {
    let yaml = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - { name: read, match: { path: /users, methods: [GET] }, respond: { body: read } }
  - { name: write, match: { path: /users, methods: [POST] }, respond: { status: 201 } }
"#;
    let gw = Gateway::start(yaml).await;
    let reply = get(&gw.url("/orders")).await;
    reply.problem(404);
    let reply = send(
        http::Request::delete(gw.url("/users"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    reply.problem(405);
    assert_eq!(reply.header("allow"), "HEAD, GET, POST");
    let reply = send(http::Request::post(gw.url("/users")).body(Default::default()).unwrap()).await;
    assert_eq!(reply.status, 201);
    let reply = send(http::Request::head(gw.url("/users")).body(Default::default()).unwrap()).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn hosts_select_routes_exact_before_wildcard() {
    let yaml = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - { name: any, match: { path: / }, respond: { body: any } }
  - { name: wild, match: { path: /, host: "*.example.com" }, respond: { body: wild } }
  - { name: api, match: { path: /, host: api.example.com }, respond: { body: api } }
"#;
    let gw = Gateway::start(yaml).await;
    assert_eq!(
        get_with(&gw.url("/"), &[("host", "API.example.com:8080")]).await.text(),
        "api"
    );
    assert_eq!(
        get_with(&gw.url("/"), &[("host", "www.example.com")]).await.text(),
        "wild"
    );
    assert_eq!(get_with(&gw.url("/"), &[("host", "example.org")]).await.text(), "any");
}

#[tokio::test]
async fn paths_are_normalised_before_matching_and_escapes_cannot_climb() {
    let yaml = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - { name: admin, match: { path: /admin }, respond: { body: admin } }
  - { name: public, match: { path: /public }, respond: { body: public } }
"#;
    let gw = Gateway::start(yaml).await;
    // One resource, one spelling: an ACL on /admin cannot be dodged with dots or escapes.
    assert_eq!(get(&gw.url("/public/../admin")).await.text(), "admin");
    assert_eq!(get(&gw.url("/%61dmin")).await.text(), "admin");
    let answer = raw(
        gw.addr,
        b"GET /../admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test]
async fn a_swapped_config_serves_the_next_request_without_a_restart() {
    let before = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes: [{ name: v, match: { path: / }, respond: { body: before } }]
"#;
    let after = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes: [{ name: v, match: { path: / }, respond: { body: after } }]
"#;
    let gw = Gateway::start(before).await;
    assert_eq!(get(&gw.url("/")).await.text(), "before");
    assert!(gw.reload(after).await.ok);
    assert_eq!(get(&gw.url("/")).await.text(), "after");
}
