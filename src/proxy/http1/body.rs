//! A request body of declared length, read off the connection by its task
//! and handed to the request's session through a slot they share: the
//! session asks (its poll finds the slot empty), the connection reads and
//! fills it, then polls the session again. Both run in the connection's
//! task, so the hand-over costs no wake-up; a body read elsewhere (another
//! task) is woken.

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncRead;

/// The session's side: the body as `http_body` sees it.
pub struct RequestBody {
    shared: Arc<Mutex<Slot>>,
}

/// The connection's side.
pub(super) struct Feed {
    shared: Arc<Mutex<Slot>>,
    /// Bytes of the body still on the wire (or in the read buffer).
    unread: u64,
}

#[derive(Default)]
struct Slot {
    data: Option<Bytes>,
    /// Bytes not yet handed over, `data` included.
    left: u64,
    /// The session waits for data.
    wanted: bool,
    /// Who waits: the task reading the body.
    waker: Option<Waker>,
    /// The connection's task, which feeds the body: woken when another task
    /// (an HTTP/2 upstream's connection) asks for it.
    feeder: Option<Waker>,
    /// The client closed the connection before the body was whole.
    cut: bool,
}

/// The body for the session, and the feed that reads it. What `read` holds
/// of it already (a small body comes with its head) is in the slot at once,
/// so that the session finds it at its first look: an upstream request then
/// leaves with its body, and a body a plugin refuses never leaves at all.
pub(super) fn channel(length: u64, read: &mut BytesMut) -> (RequestBody, Feed) {
    let mut feed = Feed {
        shared: Arc::new(Mutex::new(Slot {
            left: length,
            ..Slot::default()
        })),
        unread: length,
    };
    if !read.is_empty() {
        let data = take(&mut feed.unread, read);
        lock(&feed.shared).data = Some(data);
    }
    (
        RequestBody {
            shared: feed.shared.clone(),
        },
        feed,
    )
}

/// The body's bytes at the front of `read`, of the `unread` still to come.
fn take(unread: &mut u64, read: &mut BytesMut) -> Bytes {
    let take = read.len().min(usize::try_from(*unread).unwrap_or(usize::MAX));
    *unread -= take as u64;
    read.split_to(take).freeze()
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // Neither side panics while holding it; a poisoned slot is still whole.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The client left in the middle of its body.
#[derive(Debug, thiserror::Error)]
#[error("the client closed the connection before sending the whole body")]
pub struct Cut;

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        let mut slot = lock(&self.shared);
        if let Some(data) = slot.data.take() {
            slot.left -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if slot.left == 0 {
            return Poll::Ready(None);
        }
        if slot.cut {
            return Poll::Ready(Some(Err(Cut)));
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        if !std::mem::replace(&mut slot.wanted, true) {
            if let Some(feeder) = slot.feeder.as_ref().filter(|f| !f.will_wake(cx.waker())) {
                feeder.wake_by_ref();
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.shared).left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(lock(&self.shared).left)
    }
}

impl Feed {
    /// When the session waits for the body, hands it what `read` holds of
    /// it, or reads more: `Ready` once the session has something new to
    /// find (data, or that the client left), so that it is polled again.
    pub(super) fn poll_feed<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        read: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if self.unread == 0 {
            return Poll::Pending;
        }
        let mut slot = lock(&self.shared);
        if !slot.feeder.as_ref().is_some_and(|f| f.will_wake(cx.waker())) {
            slot.feeder = Some(cx.waker().clone());
        }
        if !slot.wanted || slot.data.is_some() || slot.cut {
            return Poll::Pending;
        }
        // What has arrived since goes too: a body is handed over in frames
        // as large as the reads, as hyper's are (a decompression limit, say,
        // judges a bomb by its first frame, before anything goes upstream).
        if (read.len() as u64) < self.unread {
            match super::fill(io, read, cx) {
                Poll::Ready(Ok(1..)) | Poll::Pending => {}
                Poll::Ready(_) => slot.cut = read.is_empty(),
            }
            if read.is_empty() && !slot.cut {
                return Poll::Pending;
            }
        }
        if !slot.cut {
            slot.data = Some(take(&mut self.unread, read));
        }
        slot.wanted = false;
        // Read in another task (the session's own needs no wake: it is
        // polled again at once).
        if let Some(waker) = slot.waker.as_ref().filter(|w| !w.will_wake(cx.waker())) {
            waker.wake_by_ref();
        }
        Poll::Ready(())
    }

    /// Drops what `read` holds of a body the session did not read whole;
    /// what is left on the wire is `unread` after.
    pub(super) fn discard_buffered(&mut self, read: &mut BytesMut) {
        drop(take(&mut self.unread, read));
    }

    /// Bytes of the body still to come off the wire.
    pub(super) fn unread(&self) -> u64 {
        self.unread
    }
}
