//! The per-request context: what one request carries through the phases,
//! created when it arrives and shared by plugins, the cache, transforms and
//! aggregate calls. Work done for a request after it (a cache refresh) gets
//! its own by [`Carried::context`].

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

/// One request's state, created when it arrives and passed `&mut` through
/// every phase: the route and its parameters once routed, who is calling,
/// what the client sent, what plugins decided and noted, and what the
/// response must carry. The access-log entry beside it is written in place
/// by the same phases.
pub struct RequestContext<'a> {
    pub request_id: &'a HeaderValue,
    pub client: SocketAddr,
    /// The route's name, once routed (empty before).
    pub route: &'a str,
    /// The route's path parameters, once routed.
    pub params: Params,
    /// Who the request is, once the authenticate phase has found out.
    pub identity: Option<Identity>,
    /// What the client's own request said, before any plugin changed it.
    pub facts: ClientFacts,
    /// Headers to add to the response, whoever answers (upstream, plugin, error).
    pub response_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The upstream the route sends to, if it proxies.
    pub upstream: Option<&'a str>,
    /// The path the service receives, when the route's `rewrite` changed it.
    /// Borrowed from the route when its rewrite is a fixed path.
    pub upstream_path: Option<std::borrow::Cow<'a, str>>,
    /// The certificate the client presented over TLS, verified (mTLS).
    pub client_certificate: Option<&'a crate::proxy::tls::ClientCertificate>,
    /// Kept until the response body has been sent (concurrency permits).
    pub holds: Vec<Box<dyn Send + Sync>>,
    /// What plugins note for this request between their hooks (what
    /// `compression` negotiated), one value per type.
    pub notes: http::Extensions,
}

impl<'a> RequestContext<'a> {
    /// A request's context as it arrives: not routed yet.
    pub fn arrived(request_id: &'a HeaderValue, client: SocketAddr) -> RequestContext<'a> {
        RequestContext {
            request_id,
            client,
            route: "",
            params: Params::new(),
            identity: None,
            facts: ClientFacts::default(),
            response_headers: Vec::new(),
            upstream: None,
            upstream_path: None,
            client_certificate: None,
            holds: Vec::new(),
            notes: http::Extensions::new(),
        }
    }

    /// A request's context once routed, before any plugin has run (for
    /// `explain`, and for work done on a request's behalf).
    pub fn new(
        request_id: &'a HeaderValue,
        client: SocketAddr,
        route: &'a str,
        params: Params,
        upstream: Option<&'a str>,
    ) -> RequestContext<'a> {
        let mut ctx = RequestContext::arrived(request_id, client);
        ctx.routed(route, params, upstream);
        ctx
    }

    /// The request has been routed.
    pub fn routed(&mut self, route: &'a str, params: Params, upstream: Option<&'a str>) {
        self.route = route;
        self.params = params;
        self.upstream = upstream;
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
        let mut ctx = RequestContext::new(request_id, client, route, self.params.clone(), upstream);
        ctx.identity = self.identity.clone();
        ctx.facts = self.facts;
        ctx.notes = self.notes.clone();
        ctx
    }
}
