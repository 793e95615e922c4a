//! The HTTP client plugins use to reach identity providers (JWKS,
//! introspection): HTTPS through rustls with the Mozilla roots built in, or
//! plain HTTP, with a deadline and a bound on the answer's size.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;
use std::time::Duration;

/// Identity providers' answers larger than this are refused.
const MAX_ANSWER: usize = 1024 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One client for the process: its connection pool is shared.
fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider) {
            Ok(builder) => builder.https_or_http().enable_http1().build(),
            // ring supports the default protocol versions: not reached.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .build(),
        };
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// Checks a URL an identity provider is reached at: http or https, a host.
pub fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(_)) => Ok(uri),
        _ => Err(format!("{text:?} must be an http:// or https:// URL with a host")),
    }
}

/// Sends `request` and reads the answer: its status and body.
pub async fn send(request: Request<Full<Bytes>>, timeout: Duration) -> Result<(http::StatusCode, Bytes), String> {
    let exchange = async {
        let response = client().request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &Uri, timeout: Duration) -> Result<T, String> {
    let request = Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Full::default())
        .map_err(|e| e.to_string())?;
    let (status, body) = send(request, timeout).await?;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not the JSON expected: {e}"))
}
