//! Client input never becomes upstream health: a deadline the client chose
//! that passes is the client's 504, never the target's failure.

use crate::config;
use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn a_client_deadline_never_ejects_a_target_or_opens_the_breaker() {
    let upstream = Upstream::slow("slow-but-fine", Duration::from_millis(50)).await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams:
  app:
    targets: [ "$U" ]
    health_check: { passive: { consecutive_failures: 3, eject_for: 60s } }
    circuit_breaker: { failure_rate: 50%, min_requests: 5, window: 10s, open_for: 60s }
routes:
  - { name: any, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    for _ in 0..40 {
        let reply = get_with(&gw.url("/x"), &[("grpc-timeout", "1m")]).await;
        let problem = reply.problem(504);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("the client's deadline (1ms), set by its grpc-timeout"),
            "{problem}"
        );
    }
    // gRPC clients hear DEADLINE_EXCEEDED.
    let reply = get_with(
        &gw.url("/x"),
        &[
            ("grpc-timeout", "1m"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    .await;
    assert_eq!(reply.header("grpc-status"), "4", "{:?}", reply.headers);
    // The target is as healthy as it was: the next client is served.
    let reply = get(&gw.url("/x")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "slow-but-fine");
}
