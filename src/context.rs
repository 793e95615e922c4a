//! The per-request context: what one request carries through the phases,
//! created when it is routed and shared by plugins, the cache, transforms and
//! aggregate calls (each of those gets its own by [`RequestContext::new`], or
//! by [`Carried::context`] for work done for the request after it).

use crate::consumers::Identity;
use crate::router::Params;
use http::HeaderValue;
use std::net::SocketAddr;

/// What the client's own request said, before any plugin changed it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientFacts {
    /// The client sent `Authorization`: the cache decides storability on
    /// that (RFC 9111 section 3.5), whatever a plugin removed since.
    pub sent_authorization: bool,
    /// The request has a body, however it is framed (`Content-Length`,
    /// chunked, HTTP/2 or HTTP/3 DATA): every body check goes by this.
    pub has_body: bool,
}

/// Per-request state shared by the phases.
pub struct RequestContext<'a> {
    pub request_id: &'a HeaderValue,
    pub client: SocketAddr,
    pub route: &'a str,
    pub params: &'a Params,
    /// Who the request is, once the authenticate phase has found out.
    pub identity: Option<Identity>,
    /// What the client's own request said, before any plugin changed it.
    pub facts: ClientFacts,
    /// Headers to add to the response, whoever answers (upstream, plugin, error).
    pub response_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The upstream the route sends to, if it proxies.
    pub upstream: Option<&'a str>,
    /// The path the service receives, when the route's `rewrite` changed it.
    pub upstream_path: Option<&'a str>,
    /// The certificate the client presented over TLS, verified (mTLS).
    pub client_certificate: Option<&'a crate::proxy::tls::ClientCertificate>,
    /// Kept until the response body has been sent (concurrency permits).
    pub holds: Vec<Box<dyn Send + Sync>>,
    /// What plugins note for this request between their hooks (what
    /// `compression` negotiated), one value per type.
    pub notes: http::Extensions,
}

impl<'a> RequestContext<'a> {
    /// A request's context before any phase has run.
    pub fn new(
        request_id: &'a HeaderValue,
        client: SocketAddr,
        route: &'a str,
        params: &'a Params,
        upstream: Option<&'a str>,
    ) -> RequestContext<'a> {
        RequestContext {
            request_id,
            client,
            route,
            params,
            identity: None,
            facts: ClientFacts::default(),
            response_headers: Vec::new(),
            upstream,
            upstream_path: None,
            client_certificate: None,
            holds: Vec::new(),
            notes: http::Extensions::new(),
        }
    }
}

/// What a request's context hands on to work done for it afterwards (a
/// cache refresh in the background): whom it was for, and what plugins
/// noted of it, so that the work keys, checks and shapes its answer as the
/// request would have.
#[derive(Clone)]
pub struct Carried {
    params: Params,
    identity: Option<Identity>,
    facts: ClientFacts,
    notes: http::Extensions,
}

impl RequestContext<'_> {
    pub fn carried(&self) -> Carried {
        Carried {
            params: self.params.clone(),
            identity: self.identity.clone(),
            facts: self.facts,
            notes: self.notes.clone(),
        }
    }
}

impl Carried {
    /// The context of the work done for the request.
    pub fn context<'a>(
        &'a self,
        request_id: &'a HeaderValue,
        client: SocketAddr,
        route: &'a str,
        upstream: Option<&'a str>,
    ) -> RequestContext<'a> {
        let mut ctx = RequestContext::new(request_id, client, route, &self.params, upstream);
        ctx.identity = self.identity.clone();
        ctx.facts = self.facts;
        ctx.notes = self.notes.clone();
        ctx
    }
}
