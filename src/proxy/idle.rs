//! Closes client connections that stay idle, with no request in flight, for
//! longer than the listener's `timeouts.idle`. hyper bounds the time to read a
//! request head but not the wait for the next one, which is what lets idle
//! keep-alive connections pile up.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in flight on one connection, counted by the service and read by
/// the connection's I/O.
#[derive(Debug, Default)]
pub struct ActiveRequests(AtomicUsize);

impl ActiveRequests {
    pub fn begin(self: &Arc<Self>) -> RequestActive {
        self.0.fetch_add(1, Ordering::Relaxed);
        RequestActive(self.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// Held by a request until its response body is done.
#[derive(Debug)]
pub struct RequestActive(Arc<ActiveRequests>);

impl Drop for RequestActive {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that ends (reads EOF) once idle for too long.
pub struct IdleTimeout<T> {
    inner: T,
    active: Arc<ActiveRequests>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// When bytes last moved. The timer is re-armed from it only when it
    /// fires, not on every read and write, which keeps timer-wheel updates
    /// off the hot path.
    last_activity: Instant,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, active: Arc<ActiveRequests>, idle: Duration) -> IdleTimeout<T> {
        IdleTimeout {
            inner,
            active,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            last_activity: Instant::now(),
        }
    }

    /// True when the connection has been idle past the limit.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = if self.active.any() {
                Instant::now() + self.idle
            } else {
                self.last_activity + self.idle
            };
            if deadline <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            // Reading EOF makes hyper close the connection cleanly.
            Poll::Pending if self.expired(cx) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
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
