//! Upgraded connections (WebSocket): once the target answers 101, the
//! client's and the target's connections are joined and bytes copied both
//! ways until either side closes or neither sends anything for the idle
//! timeout. Counted in the route's metrics. HTTP/2 clients upgrade a stream
//! (RFC 8441), which is joined to an HTTP/1.1 upgrade upstream.

use super::client_timeouts::RequestActive;
use crate::telemetry::metrics::{RouteMetrics, UpgradeEnd};
use crate::upstream::http1::Upgraded;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// An HTTP/2 extended CONNECT for WebSocket (RFC 8441) made into the
/// HTTP/1.1 handshake upstreams expect: a GET with `Upgrade: websocket`
/// and a fresh `Sec-WebSocket-Key` (HTTP/2 clients send none). Routes see
/// it as the GET it stands for. Returns whether it was one.
pub fn from_extended_connect(parts: &mut http::request::Parts) -> bool {
    let websocket = parts.method == Method::CONNECT
        && parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return false;
    }
    parts.method = Method::GET;
    let headers = &mut parts.headers;
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    if let Ok(key) = HeaderValue::from_str(&STANDARD.encode(nonce)) {
        headers.insert(SEC_WEBSOCKET_KEY, key);
    }
    true
}

/// The target's 101 told to an HTTP/2 client: a 200 on the stream, without
/// the HTTP/1.1 handshake's own headers.
pub fn to_extended_connect_answer(parts: &mut http::response::Parts) {
    parts.status = StatusCode::OK;
    for name in [CONNECTION, UPGRADE, SEC_WEBSOCKET_ACCEPT] {
        parts.headers.remove(name);
    }
}

/// Joins the two sides of an upgrade once both have completed, in a task of
/// its own. `busy` keeps the client connection's own timeouts off meanwhile.
pub fn bridge(
    client: OnUpgrade,
    upstream: Upgraded,
    idle: Duration,
    metrics: Option<Arc<RouteMetrics>>,
    busy: RequestActive,
) {
    tokio::spawn(async move {
        let _busy = busy;
        let Ok(client) = client.await else {
            tracing::debug!("the client's side of an upgrade did not complete");
            return;
        };
        let _open = metrics.as_ref().map(|m| m.upgrade_opened());
        let activity = Arc::new(Activity::new());
        let mut client = Counted::new(TokioIo::new(client), &activity);
        let mut upstream = Counted::new(upstream, &activity);
        let end = relay(&mut client, &mut upstream, &activity, idle).await;
        tracing::debug!(
            ?end,
            sent = client.read,
            received = upstream.read,
            "an upgraded connection ended"
        );
        if let Some(metrics) = metrics {
            metrics.upgrade_closed(end, client.read, upstream.read);
        }
    });
}

/// Copies both ways until one side closes, an error, or `idle` without a byte.
async fn relay<A, B>(a: &mut Counted<A>, b: &mut Counted<B>, activity: &Activity, idle: Duration) -> UpgradeEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let copying = tokio::io::copy_bidirectional(a, b);
    tokio::pin!(copying);
    loop {
        let quiet = activity.quiet();
        if quiet >= idle {
            return UpgradeEnd::IdleTimeout;
        }
        tokio::select! {
            copied = &mut copying => return match copied {
                Ok(_) => UpgradeEnd::Closed,
                Err(_) => UpgradeEnd::Error,
            },
            // Wakes when the idle time would run out if nothing was sent
            // since; the loop checks whether something was.
            _ = tokio::time::sleep(idle - quiet) => {}
        }
    }
}

/// When either side last sent a byte, shared by both directions.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// How long since the last byte.
    fn quiet(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// One side of the relay: counts the bytes read from it, and marks activity.
struct Counted<T> {
    inner: T,
    read: u64,
    activity: Arc<Activity>,
}

impl<T> Counted<T> {
    fn new(inner: T, activity: &Arc<Activity>) -> Counted<T> {
        Counted {
            inner,
            read: 0,
            activity: activity.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.read += read as u64;
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_quiet_relay_ends_at_the_idle_timeout_and_a_busy_one_does_not() {
        let (mut client, near) = tokio::io::duplex(64);
        let (far, mut server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        let (mut a, mut b) = (Counted::new(near, &activity), Counted::new(far, &activity));
        let relay = tokio::spawn(async move {
            let end = relay(&mut a, &mut b, &activity, Duration::from_secs(10)).await;
            (end, a.read, b.read)
        });
        // Activity every 6 s keeps it open past the 10 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(b"pong!").await.unwrap();
            let mut back = [0u8; 5];
            client.read_exact(&mut back).await.unwrap();
        }
        let (end, up, down) = relay.await.unwrap();
        assert_eq!(end, UpgradeEnd::IdleTimeout);
        assert_eq!((up, down), (12, 15));
    }
}
