//! The edge guarantees, tried as an attacker would: each case asserts what
//! the upstream received (or that nothing reached it), not only the status
//! the client saw. One file a class: the canonical path, the authority, the
//! trusted headers, cache privacy, client deadlines and upgrades, framing,
//! and the smaller holes of the same kind.

mod authority;
mod cache;
mod deadlines;
mod framing;
mod paths;
mod smaller;
mod trust;

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

/// A request over HTTP/2 by prior knowledge (h2c): the status and body.
pub async fn h2(request: Request<Full<Bytes>>) -> (u16, String) {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let response = client.request(request).await.expect("an HTTP/2 answer");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The status line's code of a raw HTTP/1.1 exchange (the first answer).
pub fn status_of(raw: &str) -> u16 {
    raw.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// Every status line in a raw answer, in order (pipelined requests).
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| raw[at + 9..at + 12].parse().ok())
        .collect()
}

/// An upstream that records requests and answers 200 `ok`.
pub async fn recording() -> Upstream {
    Upstream::named("ok").await
}
