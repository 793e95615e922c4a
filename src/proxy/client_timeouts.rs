//! The listener's client timeouts, enforced on the connection's byte stream
//! with one timer per connection:
//!
//! - `idle`: no request in flight and no bytes moving (keep-alive and silent
//!   connections);
//! - `header_read`: the first bytes of a request head arrived, while no
//!   request was in flight, and the head is still not complete (slowloris).
//!
//! The head's bytes are also watched for ambiguous framing (`framing`).
//!
//! hyper can bound the head itself, but with a new timer for every request,
//! and a timer due before all others makes tokio wake its driver through an
//! eventfd: one extra syscall and wake-up per request. Here the timer is
//! re-armed only when it fires, to the earliest deadline then pending.

use super::framing::HeadScan;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests on one connection, counted by the service and read by the
/// connection's I/O.
#[derive(Debug, Default)]
pub struct ActiveRequests {
    in_flight: AtomicUsize,
    /// Requests begun so far: a change means a head was read whole.
    started: AtomicUsize,
    /// The number (counted from 1) of a request whose head had both
    /// `Content-Length` and `Transfer-Encoding`; 0 for none.
    ambiguous: AtomicUsize,
}

impl ActiveRequests {
    pub fn begin(self: &Arc<Self>) -> RequestActive {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        RequestActive(self.clone(), number)
    }

    fn any(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }
}

/// Held by a request until its response body is done; knows its number
/// on the connection.
#[derive(Debug)]
pub struct RequestActive(Arc<ActiveRequests>, usize);

impl RequestActive {
    /// True when this request's head had both `Content-Length` and
    /// `Transfer-Encoding` (seen on the wire; hyper keeps only one).
    pub fn framing_ambiguous(&self) -> bool {
        self.0.ambiguous.load(Ordering::Relaxed) == self.1
    }
}

impl Drop for RequestActive {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client stream that ends (reads EOF) when a timeout passes.
pub struct ClientTimeouts<T> {
    inner: T,
    active: Arc<ActiveRequests>,
    idle: Duration,
    header_read: Duration,
    /// When bytes of a request head started arriving with no request in
    /// flight, and how many requests had begun then: once another begins,
    /// that head was read whole.
    head_started: Option<(Instant, usize)>,
    /// Watches the head being read for ambiguous framing; `None` between
    /// heads, and for good once the connection proves to be HTTP/2.
    scan: Option<HeadScan>,
    http2: bool,
    timer: Pin<Box<Sleep>>,
    /// When bytes last moved. The timer is re-armed from it only when it
    /// fires, not on every read and write, which keeps timer-wheel updates
    /// off the hot path.
    last_activity: Instant,
}

impl<T> ClientTimeouts<T> {
    pub fn new(inner: T, active: Arc<ActiveRequests>, idle: Duration, header_read: Duration) -> ClientTimeouts<T> {
        ClientTimeouts {
            inner,
            active,
            idle,
            header_read,
            head_started: None,
            scan: None,
            http2: false,
            timer: Box::pin(tokio::time::sleep(idle.min(header_read))),
            last_activity: Instant::now(),
        }
    }

    /// Forgets a head that has since been read whole.
    fn forget_finished_head(&mut self) {
        if self.active.any()
            || self
                .head_started
                .is_some_and(|(_, begun)| begun != self.active.started())
        {
            self.head_started = None;
        }
    }

    fn record_read(&mut self, read: &[u8]) {
        let now = Instant::now();
        self.last_activity = now;
        self.forget_finished_head();
        if self.head_started.is_none() {
            self.scan = None;
            if !self.active.any() {
                self.head_started = Some((now, self.active.started()));
                // The HTTP/2 preface starts like a request line; frames are not heads.
                self.http2 |= read.starts_with(b"PRI * HTTP/2.0");
                self.scan = (!self.http2).then(HeadScan::default);
            }
        }
        if let Some(scan) = &mut self.scan {
            if let Some(ambiguous) = scan.feed(read) {
                self.scan = None;
                if let (true, Some((_, begun))) = (ambiguous, self.head_started) {
                    // This head becomes the connection's next request.
                    self.active.ambiguous.store(begun + 1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The earliest deadline pending, or `None` while a request is in flight
    /// (its own timeouts apply then).
    fn deadline(&mut self) -> Option<Instant> {
        self.forget_finished_head();
        if self.active.any() {
            return None;
        }
        let idle = self.last_activity + self.idle;
        Some(match self.head_started {
            Some((started, _)) => idle.min(started + self.header_read),
            None => idle,
        })
    }

    /// True when a timeout has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let next = match self.deadline() {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => deadline,
                None => now + self.idle,
            };
            // A head may start any moment: check again within `header_read`
            // so its deadline is never missed.
            self.timer.as_mut().reset(next.min(now + self.header_read));
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientTimeouts<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.record_read(&buf.filled()[before..]);
                }
                Poll::Ready(result)
            }
            // Reading EOF makes hyper close the connection cleanly.
            Poll::Pending if self.expired(cx) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientTimeouts<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last_activity = Instant::now();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last_activity = Instant::now();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
