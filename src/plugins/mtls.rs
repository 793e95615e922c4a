//! `mtls`: who the request is, by the client certificate the listener
//! verified (`listeners[].tls.client_auth`): the consumer whose
//! `credentials.certificates` lists its subject or one of its subject
//! alternative names. Beside the other authentication methods: a request
//! without a certificate is left to them.

use super::{Auth, AuthFuture, Phase, Plugin, RequestContext, Setup, at_once};
use crate::consumers::{Consumers, Identity};
use crate::error::{ErrorKind, ProxyError};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {}

pub struct Mtls {
    consumers: Arc<Consumers>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let _: Config = setup.parse(value)?;
    Ok(Arc::new(Mtls {
        consumers: setup.context.consumers.clone(),
    }))
}

impl Plugin for Mtls {
    fn name(&self) -> &'static str {
        "mtls"
    }

    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    fn authenticate<'a>(
        &'a self,
        _request: &'a mut http::request::Parts,
        ctx: &'a RequestContext<'_>,
    ) -> AuthFuture<'a> {
        let outcome = match ctx.client_certificate {
            None => Auth::NoCredentials,
            Some(certificate) => match self.consumers.by_certificate(&certificate.subject, &certificate.names) {
                Some(consumer) => Auth::Authenticated(Identity::of(consumer, "mtls")),
                None => Auth::Failed(ProxyError::rejected(
                    ErrorKind::Unauthorized,
                    "mtls",
                    "unknown_certificate",
                    "the client certificate belongs to no consumer",
                )),
            },
        };
        at_once(outcome)
    }

    fn explain(&self, _request: &http::request::Parts, ctx: &RequestContext<'_>) -> super::Decision {
        match ctx.client_certificate {
            None => super::Decision::pass("no client certificate: left to the other methods"),
            Some(certificate) => match self.consumers.by_certificate(&certificate.subject, &certificate.names) {
                Some(consumer) => super::Decision::pass(format!(
                    "certificate {} is consumer {}",
                    certificate.subject, consumer.name
                )),
                None => super::Decision::deny(
                    http::StatusCode::UNAUTHORIZED,
                    "the client certificate belongs to no consumer",
                ),
            },
        }
    }
}
