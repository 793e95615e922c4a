//! A listener's open connections, told together to finish: each ends the
//! request it is serving and takes no more (an idle HTTP/1.1 connection
//! closes, an HTTP/2 one sends GOAWAY).
//!
//! hyper-util's `GracefulShutdown` tells them through a watch channel whose
//! `changed()` future each connection polls every time it is woken: twice a
//! request, ~500 instructions (bench/instructions.py). Here a connection
//! reads one flag a poll and leaves its task's waker in an `AtomicWaker`,
//! which takes no lock; the registry's lock is taken only when a connection
//! opens or closes.

use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use tokio::sync::Notify;

/// The open connections of one listener.
#[derive(Default)]
pub struct Connections {
    closing: AtomicBool,
    next_id: AtomicU64,
    /// Each open connection's waker, to wake it when `closing` is set.
    open: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
    /// Told when the last connection closes.
    all_closed: Notify,
}

impl Connections {
    /// Counts a connection from now (its TLS handshake included) until the
    /// returned entry is dropped.
    pub fn track(self: &Arc<Self>) -> Tracked {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        self.lock().insert(id, waker.clone());
        Tracked {
            connections: self.clone(),
            id,
            waker,
        }
    }

    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Tells every connection, open now or opened later, to finish, and
    /// waits until all have closed.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for waker in self.lock().values() {
            waker.wake();
        }
        loop {
            // Made before the count is read, so a close in between still wakes it.
            let closed = self.all_closed.notified();
            if self.count() == 0 {
                return;
            }
            closed.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<AtomicWaker>>> {
        // A poisoned lock only means a panic elsewhere; the map is still whole.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's entry, removed when it closes.
pub struct Tracked {
    connections: Arc<Connections>,
    id: u64,
    waker: Arc<AtomicWaker>,
}

impl Tracked {
    /// Serves `connection` to its end; once the listener is closing,
    /// `shutdown` is called on it once and it is polled until it finishes.
    pub async fn serve<C: Future>(self, connection: C, shutdown: impl FnOnce(Pin<&mut C>)) -> C::Output {
        let mut connection = pin!(connection);
        let mut shutdown = Some(shutdown);
        // The waker left last: a task's stays the same from poll to poll,
        // and registering it again costs two locked instructions a poll.
        // Only `shutdown` wakes it, having set `closing` first, which the
        // poll it wakes reads.
        let mut registered: Option<Waker> = None;
        std::future::poll_fn(|cx| {
            if shutdown.is_some() {
                if !registered.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                    self.waker.register(cx.waker());
                    registered = Some(cx.waker().clone());
                }
                if self.connections.closing.load(Ordering::SeqCst) {
                    if let Some(shutdown) = shutdown.take() {
                        shutdown(connection.as_mut());
                    }
                }
            }
            connection.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.remove(&self.id);
        if open.is_empty() {
            self.connections.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection that runs until told to shut down, then ends after a while.
    async fn served(connections: Arc<Connections>, told: Arc<AtomicBool>) {
        let connection = async {
            while !told.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        connections
            .track()
            .serve(connection, |_| told.store(true, Ordering::SeqCst))
            .await
    }

    #[tokio::test]
    async fn shutdown_tells_each_connection_once_and_waits_for_them() {
        let connections = Arc::new(Connections::default());
        let told: Vec<_> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let tasks: Vec<_> = told
            .iter()
            .map(|t| tokio::spawn(served(connections.clone(), t.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(connections.count(), 3);
        assert!(
            told.iter().all(|t| !t.load(Ordering::SeqCst)),
            "told before the shutdown"
        );
        tokio::time::timeout(Duration::from_secs(5), connections.shutdown())
            .await
            .expect("shutdown waits for the connections, then returns");
        assert!(told.iter().all(|t| t.load(Ordering::SeqCst)));
        assert_eq!(connections.count(), 0);
        for task in tasks {
            assert!(task.is_finished());
        }
        // One opened after the shutdown is told at its first poll.
        let late = Arc::new(AtomicBool::new(false));
        tokio::time::timeout(Duration::from_secs(5), served(connections.clone(), late.clone()))
            .await
            .expect("a late connection is told too");
        assert!(late.load(Ordering::SeqCst));
    }
}
