//! Filling the store: the upstream's answer (or its 304 for a stale
//! entry) read, checked against what may be stored, made an entry with its
//! policy, and stored under its key or its variant's.

use super::entry::{self, Entry, Slot};
use super::headers::{cap_age, detached, detached_uri, has_validators, tags, vary_names, Directives};
use super::key::{self, Key};
use super::{upstream_head, Cache, Outcome, SECRET_HEADERS};
use crate::around::Upstream;
use crate::body::ResponseBody;
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::transform::{self, ReadAnswer};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_cache_semantics::{CacheOptions, CachePolicy};
use std::sync::Arc;
use std::time::SystemTime;

impl Cache {
    /// Goes upstream (conditionally, when `stale` has validators), stores
    /// what may be stored, and answers the client (a 304 when its own
    /// conditions hold). `primary` is the request's key, never a variant's:
    /// the answer's own `Vary` places it.
    pub(super) async fn fetch_and_store(
        &self,
        fetch: &mut dyn Upstream,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
        primary: &Key,
        stale: Option<&Entry>,
    ) -> Result<(Response<ResponseBody>, Outcome), ProxyError> {
        let mut upstream = upstream_head(request);
        if let Some(stale) = stale {
            if let Some(etag) = stale.headers.get(header::ETAG) {
                upstream.headers.insert(header::IF_NONE_MATCH, etag.clone());
            } else if let Some(modified) = stale.headers.get(header::LAST_MODIFIED) {
                upstream.headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
            }
        }
        let requested_at = crate::clock::system_now();
        let response = fetch.send(upstream).await?;
        let now = crate::clock::system_now();
        if let (Some(stale), StatusCode::NOT_MODIFIED) = (stale, response.status()) {
            // The stored body is still good: its headers are updated from the 304.
            let mut headers = stale.headers.clone();
            for (name, value) in response.headers() {
                if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                    headers.insert(name.clone(), value.clone());
                }
            }
            let refreshed = self.entry(
                request,
                ctx,
                stale.status,
                headers,
                stale.body.clone(),
                requested_at,
                now,
            );
            if let Some(entry) = refreshed {
                let answer = self.answer(&entry, request, now, Outcome::Revalidated);
                self.store_entry(primary, request, entry).await;
                return Ok((answer, Outcome::Revalidated));
            }
            return Ok((
                self.answer(stale, request, now, Outcome::Revalidated),
                Outcome::Revalidated,
            ));
        }
        let (parts, body) = response.into_parts();
        if !self.may_store(&parts) {
            return Ok((Response::from_parts(parts, body), Outcome::Miss));
        }
        let bytes = match transform::read_response(body, self.settings.max_body, false).await? {
            ReadAnswer::Whole(bytes) => bytes,
            // Too large to keep: it streams on, read-ahead first.
            ReadAnswer::TooLarge(body) => return Ok((Response::from_parts(parts, body), Outcome::Miss)),
        };
        match self.entry(
            request,
            ctx,
            parts.status,
            parts.headers.clone(),
            bytes.clone(),
            requested_at,
            now,
        ) {
            Some(entry) => {
                let answer = self.answer(&entry, request, now, Outcome::Miss);
                self.store_entry(primary, request, entry).await;
                Ok((answer, Outcome::Miss))
            }
            None => Ok((Response::from_parts(parts, ResponseBody::full(bytes)), Outcome::Miss)),
        }
    }

    /// Checks that need no policy: the status, `Set-Cookie`, `Vary: *`,
    /// and secrets in `Vary`.
    fn may_store(&self, response: &http::response::Parts) -> bool {
        let status_ok = match &self.settings.statuses {
            Some(statuses) => statuses.contains(&response.status),
            None => true,
        };
        let varies: Vec<String> = vary_names(&response.headers);
        status_ok
            && (self.settings.force_ttl || !response.headers.contains_key(header::SET_COOKIE))
            && !varies.iter().any(|v| v == "*" || SECRET_HEADERS.contains(&v.as_str()))
    }

    /// The entry for an answer, if the policy lets it be stored.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
        status: StatusCode,
        headers: http::HeaderMap,
        body: Bytes,
        requested_at: SystemTime,
        now: SystemTime,
    ) -> Option<Entry> {
        // Kept for the entry's life: nothing of it may hold a read buffer.
        let headers = detached(&headers);
        let mut seen = http::response::Builder::new()
            .status(status)
            .body(())
            .ok()?
            .into_parts()
            .0;
        seen.headers = headers.clone();
        cap_age(&mut seen.headers);
        let directives = Directives::of(&headers, true);
        let explicit = directives.max_age || headers.contains_key(header::EXPIRES);
        if let Some(ttl) = self.settings.ttl {
            if self.settings.force_ttl {
                for name in [
                    header::CACHE_CONTROL,
                    header::EXPIRES,
                    header::PRAGMA,
                    header::SET_COOKIE,
                ] {
                    seen.headers.remove(name);
                }
            }
            if self.settings.force_ttl || !explicit {
                // `max-age` only: `s-maxage` would make an answer to a request
                // with `Authorization` storable (RFC 9111 section 3.5), and
                // only the upstream may say that.
                let value = format!("max-age={}", ttl.as_secs());
                if let Ok(value) = HeaderValue::from_str(&value) {
                    seen.headers.append(header::CACHE_CONTROL, value);
                }
            }
        }
        // Keyed by consumer, the cache is each consumer's own: `private`
        // answers may be kept, as a browser keeps them.
        let shared = !(self.settings.key.consumer && ctx.identity.is_some());
        let options = CacheOptions {
            shared,
            ..CacheOptions::default()
        };
        let mut policy_request = self.policy_request(request);
        policy_request.headers = detached(&policy_request.headers);
        policy_request.uri = detached_uri(&policy_request.uri);
        if self.settings.force_ttl {
            policy_request.headers.remove(header::AUTHORIZATION);
        } else if ctx.facts.sent_authorization {
            // Decided on the request as the client sent it: an authentication
            // plugin may have removed the credential since.
            policy_request
                .headers
                .insert(header::AUTHORIZATION, HeaderValue::from_static("[redacted]"));
        }
        let policy = CachePolicy::new_options(&policy_request, &seen, requested_at, options);
        if !policy.is_storable() || policy.time_to_live(now).is_zero() && !has_validators(&headers) {
            return None;
        }
        let (lifetime, born) = entry::lifetime_and_birth(&policy, now);
        Some(Entry {
            policy,
            status,
            url: key::url(request),
            tags: tags(&headers),
            stale_while_revalidate: directives
                .stale_while_revalidate
                .unwrap_or(self.settings.stale_while_revalidate),
            stale_if_error: directives.stale_if_error.unwrap_or(self.settings.stale_if_error),
            must_revalidate: directives.must_revalidate,
            lifetime,
            born,
            headers,
            body,
        })
    }

    async fn store_entry(&self, primary: &Key, request: &http::request::Parts, entry: Entry) {
        let names = vary_names(&entry.headers);
        if names.is_empty() {
            self.store.put(primary, Slot::Answer(Arc::new(entry))).await;
        } else {
            let variant = key::variant(primary, &names, &request.headers);
            self.store.put(primary, Slot::Varies(names)).await;
            self.store.put(&variant, Slot::Answer(Arc::new(entry))).await;
        }
    }
}
