//! The smaller holes of the same class: each closed, each with what the
//! upstream (or the admin API) shows.

use super::recording;
use crate::config;
use crate::support::*;

#[tokio::test]
async fn route_parameters_stay_one_value_in_aggregate_calls() {
    let users = Upstream::start(|request| {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                serde_json::json!({ "uri": request.uri.to_string() }).to_string(),
            )))
            .unwrap()
    })
    .await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { users: { targets: [ "$U" ] } }
routes:
  - name: profile
    match: { path: "/profile/{user_id}", methods: [GET] }
    aggregate:
      calls:
        user: { upstream: users, path: "/users/{user_id}?tenant=mine" }
        orders: { upstream: users, path: "/orders?user={user_id}&tenant=mine" }
"#,
        &[("U", users.addr.to_string())],
    ))
    .await;
    let reply = get(&gw.url("/profile/7&tenant=victim")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let uris: Vec<String> = users.requests().iter().map(|r| r.uri.to_string()).collect();
    assert!(
        uris.contains(&"/users/7%26tenant%3Dvictim?tenant=mine".to_string()),
        "{uris:?}"
    );
    assert!(
        uris.contains(&"/orders?user=7%26tenant%3Dvictim&tenant=mine".to_string()),
        "{uris:?}"
    );
    // An escaped slash in the parameter stays escaped, never a new segment.
    get(&gw.url("/profile/a%2F..%2Fadmin")).await.problem(400);
    get(&gw.url("/profile/a%2Fb")).await;
    assert!(users.requests().iter().any(|r| r.uri.path() == "/users/a%2Fb"));
}

#[tokio::test]
async fn ip_restriction_sees_ipv4_clients_of_a_dual_stack_listener_as_ipv4() {
    let upstream = recording().await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "[::]:0" }]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - name: internal
    match: { path: /internal }
    upstream: app
    plugins: { ip_restriction: { allow: [ 10.0.0.0/8 ], trusted_proxies: [ 127.0.0.1 ] } }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    // Over IPv4 to [::]: the peer is ::ffff:127.0.0.1, a trusted proxy.
    let url = format!("http://127.0.0.1:{}/internal", gw.addr.port());
    assert_eq!(get_with(&url, &[("x-forwarded-for", "10.1.2.3")]).await.status, 200);
    assert_eq!(get_with(&url, &[("x-forwarded-for", "192.0.2.1")]).await.status, 403);
    // A hop that is no address where the client should be: unknown, refused.
    let reply = get_with(&url, &[("x-forwarded-for", "10.1.2.3, not-an-ip")]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn the_admin_config_hides_redis_passwords_and_secret_headers() {
    let redis = RedisServer::start().await;
    let url = redis.url().replace("redis://", "redis://:hunter2-secret@");
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
cluster: { redis: "$REDIS" }
routes:
  - name: r
    match: { path: / }
    respond: { body: ok }
    plugins:
      request_transform: { headers: { set: { X-Api-Key: "partner-secret-value", Authorization: "Bearer sk-live-123" } } }
"#,
        &[("TOKEN", ADMIN_TOKEN.to_string()), ("REDIS", url)],
    ))
    .await;
    let shown = gw.admin("GET", "/config", "").await;
    assert_eq!(shown.status, 200);
    let text = shown.text();
    for secret in ["hunter2-secret", "partner-secret-value", "sk-live-123"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
}

#[tokio::test]
async fn set_replaces_the_client_s_header_even_when_its_value_cannot_be_rendered() {
    let upstream = recording().await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - name: r
    match: { path: / }
    upstream: app
    plugins: { request_transform: { headers: { set: { x-role: "${query.role}" } } } }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    get_with(&gw.url("/?role=a%0Aadmin"), &[("x-role", "admin")]).await;
    assert!(
        !upstream.last().headers.contains_key("x-role"),
        "the client's own x-role passed"
    );
    get_with(&gw.url("/?role=reader"), &[("x-role", "admin")]).await;
    assert_eq!(upstream.last().headers["x-role"], "reader");
}
