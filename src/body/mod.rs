//! The bodies that cross the proxy: the client's request body on its way
//! upstream, and the response body on its way back. Both stream frame by frame;
//! neither is ever collected in memory.

pub mod filter;
pub mod pace;
mod request;
mod response;

pub use request::{Inbound, RequestBody, Wire};
pub use response::{OnDone, ResponseBody, UpstreamHold};

use http_body::SizeHint;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The size of `ahead` bytes followed by a body of size `rest`.
fn after(ahead: u64, rest: SizeHint) -> SizeHint {
    let mut total = SizeHint::new();
    total.set_lower(rest.lower() + ahead);
    if let Some(upper) = rest.upper() {
        total.set_upper(upper + ahead);
    }
    total
}

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("client request body failed: {0}")]
    Client(#[source] BoxError),
    #[error("upstream response body failed: {0}")]
    Upstream(#[source] BoxError),
    #[error("upstream sent nothing for {0:?} in the middle of the response body")]
    UpstreamIdle(Duration),
    #[error("the request body is not base64 (gRPC-Web text): {0}")]
    NotBase64(#[source] base64::DecodeError),
    #[error("a response body filter failed: {0}")]
    Filter(#[source] filter::FilterError),
}

/// How far the client's request body got: bytes received, and why it
/// stopped early if it did. Shared with the exchange, which must know a
/// failure was the client's even when the upstream connection reports it
/// only as a reset stream (HTTP/2).
#[derive(Debug, Default)]
pub struct BodyProgress {
    received: AtomicU64,
    /// A [`Fault`] as u8; 0 while none.
    fault: AtomicU8,
}

/// Why a client's body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    TooLarge = 1,
    Unreadable = 2,
    NotBase64 = 3,
    TooSlow = 4,
    /// A plugin's filter refused it ([`filter::Refusal`]).
    Refused = 5,
    RefusedDecompressed = 6,
    Undecodable = 7,
}

impl BodyProgress {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn fault(&self) -> Option<Fault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(Fault::TooLarge),
            2 => Some(Fault::Unreadable),
            3 => Some(Fault::NotBase64),
            4 => Some(Fault::TooSlow),
            5 => Some(Fault::Refused),
            6 => Some(Fault::RefusedDecompressed),
            7 => Some(Fault::Undecodable),
            _ => None,
        }
    }

    fn fail(&self, error: &BodyError) {
        if let Some(fault) = Fault::of(error) {
            self.fault.store(fault as u8, Ordering::Relaxed);
        }
    }
}

impl Fault {
    /// The client's part in a body error, if it was the client's.
    pub fn of(error: &BodyError) -> Option<Fault> {
        match error {
            BodyError::TooLarge { .. } => Some(Fault::TooLarge),
            BodyError::Client(e) if e.is::<pace::TooSlow>() => Some(Fault::TooSlow),
            BodyError::Client(e) => Some(match e.downcast_ref::<filter::Refusal>() {
                Some(filter::Refusal::TooLarge) => Fault::Refused,
                Some(filter::Refusal::DecompressedTooLarge) => Fault::RefusedDecompressed,
                Some(filter::Refusal::Undecodable) => Fault::Undecodable,
                None => Fault::Unreadable,
            }),
            BodyError::NotBase64(_) => Some(Fault::NotBase64),
            BodyError::Upstream(_) | BodyError::UpstreamIdle(_) | BodyError::Filter(_) => None,
        }
    }
}
