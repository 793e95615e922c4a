//! What a plugin that stands around the upstream call (a response cache) is
//! given and gives back. The core hands it the request and an [`Upstream`]
//! to call; the plugin answers from what it has or through that call, and may
//! leave work for after the answer ([`Later`], a background refresh), which
//! the core runs with an upstream call of its own. The core names no such
//! plugin: it asks the route's chain whether one stands there.

use crate::body::ResponseBody;
use crate::context::RequestContext;
use crate::error::ProxyError;
use http::Response;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The upstream call as the core offers it: each call sends one request head
/// (the client's body goes with the first), and the answer comes back through
/// the route's response phases.
pub trait Upstream: Send {
    fn send(&mut self, head: http::request::Parts) -> BoxFuture<'_, Result<Response<ResponseBody>, ProxyError>>;
}

/// The answer, and what is left to do once it has gone.
pub type Answered = (Response<ResponseBody>, Option<Box<dyn Later>>);

/// A plugin's part around the upstream call.
pub trait AroundUpstream: Send + Sync {
    fn serve<'a>(
        &'a self,
        request: &'a http::request::Parts,
        ctx: &'a RequestContext<'_>,
        upstream: &'a mut dyn Upstream,
    ) -> BoxFuture<'a, Result<Answered, ProxyError>>;
}

/// Work left for after the answer, run in the background with the request's
/// head, a context made from its own ([`crate::context::Carried`]), and an
/// upstream call of its own.
pub trait Later: Send {
    fn run<'a>(
        self: Box<Self>,
        request: &'a http::request::Parts,
        ctx: &'a RequestContext<'_>,
        upstream: &'a mut dyn Upstream,
    ) -> BoxFuture<'a, ()>;
}
