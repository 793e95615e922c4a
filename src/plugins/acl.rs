//! `acl` and `scopes`: what an authenticated request may reach.
//! `acl: { allow: [groups], deny: [groups] }` checks the consumer's groups
//! (deny wins); `scopes: [orders:read]` requires every listed scope of the
//! token (JWT `scope`/`scp`, or introspection). Both answer 403.

use super::{Decision, Flow, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::consumers::Identity;
use crate::error::{ErrorKind, ProxyError};
use http::HeaderValue;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclConfig {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

pub struct Acl {
    allow: Vec<String>,
    deny: Vec<String>,
}

pub fn build_acl(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: AclConfig = setup.parse(value)?;
    if config.allow.is_empty() && config.deny.is_empty() {
        return Err(vec![setup.error("", "list groups to `allow`, to `deny`, or both")]);
    }
    Ok(Arc::new(Acl {
        allow: config.allow,
        deny: config.deny,
    }))
}

impl Acl {
    fn check(&self, identity: Option<&Identity>) -> Result<String, ProxyError> {
        let Some(identity) = identity else {
            return Err(forbidden("acl", "unauthenticated", "the request is not authenticated"));
        };
        if let Some(group) = identity.groups.iter().find(|g| self.deny.contains(g)) {
            return Err(forbidden(
                "acl",
                "denied_group",
                format!("consumer {:?} is in denied group {group:?}", &*identity.name),
            ));
        }
        if !self.allow.is_empty() && !identity.groups.iter().any(|g| self.allow.contains(g)) {
            return Err(forbidden(
                "acl",
                "not_allowed",
                format!("consumer {:?} is in none of the allowed groups", &*identity.name),
            ));
        }
        Ok(format!("consumer {:?} may pass", &*identity.name))
    }
}

fn forbidden(plugin: &'static str, reason: &'static str, detail: impl Into<String>) -> ProxyError {
    ProxyError::rejected(ErrorKind::Forbidden, plugin, reason, detail.into())
}

impl Plugin for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn phase(&self) -> Phase {
        Phase::Authorize
    }

    fn on_request<'a>(
        &'a self,
        _request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        let result = self.check(ctx.identity.as_ref()).map(|_| Flow::Continue);
        at_once(result)
    }

    fn explain(&self, _request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        match self.check(ctx.identity.as_ref()) {
            Ok(detail) => Decision::pass(detail),
            Err(error) => Decision::deny(http::StatusCode::FORBIDDEN, error.detail.clone()),
        }
    }
}

pub struct Scopes {
    required: Vec<String>,
    challenge: HeaderValue,
}

pub fn build_scopes(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let required: Vec<String> = setup.parse(value)?;
    if required.is_empty()
        || required
            .iter()
            .any(|s| s.is_empty() || s.contains(' ') || s.contains('"'))
    {
        return Err(vec![setup.error("", "list the scopes required, like [orders:read]")]);
    }
    let challenge = HeaderValue::from_str(&format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\"",
        required.join(" ")
    ))
    .map_err(|_| vec![setup.error("", "scopes must be visible ASCII")])?;
    Ok(Arc::new(Scopes { required, challenge }))
}

impl Scopes {
    fn missing(&self, identity: Option<&Identity>) -> Vec<&str> {
        self.required
            .iter()
            .filter(|scope| !identity.is_some_and(|i| i.scopes.contains(scope)))
            .map(String::as_str)
            .collect()
    }
}

impl Plugin for Scopes {
    fn name(&self) -> &'static str {
        "scopes"
    }

    fn phase(&self) -> Phase {
        Phase::Authorize
    }

    fn on_request<'a>(
        &'a self,
        _request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        let missing = self.missing(ctx.identity.as_ref());
        let result = if missing.is_empty() {
            Ok(Flow::Continue)
        } else {
            // RFC 6750 3.1: 403 with the scope the token lacks.
            let mut error = forbidden(
                "scopes",
                "insufficient_scope",
                format!("the token lacks scope {}", missing.join(", ")),
            );
            error.challenge = Some(self.challenge.clone());
            Err(error)
        };
        at_once(result)
    }

    fn explain(&self, _request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let missing = self.missing(ctx.identity.as_ref());
        if missing.is_empty() {
            Decision::pass(format!("has {}", self.required.join(", ")))
        } else {
            Decision::deny(http::StatusCode::FORBIDDEN, format!("lacks {}", missing.join(", ")))
        }
    }
}
