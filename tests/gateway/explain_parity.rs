//! `explain` never lies: every example config is started as a live gateway
//! with real upstreams in place of its targets, and a corpus of requests
//! made from its routes goes both through `explain` (on the running config,
//! with its live state) and through the gateway. Both must agree on the
//! outcome and status, on the upstream target, and on the path and query
//! the upstream receives.

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use portico::explain::{explain, Question};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

/// One upstream per target address of the example, each saying which it is.
struct Targets {
    by_original: BTreeMap<String, Upstream>,
}

impl Targets {
    /// The original address of the target that received the request marked `n`,
    /// and the path and query it received.
    fn receiver_of(&self, n: usize) -> Option<(String, String)> {
        let marker = format!("portico-parity={n}");
        self.by_original.iter().find_map(|(original, upstream)| {
            upstream
                .requests()
                .into_iter()
                .find(|r| r.uri.query().is_some_and(|q| q.split('&').any(|p| p == marker)))
                .map(|r| (original.clone(), r.uri.to_string()))
        })
    }
}

/// `${env:NAME}` replaced by a value of the test's own.
fn with_secrets(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${env:") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("closed reference") + at;
        let name = &rest[at + 6..end];
        out.push_str(&format!("secret-{}", name.to_ascii_lowercase()));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The example with loopback listeners on free ports, its plain-address
/// targets replaced by live upstreams, and its Redis by a test Redis.
async fn live_config(text: &str, redis: &mut Option<RedisServer>) -> (String, Targets) {
    let mut config: Value = serde_yaml_ng::from_str(&with_secrets(text)).unwrap();
    let mut by_original = BTreeMap::new();
    if let Some(listeners) = config.get_mut("listeners").and_then(Value::as_sequence_mut) {
        // Plain HTTP only: the corpus is sent in the clear.
        listeners.retain(|l| l.get("tls").is_none());
        for listener in listeners.iter_mut() {
            listener["addr"] = Value::from("127.0.0.1:0");
        }
    }
    if let Some(admin) = config.get_mut("admin") {
        admin["addr"] = Value::from("127.0.0.1:0");
    }
    if config.get("cluster").is_some() {
        let server = match redis {
            Some(server) => server,
            None => redis.insert(RedisServer::start().await),
        };
        config["cluster"]["redis"] = Value::from(server.url());
    }
    if let Some(upstreams) = config.get_mut("upstreams").and_then(Value::as_mapping_mut) {
        for (_, upstream) in upstreams.iter_mut() {
            // The stand-ins speak HTTP/1.1 only: gRPC services keep their addresses.
            if upstream.get("protocol").is_some() {
                continue;
            }
            let Some(targets) = upstream.get_mut("targets").and_then(Value::as_sequence_mut) else {
                continue;
            };
            for target in targets.iter_mut() {
                let slot = match target {
                    Value::Mapping(_) => &mut target["addr"],
                    _ => target,
                };
                let Some(original) = slot.as_str().map(str::to_string) else {
                    continue;
                };
                if !original.starts_with("127.0.0.1:") {
                    continue;
                }
                if !by_original.contains_key(&original) {
                    let name = original.clone();
                    let server = Upstream::start(move |_| {
                        Response::builder()
                            .header("content-type", "application/json")
                            .header("x-target", name.as_str())
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap()
                    })
                    .await;
                    by_original.insert(original.clone(), server);
                }
                *slot = Value::from(by_original[&original].addr.to_string());
            }
        }
    }
    (serde_yaml_ng::to_string(&config).unwrap(), Targets { by_original })
}

/// A request of the corpus.
#[derive(Debug, Clone)]
struct Probe {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// Requests made from each route's match: its methods and one it lacks,
/// its host, headers and query conditions, with and without each API key,
/// and a CORS preflight; then a few that match nothing or are not canonical.
fn corpus(config: &Value) -> Vec<Probe> {
    let keys: Vec<String> = config["consumers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|c| c["credentials"]["api_keys"].as_sequence())
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .filter(|k| !k.starts_with("sha256:"))
        .collect();
    let mut probes = Vec::new();
    for route in config["routes"].as_sequence().into_iter().flatten() {
        let matcher = &route["match"];
        let Some(pattern) = matcher["path"].as_str() else {
            continue;
        };
        if pattern.starts_with('~') {
            continue;
        }
        let mut path = String::new();
        for segment in pattern.trim_start_matches("= ").split('/').filter(|s| !s.is_empty()) {
            path.push('/');
            path.push_str(match segment {
                s if s.starts_with("{*") => "a/b",
                s if s.starts_with('{') => "7",
                s => s,
            });
        }
        if path.is_empty() {
            path.push('/');
        }
        let query: Vec<String> = matcher["query"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{}={}", k.as_str().unwrap_or(""), v.as_str().unwrap_or("")))
            .collect();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let mut headers: Vec<(String, String)> = matcher["headers"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap_or("").to_string(),
                    v.as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if let Some(host) = matcher["host"].as_str() {
            headers.push(("host".into(), host.replace("*.", "a.")));
        }
        let methods: Vec<String> = matcher["methods"]
            .as_sequence()
            .map(|m| m.iter().filter_map(|m| m.as_str().map(str::to_string)).collect())
            .unwrap_or_else(|| vec!["GET".into()]);
        let mut tried = methods.clone();
        if !tried.iter().any(|m| m == "DELETE") {
            tried.push("DELETE".into());
        }
        for method in &tried {
            probes.push(Probe {
                method: method.clone(),
                path: path.clone(),
                headers: headers.clone(),
            });
            for key in &keys {
                let mut keyed = headers.clone();
                keyed.push(("x-api-key".into(), key.clone()));
                probes.push(Probe {
                    method: method.clone(),
                    path: path.clone(),
                    headers: keyed,
                });
            }
        }
        let mut preflight = headers.clone();
        preflight.push(("origin".into(), "https://app.example.com".into()));
        preflight.push(("access-control-request-method".into(), methods[0].clone()));
        probes.push(Probe {
            method: "OPTIONS".into(),
            path: path.clone(),
            headers: preflight,
        });
    }
    for path in ["/", "/no/route/here", "/a/%2e%2e/b", "/x;y", "/../up"] {
        probes.push(Probe {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
        });
    }
    probes
}

fn marked(path: &str, n: usize) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}portico-parity={n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_the_live_gateway_agree_on_every_example() {
    let mut redis = None;
    let mut checked = 0;
    let mut examples: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    let mut disagreements = Vec::new();
    for example in &examples {
        let text = std::fs::read_to_string(example).unwrap();
        let (yaml, targets) = live_config(&text, &mut redis).await;
        let config: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        if config["listeners"].as_sequence().is_none_or(|l| l.is_empty()) {
            continue;
        }
        let gateway = Gateway::start(&yaml).await;
        for (n, probe) in corpus(&config).into_iter().enumerate() {
            let path = marked(&probe.path, n);
            let question = Question {
                method: probe.method.clone(),
                url: path.clone(),
                headers: probe.headers.iter().cloned().collect(),
                client_ip: None,
                listener: config["listeners"][0]["name"].as_str().map(str::to_string),
            };
            // Explained first, on the state the live request then meets.
            let explained = explain(&gateway.control.gateway(), &question).unwrap();
            let mut request = Request::builder().method(probe.method.as_str()).uri(gateway.url(&path));
            for (name, value) in &probe.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let live = send(request.body(Full::default()).unwrap()).await;
            let received = targets.receiver_of(n);
            let said = format!(
                "{}: {} {} {:?}\n  explain: {} {:?} {} (upstream {:?})\n  live: {} {:?}",
                example.display(),
                probe.method,
                path,
                probe.headers,
                explained.outcome,
                explained.status,
                explained.detail,
                explained.upstream.as_ref().map(|u| (&u.target, &u.path)),
                live.status,
                received
            );
            let agrees = match explained.outcome {
                "proxied" => {
                    let destination = explained
                        .upstream
                        .as_ref()
                        .expect("a proxied request has a destination");
                    let pool_targets: Vec<&str> = destination.targets.iter().map(|t| t.addr.as_str()).collect();
                    let deterministic = destination.targets.len() == 1;
                    match (&received, &destination.target) {
                        (Some((target, received_path)), Some(_)) => {
                            let live_addr = targets.by_original[target].addr.to_string();
                            *received_path == destination.path
                                && pool_targets.contains(&live_addr.as_str())
                                && (!deterministic || destination.target.as_deref() == Some(live_addr.as_str()))
                        }
                        // Targets the corpus cannot stand in for (a DNS name): the
                        // gateway must at least have tried, not refused.
                        (None, _) => {
                            let stood_in = targets
                                .by_original
                                .values()
                                .any(|u| pool_targets.contains(&u.addr.to_string().as_str()));
                            !stood_in && !live.status.is_client_error()
                        }
                        (Some(_), None) => false,
                    }
                }
                "aggregated" => live.status.is_success() || live.status.is_server_error(),
                _ => explained.status == Some(live.status.as_u16()) && received.is_none(),
            };
            if !agrees {
                disagreements.push(said);
            }
            checked += 1;
        }
    }
    assert!(checked > 150, "the corpus is {checked} requests");
    assert!(
        disagreements.is_empty(),
        "{} of {checked} requests disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
