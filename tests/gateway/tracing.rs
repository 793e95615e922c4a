//! W3C trace context and OTLP export, checked with a real OTLP receiver.

use crate::config;
use crate::support::*;
use std::time::Duration;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn traced(receiver: &OtlpReceiver, targets: &str, ratio: &str) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
tracing:
  otlp: { endpoint: "http://$R", export_interval: 100ms }
  sample_ratio: $SAMPLE
  service_name: edge
upstreams:
  api: { targets: [ $T ], retries: { attempts: 1 }, balance: round_robin }
routes: [{ name: api, match: { path: /api }, upstream: api }]
"#,
        &[
            ("R", receiver.addr.to_string()),
            ("T", targets.to_string()),
            ("SAMPLE", ratio.to_string()),
        ],
    )
}

/// `00-trace-parent-flags` split into its parts.
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string(), parts[3].to_string())
}

#[tokio::test]
async fn a_clients_trace_continues_through_the_gateway_to_the_upstream() {
    let receiver = OtlpReceiver::start().await;
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&traced(&receiver, &format!("\"{}\"", upstream.addr), "100%")).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let reply = get_with(
        &gw.url("/api/users"),
        &[
            ("traceparent", &format!("00-{trace}-{client_span}-01")),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);

    let sent = upstream.last();
    let (sent_trace, sent_parent, flags) = traceparent(sent.headers["traceparent"].to_str().unwrap());
    assert_eq!(sent_trace, trace, "the upstream sees the client's trace");
    assert_ne!(sent_parent, client_span, "under the gateway's own span");
    assert_eq!(flags, "01");
    assert_eq!(sent.headers["tracestate"], "vendor=opaque");

    let spans = receiver.spans(2).await;
    let server = spans.iter().find(|s| s.kind == SERVER).expect("a server span");
    let client = spans.iter().find(|s| s.kind == CLIENT).expect("a client span");
    assert_eq!(server.service, "edge");
    assert_eq!(server.trace_id, trace);
    assert_eq!(server.parent_span_id, client_span);
    assert_eq!(server.name, "GET api");
    assert_eq!(server.attributes["http.route"], "api");
    assert_eq!(server.attributes["http.response.status_code"], "200");
    assert_eq!(client.trace_id, trace);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.span_id, sent_parent, "the upstream's parent is the attempt span");
    assert_eq!(client.attributes["server.address"], upstream.addr.to_string());
    assert_eq!(client.attributes["http.response.status_code"], "200");
}

#[tokio::test]
async fn a_trace_is_started_when_the_client_sends_none_and_each_attempt_has_a_span() {
    let receiver = OtlpReceiver::start().await;
    let upstream = Upstream::named("ok").await;
    let dead = refusing_addr().await;
    let targets = format!("\"{dead}\", \"{}\"", upstream.addr);
    let gw = Gateway::start(&traced(&receiver, &targets, "100%")).await;
    // Round robin starts anywhere, so of two requests at least one meets the
    // dead target first: one failed attempt, then a retry.
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/api")).await.status, 200);
    }

    let spans = receiver.spans(5).await;
    let servers: Vec<_> = spans.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(servers.len(), 2);
    let sent_traces: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| traceparent(r.headers["traceparent"].to_str().unwrap()).0)
        .collect();
    for server in &servers {
        assert!(
            sent_traces.contains(&server.trace_id),
            "a trace started here reached the upstream"
        );
        assert_eq!(server.parent_span_id, "", "a new trace has a root span");
    }
    let attempts_of = |server: &ExportedSpan| -> Vec<ExportedSpan> {
        spans
            .iter()
            .filter(|s| s.kind == CLIENT && s.parent_span_id == server.span_id)
            .cloned()
            .collect()
    };
    let retried = servers
        .iter()
        .find(|s| attempts_of(s).len() == 2)
        .expect("a request with two attempts");
    let attempts = attempts_of(retried);
    let failed = attempts
        .iter()
        .find(|a| a.attributes["server.address"] == dead.to_string())
        .unwrap();
    assert!(failed.error);
    assert_eq!(failed.attributes["error.type"], "connect_failure");
    let ok = attempts
        .iter()
        .find(|a| a.attributes["server.address"] == upstream.addr.to_string())
        .unwrap();
    assert!(!ok.error);
}

#[tokio::test]
async fn sampling_records_a_share_of_new_traces_but_follows_a_sampled_client() {
    let receiver = OtlpReceiver::start().await;
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&traced(&receiver, &format!("\"{}\"", upstream.addr), "0%")).await;
    for _ in 0..5 {
        get(&gw.url("/api")).await;
    }
    // Not recorded, but still propagated (unsampled) so the upstream's spans agree.
    let (_, _, flags) = traceparent(upstream.last().headers["traceparent"].to_str().unwrap());
    assert_eq!(flags, "00");
    let trace = "0af7651916cd43dd8448eb211c80319c";
    get_with(
        &gw.url("/api"),
        &[("traceparent", &format!("00-{trace}-b7ad6b7169203331-01"))],
    )
    .await;
    let spans = receiver.spans(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans_now = receiver.received();
    assert_eq!(spans_now.len(), spans.len(), "nothing else arrives");
    assert!(spans.iter().all(|s| s.trace_id == trace), "{spans:#?}");
}

#[tokio::test]
async fn tracing_config_errors_name_the_fix() {
    let errors = |block: &str| match portico::config::build(&format!(
        "listeners: [{{ name: p, addr: '127.0.0.1:0' }}]\ntracing: {block}\n"
    )) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    let bad = errors("{ otlp: { endpoint: 'collector:4318', export_interval: 0s } }");
    assert!(
        bad.iter()
            .any(|e| e.contains("tracing.otlp.endpoint") && e.contains("scheme")),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|e| e.contains("tracing.otlp.export_interval")),
        "{bad:?}"
    );
    let ratio = errors("{ otlp: { endpoint: 'http://c:4318' }, sample_ratio: 150% }");
    assert!(ratio.iter().any(|e| e.contains("tracing.sample_ratio")), "{ratio:?}");
    let typo = errors("{ otlp: { endpont: 'http://c:4318' } }");
    assert!(typo.iter().any(|e| e.contains("did you mean \"endpoint\"")), "{typo:?}");
}
