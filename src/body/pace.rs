//! The slowest a client may send its request body (slow POST, "R-U-Dead-Yet"):
//! no gap between its bytes longer than `body_read`, and, once `grace` of
//! waiting has passed, an average of at least `per_second` bytes.
//!
//! Only the time spent waiting for the client counts: while the upstream is
//! slow to take the body, the gateway is not polling it, and the client is
//! not to blame. Bodies that arrive with their head never wait, so they
//! never touch a timer or the clock.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A listener's pace for request bodies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Longest wait for the next bytes.
    pub body_read: Duration,
    pub min_rate: Option<MinRate>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinRate {
    pub per_second: u64,
    pub grace: Duration,
}

/// The client sent its body too slowly; answered 408.
#[derive(Debug, thiserror::Error)]
#[error("the client sent its request body too slowly")]
pub struct TooSlow;

/// A body held to a [`Pace`].
pub struct Paced<B> {
    body: B,
    pace: Pace,
    received: u64,
    /// Time spent waiting for the client so far, not counting the current wait.
    waited: Duration,
    /// When the current wait began.
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Paced<B> {
    pub fn new(body: B, pace: Pace) -> Paced<B> {
        Paced {
            body,
            pace,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    /// When the wait that began at `since` becomes too long.
    fn deadline(&self, since: Instant) -> Instant {
        let gap = since + self.pace.body_read;
        match self.pace.min_rate {
            None => gap,
            Some(rate) => {
                // The total wait the bytes so far pay for, never less than the grace.
                let earned = Duration::from_secs_f64(self.received as f64 / rate.per_second.max(1) as f64);
                let allowed = earned.max(rate.grace).saturating_sub(self.waited);
                gap.min(since + allowed)
            }
        }
    }

    /// Too slow on average, judged when bytes arrive.
    fn below_rate(&self) -> bool {
        self.pace.min_rate.is_some_and(|rate| {
            self.waited > rate.grace && (self.received as f64) < rate.per_second as f64 * self.waited.as_secs_f64()
        })
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    this.received += data.map_or(0, |d| d.len() as u64);
                    if this.below_rate() {
                        return Poll::Ready(Some(Err(TooSlow.into())));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let deadline = this.deadline(since);
                if deadline <= now {
                    return Poll::Ready(Some(Err(TooSlow.into())));
                }
                let timer = match &mut this.timer {
                    Some(timer) => {
                        if timer.deadline() != deadline {
                            timer.as_mut().reset(deadline);
                        }
                        timer
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(TooSlow.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::channel::{Channel, Sender};
    use http_body_util::BodyExt;

    type Infallible = std::convert::Infallible;

    fn paced(pace: Pace) -> (Sender<Bytes, Infallible>, Paced<Channel<Bytes, Infallible>>) {
        let (send, body) = Channel::new(16);
        (send, Paced::new(body, pace))
    }

    const PACE: Pace = Pace {
        body_read: Duration::from_secs(10),
        min_rate: Some(MinRate {
            per_second: 100,
            grace: Duration::from_secs(2),
        }),
    };

    async fn next(body: &mut (impl Body<Data = Bytes, Error = BoxError> + Unpin)) -> Result<Option<Bytes>, bool> {
        match body.frame().await {
            None => Ok(None),
            Some(Ok(frame)) => Ok(frame.into_data().ok()),
            Some(Err(error)) => Err(error.is::<TooSlow>()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes_and_a_trickle_is_cut() {
        let (mut send, mut body) = paced(PACE);
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = send.send_data(Bytes::from(vec![b'x'; 250])).await;
            }
        });
        for _ in 0..5 {
            assert_eq!(next(&mut body).await.map(|b| b.map(|b| b.len())), Ok(Some(250)));
        }
        assert_eq!(next(&mut body).await, Ok(None));
        feeder.await.expect("feeder");

        // 10 bytes a second, below the 100 required once the 2 s grace is over.
        let (send, mut body) = paced(PACE);
        tokio::spawn(async move {
            let mut send = send;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if send.send_data(Bytes::from_static(b"0123456789")).await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let outcome = loop {
            match next(&mut body).await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        assert_eq!(outcome, Err(true));
        assert!(started.elapsed() <= Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_longer_than_body_read_is_cut() {
        let pace = Pace {
            body_read: Duration::from_secs(3),
            min_rate: None,
        };
        let (mut send, mut body) = paced(pace);
        send.send_data(Bytes::from_static(b"a")).await.expect("send");
        assert_eq!(next(&mut body).await, Ok(Some(Bytes::from_static(b"a"))));
        let started = Instant::now();
        assert_eq!(next(&mut body).await, Err(true));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(send);
    }

    #[tokio::test(start_paused = true)]
    async fn time_not_spent_waiting_for_the_client_does_not_count() {
        let (mut send, mut body) = paced(PACE);
        for _ in 0..3 {
            send.send_data(Bytes::from_static(b"abc")).await.expect("send");
        }
        drop(send);
        // The reader (a slow upstream) takes its time; the client had sent it all.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(next(&mut body).await, Ok(Some(Bytes::from_static(b"abc"))));
        }
        assert_eq!(next(&mut body).await, Ok(None));
    }
}
