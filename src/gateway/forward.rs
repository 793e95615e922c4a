//! How a route sends requests to its upstream: the compiled form that the
//! upstream exchange, aggregate calls and transcoding all use.

use crate::proxy::rewrite::Rewrite;
use crate::upstream::{RetryPolicy, Timeouts, UpstreamPool};
use std::sync::Arc;
use std::time::Duration;

/// How a route sends requests to its upstream.
#[derive(Debug)]
pub struct Forward {
    pub pool: Arc<UpstreamPool>,
    /// The pool's timeouts with the route's overrides applied.
    pub timeouts: Timeouts,
    /// The whole exchange up to the response head, retries included.
    pub request_timeout: Option<Duration>,
    /// The route's retry policy, or else the pool's.
    pub retry: Option<RetryPolicy>,
    pub rewrite: Rewrite,
    pub preserve_host: bool,
    /// `grpc_transcode`: JSON requests become gRPC calls.
    pub transcode: Option<Arc<crate::transcode::Transcoder>>,
}
