//! The canonical path: spellings that a service reads as a protected path
//! never reach it through a public route.

use super::{h2, recording, status_of, statuses};
use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

const KEY: &str = "admin-key-0123456789abcdef";

/// `/api` public, `/api/admin` behind `key_auth`, one upstream; `$LISTENER`
/// extra listener settings.
fn protected(upstream: &Upstream, listener: &str) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" $LISTENER }]
access_log: { enabled: false }
consumers:
  - { name: ops, credentials: { api_keys: [ "$KEY" ] } }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: public, match: { path: /api }, upstream: app }
  - { name: admin, match: { path: /api/admin }, upstream: app, plugins: { key_auth: {} } }
"#,
        &[
            ("U", upstream.addr.to_string()),
            ("KEY", KEY.to_string()),
            ("LISTENER", listener.to_string()),
        ],
    )
}

/// Spellings of `/api/admin/users` that Tomcat, Spring, nginx or IIS read as it.
const BYPASSES: &[&str] = &[
    "/api//admin/users",
    "/api///admin/users",
    "/api/admin;x/users",
    "/api/admin;jsessionid=1/users",
    "/api%3B/admin/users",
    "/api/admin%3bx/users",
    "/api/public/..;/admin/users",
    "/api/public/..;x=1/admin/users",
    "/api/x\\..\\admin/users",
    "/api/x%5C..%5Cadmin/users",
    "/api/x%5c..%5cadmin/users",
    "/api/x%2F..%2Fadmin/users",
    "/api/x%2f%2e%2e%2fadmin/users",
    "/api/public/%2e%2e/admin/users",
    "/api/public/%2E%2E/admin/users",
    "/api/./admin/users",
    "/api/%61dmin/users",
    "/api/admin%00/users",
    "//api/admin/users",
];

#[tokio::test]
async fn spellings_of_a_protected_path_never_pass_a_public_route() {
    let upstream = recording().await;
    let gw = Gateway::start(&protected(&upstream, "")).await;
    for path in BYPASSES {
        let request = format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n");
        let answer = raw(gw.addr, request.as_bytes()).await;
        let status = status_of(&answer);
        assert!(
            status == 400 || status == 401,
            "{path} answered {status}, not refused:\n{answer}"
        );
        assert_eq!(upstream.count(), 0, "{path} reached the upstream");
    }
    // With the key, the canonical form goes upstream: never the client's spelling.
    let answer = raw(
        gw.addr,
        format!("GET /api//admin/./users HTTP/1.1\r\nHost: a\r\nX-Api-Key: {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(upstream.last().uri.path(), "/api/admin/users");
}

#[tokio::test]
async fn the_same_spellings_in_absolute_form_pipelined_and_over_http2() {
    let upstream = recording().await;
    let gw = Gateway::start(&protected(&upstream, "")).await;
    // Absolute-form: the path is made canonical the same way.
    let answer = raw(
        gw.addr,
        b"GET http://api.example.com/api//admin/users HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 401, "{answer}");
    // Pipelined behind an innocent request: each is judged on its own.
    let answer = raw(
        gw.addr,
        b"GET /api/ok HTTP/1.1\r\nHost: a\r\n\r\nGET /api/admin;x/users HTTP/1.1\r\nHost: a\r\n\r\nGET /api//admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), vec![200, 400, 401], "{answer}");
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.last().uri.path(), "/api/ok");
    // HTTP/2: the same rules, the same answers.
    for (path, expected) in [
        ("/api//admin/users", 401),
        ("/api/admin;x/users", 400),
        ("/api/public/..;/admin/users", 400),
        ("/api/x%2F..%2Fadmin/users", 400),
        ("/api/x%5C..%5Cadmin/users", 400),
    ] {
        let request = Request::get(format!("http://{}{path}", gw.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, body) = h2(request).await;
        assert_eq!(status, expected, "{path} over HTTP/2: {body}");
    }
    assert_eq!(upstream.count(), 1, "nothing more reached the upstream");
}

#[tokio::test]
async fn a_refused_path_is_a_problem_document_that_says_why() {
    let upstream = recording().await;
    let gw = Gateway::start(&protected(&upstream, "")).await;
    let reply = get(&gw.url("/api/admin;x/users")).await;
    let problem = reply.problem(400);
    assert!(problem["detail"].as_str().unwrap().contains("';'"), "{problem}");
    let reply = get(&gw.url("/api/../../etc/passwd")).await;
    assert!(reply.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("above the root"));
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn listener_knobs_change_the_canonical_form_as_documented() {
    let upstream = recording().await;
    // Encoded slashes decoded: a separator like any other, so the protected route matches.
    let gw = Gateway::start(&protected(&upstream, ", path: { escaped_slashes: decode }")).await;
    assert_eq!(get(&gw.url("/api/admin%2Fusers")).await.status, 401);
    // Kept (the default): one segment, sent upstream as the client wrote it.
    let gw = Gateway::start(&protected(&upstream, "")).await;
    assert_eq!(get(&gw.url("/api/pkg/@scope%2fname")).await.status, 200);
    assert_eq!(upstream.last().uri.path(), "/api/pkg/@scope%2Fname");
    // Refused.
    let gw = Gateway::start(&protected(&upstream, ", path: { escaped_slashes: reject }")).await;
    get(&gw.url("/api/pkg/@scope%2fname")).await.problem(400);
    // Semicolons kept, for services that do not read path parameters:
    // still never around a dot segment.
    let gw = Gateway::start(&protected(&upstream, ", path: { semicolons: keep }")).await;
    assert_eq!(get(&gw.url("/api/a;v=1/b")).await.status, 200);
    assert_eq!(upstream.last().uri.path(), "/api/a;v=1/b");
    get(&gw.url("/api/public/..;/admin/users")).await.problem(400);
    // Slashes not merged: `//` stays, and matches no literal segment.
    let gw = Gateway::start(&protected(&upstream, ", path: { merge_slashes: false }")).await;
    assert_eq!(get(&gw.url("/api//x")).await.status, 200);
    assert_eq!(upstream.last().uri.path(), "/api//x");
}

#[tokio::test]
async fn unknown_path_settings_are_config_errors_with_their_place() {
    let upstream = recording().await;
    let yaml = protected(&upstream, ", path: { escaped_slashes: sometimes }");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portico.yaml");
    std::fs::write(&file, yaml).unwrap();
    let error = portico::control::Control::start(&file, portico::control::RunOptions { watch: false })
        .await
        .err()
        .expect("the config is refused")
        .to_string();
    assert!(error.contains("listeners[0].path.escaped_slashes"), "{error}");
    assert!(
        error.contains("keep") && error.contains("reject") && error.contains("decode"),
        "{error}"
    );
}
