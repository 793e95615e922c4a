//! A fuzzer over the request head as Portico takes it in: the framing
//! watch on the raw bytes (fed in random pieces), httparse (hyper's parser),
//! then the canonical request (authority, path, trusted headers) under each
//! path policy. Run for a fixed budget from `bench/fuzz.sh`, not in CI.
//!
//! Heads are made from the pieces attacks are made of (dot segments,
//! escaped and raw separators, `;`, absolute-form, doubled Host, Connection
//! naming trusted headers, Upgrade tokens) and then mutated byte by byte.
//! Each is checked for: no panic; the same framing verdict however the
//! bytes arrive; and, when the request is canonical, a path that is its own
//! canonical form with no `//`, `\`, or dot segment, at most one Host, no
//! trusted header, and `Connection` saying at most `upgrade`.
//!
//! Usage: cargo run --release --example fuzz_head -- [SECONDS] [SEED]

use http::{HeaderName, Request, Version};
use portico::proxy::canonical::canonicalise_with;
use portico::proxy::forward::NameSet;
use portico::proxy::framing::HeadScan;
use portico::router::{canonical_path, EscapedSlashes, PathPolicy, Semicolons};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

const PATH_PIECES: &[&str] = &[
    "/",
    "//",
    "api",
    "admin",
    "users",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%2F",
    "%2f",
    "%5C",
    "\\",
    ";",
    ";x=1",
    "%3B",
    "%61dmin",
    "%00",
    "%zz",
    "%",
    "x",
    "%20",
    "~",
    "?",
    "?a=1&b=..%2F",
    "#",
    "%25",
    "%252e",
];
const HOSTS: &[&str] = &[
    "api.example.com",
    "API.Example.com:80",
    "user@api.example.com",
    "api.example.com:",
    "api.example.com:99999",
    "api.example.com:80x",
    "[::1]:8080",
    "[::1",
    "",
    "a b",
    "api.example.com/x",
];
const HEADERS: &[&str] = &[
    "Connection: x-consumer-name, upgrade",
    "Connection: keep-alive, te",
    "Upgrade: h2c",
    "Upgrade: websocket",
    "Upgrade: WebSocket, h2c",
    "TE: trailers, gzip",
    "X-Consumer-Name: admin",
    "X-User-Id: victim",
    "X-Client-Cert-Subject: CN=forged",
    "Forwarded: for=10.0.0.1",
    "X-Real-IP: 10.0.0.1",
    "X-Forwarded-Prefix: /admin",
    "Via: 1.1 evil",
    "Content-Length: 5",
    "Transfer-Encoding: chunked",
    "Content-Length : 5",
    "Transfer-Encoding:\tchunked",
    "Authorization: Bearer x",
];
const TRUSTED: &[&str] = &["x-consumer-name", "x-user-id", "x-client-cert-subject"];

fn pick<'a>(list: &[&'a str]) -> &'a str {
    list[fastrand::usize(..list.len())]
}

/// A head built from attack pieces.
fn generate() -> Vec<u8> {
    let method = pick(&["GET", "POST", "OPTIONS", "CONNECT", "G\0T", "get"]);
    let mut target: String = (0..fastrand::usize(0..10)).map(|_| pick(PATH_PIECES)).collect();
    if !target.starts_with('/') || fastrand::u8(..8) == 0 {
        target.insert(0, '/');
    }
    if fastrand::u8(..5) == 0 {
        target = format!("http://{}{target}", pick(HOSTS));
    }
    let version = pick(&["HTTP/1.1", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0"]);
    let mut head = format!("{method} {target} {version}\r\n");
    for _ in 0..fastrand::usize(0..3) {
        head.push_str(&format!("Host: {}\r\n", pick(HOSTS)));
    }
    for _ in 0..fastrand::usize(0..6) {
        head.push_str(pick(HEADERS));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    // Then a few byte-level mutations.
    for _ in 0..fastrand::usize(0..3) {
        if bytes.is_empty() {
            break;
        }
        let at = fastrand::usize(..bytes.len());
        match fastrand::u8(..3) {
            0 => bytes[at] = fastrand::u8(..),
            1 => {
                bytes.remove(at);
            }
            _ => bytes.insert(
                at,
                pick(&["\r", "\n", " ", ":", "/", "%", "\\", ";", "."]).as_bytes()[0],
            ),
        }
    }
    bytes
}

/// The framing verdict, the bytes fed in random pieces.
fn scan(bytes: &[u8]) -> Option<bool> {
    let mut watch = HeadScan::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let take = fastrand::usize(1..=rest.len().min(16));
        if let Some(verdict) = watch.feed(&rest[..take]) {
            return Some(verdict);
        }
        rest = &rest[take..];
    }
    None
}

/// The request hyper would make of the head, if httparse takes it.
fn parse(bytes: &[u8]) -> Option<http::request::Parts> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Request::new(&mut fields);
    let httparse::Status::Complete(_) = head.parse(bytes).ok()? else {
        return None;
    };
    let mut builder = Request::builder()
        .method(head.method?)
        .uri(head.path?)
        .version(if head.version? == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    for field in head.headers.iter() {
        builder = builder.header(field.name, field.value);
    }
    builder.body(()).ok().map(|r| r.into_parts().0)
}

/// Checks one head; `Err` says which invariant broke.
fn check(bytes: &[u8], trusted: &[HeaderName], trusted_set: &NameSet, counts: &mut Counts) -> Result<(), String> {
    let first = scan(bytes);
    if scan(bytes) != first {
        return Err("the framing verdict depends on how the bytes arrive".into());
    }
    let Some(parts) = parse(bytes) else { return Ok(()) };
    counts.parsed += 1;
    for policy in [
        PathPolicy::default(),
        PathPolicy {
            escaped_slashes: EscapedSlashes::Decode,
            merge_slashes: false,
            semicolons: Semicolons::Keep,
        },
        PathPolicy {
            escaped_slashes: EscapedSlashes::Reject,
            ..PathPolicy::default()
        },
    ] {
        let mut request = http::Request::from_parts(clone(&parts), ()).into_parts().0;
        let Ok(_) = canonicalise_with(&mut request, &policy, fastrand::bool(), trusted_set) else {
            continue;
        };
        counts.canonical += 1;
        let path = request.uri.path();
        match canonical_path(path, &policy) {
            Ok(again) if again == path => {}
            other => return Err(format!("{path} is not its own canonical form: {other:?}")),
        }
        if path.contains('\\') || (policy.merge_slashes && path.contains("//")) {
            return Err(format!("{path} keeps a separator a service reads differently"));
        }
        if path.split('/').any(|segment| segment == "." || segment == "..") {
            return Err(format!("{path} keeps a dot segment"));
        }
        if request.uri.authority().is_some() || request.headers.get_all(http::header::HOST).iter().count() > 1 {
            return Err("more than one authority left".into());
        }
        if let Some(name) = trusted.iter().find(|name| request.headers.contains_key(*name)) {
            return Err(format!("{name} survived"));
        }
        if let Some(connection) = request.headers.get(http::header::CONNECTION) {
            if connection != "upgrade" {
                return Err(format!("Connection: {connection:?} survived"));
            }
        }
    }
    Ok(())
}

fn clone(parts: &http::request::Parts) -> http::request::Parts {
    let mut copy = Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

#[derive(Default)]
struct Counts {
    tried: u64,
    parsed: u64,
    canonical: u64,
    failures: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    fastrand::seed(seed);
    // Quiet panics: each is caught, counted and its input printed.
    std::panic::set_hook(Box::new(|_| {}));
    let trusted: Vec<HeaderName> = TRUSTED.iter().map(|n| HeaderName::from_static(n)).collect();
    let trusted_set = NameSet::new(trusted.clone());
    let mut counts = Counts::default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let bytes = generate();
            counts.tried += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| check(&bytes, &trusted, &trusted_set, &mut counts)));
            let failure = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(why)) => why,
                Err(_) => "panic".to_string(),
            };
            counts.failures += 1;
            if counts.failures <= 10 {
                println!("FAILURE ({failure}): {:?}", String::from_utf8_lossy(&bytes));
            }
        }
    }
    println!(
        "seed {seed}, {seconds} s: {} heads tried, {} parsed by httparse, {} canonical under a policy, {} failures",
        counts.tried, counts.parsed, counts.canonical, counts.failures
    );
    if counts.failures > 0 {
        std::process::exit(1);
    }
}
